"""Connection lookups for the hook: checked settings, secrets masked once, shared per loop."""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_portkey._core.answers import redactable
from airflow_portkey._core.errors import PortkeyConfigError
from airflow_portkey._core.settings import PortkeySettings, settings_from_connection

if TYPE_CHECKING:
    from airflow.sdk import Connection


@functools.cache
def min_masked_length() -> int:
    """Airflow's ``[logging] min_length_masked_secret``, read as Airflow reads it when it sets
    up its masker (once per process, 5 when unset): shorter secrets are not redacted."""
    from airflow.sdk.configuration import conf

    return int(conf.getint("logging", "min_length_masked_secret", fallback=5))


def redactable_secrets(settings: PortkeySettings) -> tuple[str, ...]:
    """The connection's secrets that messages and answers are redacted of."""
    return redactable(settings.secrets, min_masked_length())


def mask_sync(secrets: tuple[str, ...]) -> None:
    from airflow.sdk.log import mask_secret

    for secret in secrets:
        mask_secret(secret)


# A triggerer may start thousands of triggers on one connection at once: they share one
# lookup (and one masking of its secrets) per event loop, renewed after this many seconds.
_CONNECTION_TTL = 60.0
_connections: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Future[Connection]]]
] = weakref.WeakKeyDictionary()


async def shared_connection(conn_id: str) -> Connection:
    per_loop = _connections.setdefault(asyncio.get_running_loop(), {})
    entry = per_loop.get(conn_id)
    if entry is None or entry[0] < time.monotonic():
        entry = (time.monotonic() + _CONNECTION_TTL, asyncio.ensure_future(_fetch(conn_id)))
        per_loop[conn_id] = entry
    try:
        return await asyncio.shield(entry[1])
    except Exception:
        if per_loop.get(conn_id) is entry:
            del per_loop[conn_id]  # a failed lookup is not remembered
        raise


async def _fetch(conn_id: str) -> Connection:
    from airflow.sdk.log import amask_secret

    connection = await _lookup(conn_id)
    try:
        secrets = settings_of(conn_id, connection).secrets
    except PortkeyConfigError:
        secrets = ()  # the hook refuses this connection itself, naming the field
    for secret in secrets:
        await amask_secret(secret)
    return connection


async def _lookup(conn_id: str) -> Connection:
    """The async lookup, or the sync one on a worker thread where the async one misses.

    Airflow 3.3.2's ``BaseHook.aget_connection`` does not find a connection stored in the
    metadata database when the trigger runs inline under ``airflow dags test``; the sync lookup
    does. It runs off the event loop so other triggers keep going meanwhile.
    """
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        connection: Connection = await BaseHook.aget_connection(conn_id)
    except AirflowNotFoundException:
        connection = await asyncio.to_thread(BaseHook.get_connection, conn_id)
    return connection


def settings_of(conn_id: str, connection: Connection) -> PortkeySettings:
    return settings_from_connection(
        conn_id,
        host=connection.host,
        password=connection.password,
        extra=connection.extra_dejson,
        port=connection.port,
        schema=connection.schema,
    )


# One logger per hook class and logger name on a loop: a triggerer's thousands of hooks would
# otherwise each build and keep their own (a proxy, a bound logger, its closures). Airflow
# routes a trigger's lines to its task's log by context, not by logger object.
_loggers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[type, str | None], Any]
] = weakref.WeakKeyDictionary()


def loop_logger(hook: BaseHook) -> Any:
    """The logger of ``hook``'s kind shared on the running loop (the first such hook's own)."""
    per_loop = _loggers.setdefault(asyncio.get_running_loop(), {})
    key = (type(hook), getattr(hook, "_logger_name", None))
    logger = per_loop.get(key)
    if logger is None:
        logger = per_loop[key] = hook.log
    return logger
