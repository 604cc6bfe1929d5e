"""PortkeyHook: Portkey credentials from an Airflow connection, and two transports.

The sync transport uses requests, the async one aiohttp (one session per event loop, shared,
see :mod:`airflow_portkey._transport.aio`); both only drive the plans of
:mod:`airflow_portkey._core.plans`, which own every rule about requests, answers and
retries. No HTTP library is imported until a request is made, so a DAG file that imports this
provider does not pay for them at parse time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar

from airflow.sdk import BaseHook

from airflow_portkey._core import answers, endpoints, ids, ownership, plans
from airflow_portkey._core.batch_input import upload_from
from airflow_portkey._core.defaults import CONN_TYPE, DEFAULT_CONN_ID
from airflow_portkey._core.messages import (
    ApiRequest,
    Note,
    Outcome,
    Plan,
    Reply,
    Upload,
    Wait,
)
from airflow_portkey._core.plans import CallContext
from airflow_portkey._core.retry import RetryPolicy
from airflow_portkey._core.settings import PortkeySettings
from airflow_portkey._core.trace import trace_from_context, trace_headers
from airflow_portkey._core.waits import WaitOutcome, WaitSpec, wait_for_batch
from airflow_portkey._transport.common import check_ca
from airflow_portkey.batches import Batch
from airflow_portkey.exceptions import PortkeyConfigError, PortkeyError
from airflow_portkey.hooks import _pacing
from airflow_portkey.hooks._connections import (
    loop_logger,
    mask_sync,
    redactable_secrets,
    settings_of,
    shared_connection,
)

if TYPE_CHECKING:
    import requests
    from airflow.sdk import Connection

    from airflow_portkey._transport.aio import AsyncTransport
    from airflow_portkey._transport.sync import SyncTransport

T = TypeVar("T")
# acancel_batches logs each batch up to this many, then one summary line instead.
_CANCELS_LOGGED_EACH = 20


class PortkeyHook(BaseHook):
    """Talk to Portkey's batch API with the credentials of an Airflow connection.

    :param portkey_conn_id: the Airflow connection (type ``portkey``) holding the base URL,
        API key and routing (provider, virtual key or config).
    :param trace_id: value for ``x-portkey-trace-id``; by default derived from the running
        task (dag, run, task, try), and absent outside a task.
    :param metadata: extra ``x-portkey-metadata`` entries, merged over the task's own.
    :param retry_policy: overrides the connection's ``max_retries`` and ``retry_budget``.
    :param max_connections: requests this hook has in flight at once at most on the async
        path (its shared session keeps up to 100 connections for every hook on the loop).
    :param keepalive_expiry: seconds the async path keeps an idle connection open.
    """

    conn_name_attr = "portkey_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Portkey"
    # The credential extras (besides the password). Airflow redacts extras by name only, so
    # each name contains one of its sensitive words; the UI declares them in provider info.
    secret_fields: ClassVar[tuple[str, ...]] = (
        "secret_virtual_key",
        "secret_config",
        "provider_api_key",
        "secret_headers",
    )

    def __init__(
        self,
        portkey_conn_id: str = DEFAULT_CONN_ID,
        *,
        trace_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_policy: RetryPolicy | None = None,
        max_connections: int = 10,
        keepalive_expiry: float = 5.0,
    ) -> None:
        super().__init__()
        self.portkey_conn_id = portkey_conn_id
        self._trace_id = trace_id
        self._metadata = dict(metadata or {})
        self._retry_policy = retry_policy
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._settings: PortkeySettings | None = None
        self._call: CallContext | None = None
        self._headers: dict[str, str] = {}
        self._trace_metadata: dict[str, str] = {}
        self._sync: SyncTransport | None = None
        self._async: AsyncTransport | None = None
        self._pace: tuple[asyncio.AbstractEventLoop, _pacing.LoopPace] | None = None

    # -- settings ---------------------------------------------------------------------------

    @property
    def settings(self) -> PortkeySettings:
        """The checked connection; read once, on first use."""
        if self._settings is None:
            settings = self._accept(self.get_connection(self.portkey_conn_id))
            mask_sync(settings.secrets)
        assert self._settings is not None
        return self._settings

    @property
    def loaded_secrets(self) -> tuple[str, ...]:
        """The connection's secrets redacted from messages once it is read; none before."""
        return self._call.secrets if self._call is not None else ()

    async def aget_settings(self) -> PortkeySettings:
        """As :attr:`settings`, without blocking the event loop (for triggers)."""
        if self._settings is None:
            self._accept(await shared_connection(self.portkey_conn_id))
        assert self._settings is not None
        return self._settings

    def _accept(self, connection: Connection) -> PortkeySettings:
        conn_type = getattr(connection, "conn_type", None)
        if conn_type and conn_type != CONN_TYPE:
            raise PortkeyConfigError(
                f"Airflow connection {self.portkey_conn_id!r} is of type {conn_type!r}; "
                f"PortkeyHook needs a connection of type {CONN_TYPE!r}"
            )
        settings = settings_of(self.portkey_conn_id, connection)
        check_ca(settings)
        if settings.unknown_extras:
            self.log.warning(
                "Portkey connection %r has extras this provider does not read: %s",
                self.portkey_conn_id,
                ", ".join(settings.unknown_extras),
            )
        hint = settings.migration_hint()
        if hint:
            self.log.warning("%s", hint)
        self._settings = settings
        self._call = CallContext(
            conn_id=self.portkey_conn_id,
            secrets=redactable_secrets(settings),
            policy=self._retry_policy
            or RetryPolicy(max_retries=settings.max_retries, budget=settings.retry_budget),
        )
        # The connection's own "headers" extra comes last: it may override the trace headers.
        self._headers = self._trace_headers(settings) | settings.headers()
        return settings

    def _trace_headers(self, settings: PortkeySettings) -> dict[str, str]:
        trace_id, metadata = self._trace_id, dict[str, str]()
        if trace_id is None:
            trace_id, metadata = trace_from_context(_current_context())
        if trace_id and not self._trace_id:
            self.log.info(
                "Portkey requests carry trace id %s (filter Portkey's logs by it)", trace_id
            )
        self._trace_metadata = {**settings.metadata, **metadata, **self._metadata}
        return trace_headers(trace_id, self._trace_metadata)

    @property
    def trace_id(self) -> str | None:
        """The trace id this hook sends, once its settings are loaded."""
        return self._headers.get("x-portkey-trace-id")

    @property
    def trace_metadata(self) -> dict[str, str]:
        """The ``x-portkey-metadata`` entries this hook sends, once its settings are loaded."""
        return dict(self._trace_metadata)

    @property
    def call_context(self) -> CallContext:
        self.settings  # noqa: B018 - loads the connection on first use
        assert self._call is not None
        return self._call

    # -- sync transport (requests) ------------------------------------------------------------

    def get_conn(self) -> requests.Session:
        """The requests session every sync call of this hook uses, with the connection's
        headers."""
        return self._sync_transport().session

    def _sync_transport(self) -> SyncTransport:
        if self._sync is None:
            from airflow_portkey._transport.sync import SyncTransport

            self._sync = SyncTransport(self.settings, self._headers)
        return self._sync

    def _next(self, plan: Plan[T], reply: Reply | None) -> ApiRequest | Wait:
        """Feed ``reply`` to the plan; return its next request or wait (notes logged).

        Raises StopIteration, with the plan's result as its value, when the plan is done.
        """
        action = plan.send(reply)
        return action if type(action) is ApiRequest else self._settle(plan, action)

    def _settle(self, plan: Plan[T], action: ApiRequest | Wait | Note) -> ApiRequest | Wait:
        """Log ``action`` if it is a note (and each note after it) or a wait's reason; return
        the plan's next request or wait."""
        while isinstance(action, Note):
            self.log.log(action.level, "%s", action.message)
            action = plan.send(None)
        if isinstance(action, Wait) and action.reason:
            self.log.warning("%s", action.reason)
        return action

    def run(
        self,
        plan: Plan[T],
        sink: IO[bytes] | None = None,
        *,
        transport: SyncTransport | None = None,
    ) -> T:
        """Drive a protocol plan over requests (the hook's session unless given another),
        sleeping between retries.

        Requests keep to the connection's rate budget in this process (see
        :mod:`airflow_portkey.hooks._pacing`).
        """
        transport = transport or self._sync_transport()
        pace = _pacing.process_pace(self.settings) if _pacing.enabled else None
        hold_cap = self.call_context.policy.retry_after_cap
        reply: Reply | None = None
        while True:
            try:
                action = self._next(plan, reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(action, Wait):
                time.sleep(action.seconds)
                reply = None
            elif pace is None:
                reply = transport.send(action, sink)
            else:
                send = functools.partial(transport.send, action, sink)
                reply = pace.send(action, send, hold_cap)

    # -- async transport (aiohttp) ------------------------------------------------------------

    async def arun(self, plan: Plan[T]) -> T:
        """Drive a protocol plan without blocking the event loop.

        Requests keep to the connection's rate budget on this loop, and waits on one batch
        share their reads (see :mod:`airflow_portkey.hooks._pacing`). A wait handed another
        wait's answer sleeps that answer's age less before its next poll, so waits on one batch
        fall into step and share every read after the first.
        """
        loop = asyncio.get_running_loop()
        client = self._async or await self._atransport()
        pace = self._loop_pace(loop) if _pacing.enabled else None
        assert self._call is not None, "the transport loads the settings first"
        hold_cap = self._call.policy.retry_after_cap
        seen: dict[str, float] | None = None  # made for the first shared read
        reply: Reply | None = None
        send: Callable[[], Awaitable[Outcome]] | None = None
        action: ApiRequest | Wait | Note | None
        age = 0.0
        while True:
            try:
                action = plan.send(reply)  # self._next, inline: once per request
                if type(action) is not ApiRequest:
                    action = self._settle(plan, action)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            # Nothing of the last answer is kept across a sleep: thousands of waits each
            # holding theirs would only give the garbage collector more to walk.
            reply = None
            if isinstance(action, Wait):
                delay, age, action = action.seconds - age, 0.0, None
                await asyncio.sleep(max(0.0, delay))
            elif pace is None or pace.goes_at_once(action):
                reply = await client.send(_async_request(action))
                if pace is not None:
                    pace.observe(reply, hold_cap)
            else:
                send = functools.partial(client.send, _async_request(action))
                seen = {} if seen is None else seen
                reply, age = await pace.send(action, send, seen, hold_cap)
                send = None

    def _loop_pace(self, loop: asyncio.AbstractEventLoop) -> _pacing.LoopPace:
        """The running loop's budget and shared reads for this hook's connection."""
        cached = self._pace
        if cached is None or cached[0] is not loop:
            assert self._settings is not None, "the transport loads the settings first"
            cached = self._pace = (loop, _pacing.loop_pace(self._settings))
        pace = cached[1]
        rate = self._settings.max_requests_per_second  # type: ignore[union-attr]
        if pace.budget.max_per_second != rate:
            pace.budget.set_rate(rate)  # another hook on this connection asked for another
        return pace

    async def _atransport(self) -> AsyncTransport:
        if self._async is None:
            from airflow_portkey._transport.aio import AsyncTransport

            if self.__dict__.get("_log") is None:
                self._log = loop_logger(self)

            settings = await self.aget_settings()
            self._async = AsyncTransport(
                settings,
                self._headers,
                max_connections=self._max_connections,
                keepalive_expiry=self._keepalive_expiry,
            )
        return self._async

    async def aclose(self) -> None:
        """Give back this hook's share of the loop's session (others keep using it)."""
        if self._async is not None:
            await self._async.aclose()

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    # -- batch API, sync ----------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> Batch:
        """Read a batch (``GET /batches/{batch_id}``)."""
        return self.run(plans.get_batch(self.call_context, batch_id))

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel a batch and return it as it is afterwards.

        Idempotent: a batch already cancelling or finished is returned as it is, not an
        error. Usually the result is ``cancelling``; it becomes ``cancelled`` later.
        """
        ids.check_batch_id(batch_id)
        batch = self.run(plans.cancel_batch(self.call_context, batch_id))
        self.log.info("%s", batch.describe_cancel())
        return batch

    def list_batches(self, *, page_size: int = 100) -> Iterator[Batch]:
        """Every batch the connection can see, newest first, fetching page after page."""
        after: str | None = None
        visited: set[str] = set()
        while True:
            page = self.run(plans.list_page(self.call_context, page_size, after, visited))
            yield from page.batches
            if page.next_after is None:
                return
            after = page.next_after
            visited.add(after)

    def find_batches(
        self,
        select: Callable[[Batch], bool],
        *,
        not_before: float,
        max_pages: int = ownership.DEFAULT_MAX_PAGES,
    ) -> list[Batch]:
        """The recent batches ``select`` accepts, newest first: created at or after
        ``not_before`` (Unix seconds), among at most ``max_pages`` pages of 100."""
        return self.run(
            ownership.find_stamped(
                self.call_context, select, not_before=not_before, max_pages=max_pages
            )
        )

    def upload_file(
        self,
        content: bytes | str | os.PathLike[str] | Sequence[Mapping[str, Any]],
        *,
        purpose: str = "batch",
        filename: str | None = None,
    ) -> dict[str, Any]:
        """Upload batch input and return Portkey's file object.

        ``content`` is JSONL bytes, a local path, an ObjectStoragePath, or a list of request
        dicts (checked for custom_id, method, url and body before anything is sent).
        """
        upload = Upload(content, "batch_input.jsonl") if isinstance(content, bytes) else None
        upload = upload or upload_from(content)
        if filename:
            upload = Upload(upload.content, filename, upload.content_type)
        request = endpoints.upload_file_request(upload, purpose)
        body = self.run(plans.send(self.call_context, request))
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            raise PortkeyError("Portkey's answer to the file upload has no file id")
        return body

    def create_batch(
        self,
        input_file_id: str,
        *,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
    ) -> Batch:
        """Create a batch from an uploaded input file (``POST /batches``)."""
        request = endpoints.create_batch_request(
            input_file_id, endpoint, completion_window, metadata
        )
        context = self.call_context
        body = self.run(plans.send(context, request))
        return answers.read_batch(body, request)  # plans.send redacted it

    def download_batch_output(self, batch_id: str, destination: str | os.PathLike[str]) -> int:
        """Stream a finished batch's output JSONL to ``destination``; return its size in bytes.

        ``destination`` is a local path or an ObjectStoragePath. The output file is read
        through ``/files/{output_file_id}/content`` when the batch names one (OpenAI-style
        providers, through hosted Portkey and the gateway alike), else through Portkey's
        ``/batches/{batch_id}/output``.
        """
        batch = self.get_batch(batch_id)
        if batch.output_file_id:
            request = endpoints.file_content_request(batch.output_file_id)
        else:
            request = endpoints.batch_output_request(batch_id)
        return self._download(request, destination)

    def download_file(self, file_id: str, destination: str | os.PathLike[str]) -> int:
        """Stream a file's content (an output or error file) to ``destination``."""
        return self._download(endpoints.file_content_request(file_id), destination)

    def _download(self, request: ApiRequest, destination: str | os.PathLike[str]) -> int:
        # Download to a local temporary file first: a retry can then start the file over,
        # and a failed download never leaves half a file at the destination.
        with tempfile.TemporaryFile() as part:
            self.run(plans.send(self.call_context, request), sink=part)
            size = part.tell()
            part.seek(0)
            if hasattr(destination, "protocol") and hasattr(destination, "open"):
                with destination.open("wb") as target:
                    shutil.copyfileobj(part, target, 1 << 20)
                return size
            path = Path(destination)
            path.parent.mkdir(parents=True, exist_ok=True)
            staged = path.with_name(f".{path.name}.part")
            with staged.open("wb") as target:
                shutil.copyfileobj(part, target, 1 << 20)
            staged.replace(path)
        return size

    def test_connection(self) -> tuple[bool, str]:
        """One quick request (list one batch) to check the URL, the keys and the routing.

        One attempt with short timeouts, so that Airflow's Test button answers within
        seconds; the message says which field to fix, naming the connection being tested
        (never the throw-away id Airflow gives the copy it tests).
        """
        from airflow_portkey._core.connection_check import (
            CHECK_CONNECT_TIMEOUT,
            CHECK_DEADLINE,
            CHECK_READ_TIMEOUT,
            explain_deadline,
            explain_failure,
        )
        from airflow_portkey._transport.sync import SyncTransport

        name = _connection_under_test(self.portkey_conn_id)
        try:
            settings = settings_of(name, self.get_connection(self.portkey_conn_id))
            check_ca(settings)
        except PortkeyConfigError as error:
            return False, str(error)
        except Exception as error:
            return False, f"Portkey connection {name!r} could not be read: {error}"
        mask_sync(settings.secrets)
        quick = dataclasses.replace(
            settings,
            connect_timeout=min(settings.connect_timeout, CHECK_CONNECT_TIMEOUT),
            read_timeout=min(settings.read_timeout, CHECK_READ_TIMEOUT),
        )
        ctx = CallContext(
            conn_id=name,
            secrets=redactable_secrets(settings),
            policy=RetryPolicy(max_retries=0, budget=0),
        )
        outcome: list[tuple[bool, str]] = []

        def check() -> None:
            transport = SyncTransport(quick, settings.headers())
            try:
                self.run(plans.list_page(ctx, 1, None), transport=transport)
            except PortkeyError as error:
                outcome.append((False, explain_failure(error, quick)))
            except Exception as error:
                outcome.append((False, f"Portkey connection {name!r}: {error}"))
            else:
                routing = _routing(settings)
                outcome.append((True, f"Connected to Portkey at {settings.base_url} ({routing})"))
            finally:
                transport.close()

        # requests bounds each read, not the whole answer (nor the name lookup): a server that
        # trickles bytes could hold the button for minutes. The check runs on a daemon thread,
        # and the button gets its answer at the deadline whatever the thread is still doing.
        worker = threading.Thread(target=check, name="portkey-connection-test", daemon=True)
        worker.start()
        worker.join(CHECK_DEADLINE)
        return outcome[0] if outcome else (False, explain_deadline(quick))

    # -- batch API, async ---------------------------------------------------------------------

    async def acall_context(self) -> CallContext:
        """As :attr:`call_context`, loading the connection without blocking the event loop."""
        await self.aget_settings()
        assert self._call is not None
        return self._call

    async def aget_batch(self, batch_id: str) -> Batch:
        ctx = self._call or await self.acall_context()
        return await self.arun(plans.get_batch(ctx, batch_id))

    async def acancel_batch(self, batch_id: str) -> Batch:
        """As :meth:`cancel_batch`, on the event loop."""
        (result,) = await self.acancel_batches([batch_id])
        if isinstance(result, BaseException):
            raise result
        return result

    async def acancel_batches(self, batch_ids: Sequence[str]) -> list[Batch | BaseException]:
        """Cancel many batches at once, at most ``max_connections`` in flight.

        Every id is attempted; an id that fails gives its exception in place of the batch.
        A few batches are logged one line each; more, in one line that counts their statuses.
        """
        for batch_id in batch_ids:
            ids.check_batch_id(batch_id)
        ctx = await self.acall_context()
        results: dict[int, Batch | BaseException] = {}
        pending = iter(enumerate(batch_ids))

        async def lane() -> None:
            # A lane per connection takes the next id: a task per id waiting on a semaphore
            # costs more CPU than the request itself once there are thousands of ids.
            for index, batch_id in pending:
                try:
                    results[index] = await self.arun(plans.cancel_batch(ctx, batch_id))
                except Exception as error:
                    results[index] = error

        lanes = min(self._max_connections, len(batch_ids))
        await asyncio.gather(*(lane() for _ in range(lanes)))
        ordered = [results[index] for index in range(len(batch_ids))]
        self._log_cancels(ordered)
        return ordered

    def _log_cancels(self, results: Sequence[Batch | BaseException]) -> None:
        batches = [r for r in results if not isinstance(r, BaseException)]
        if len(results) <= _CANCELS_LOGGED_EACH:
            for batch in batches:
                self.log.info("%s", batch.describe_cancel())
            return
        # One log record costs about as much CPU as one cancel request: not one per batch.
        statuses = Counter(batch.status._value_ for batch in batches)  # .value, cheaper
        self.log.info(
            "Cancel requested for %d batches: %s%s",
            len(results),
            ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())),
            f"; {len(results) - len(batches)} failed" if len(batches) < len(results) else "",
        )

    async def await_batches(self, specs: Sequence[WaitSpec]) -> list[WaitOutcome]:
        """Wait for several batches at once, each as its spec says."""
        ctx = await self.acall_context()
        if len(specs) == 1:  # most waits: no task, context and gathering future of its own
            return [await self.arun(wait_for_batch(ctx, specs[0]))]
        return await asyncio.gather(*(self.arun(wait_for_batch(ctx, spec)) for spec in specs))


def _async_request(request: ApiRequest) -> ApiRequest:
    """``request``, refused when only the sync path can send it (a stream or an upload)."""
    if request.stream or request.upload is not None or request.form is not None:
        raise PortkeyError(f"{request.describe()} is only available on the sync path")
    return request


def _routing(settings: PortkeySettings) -> str:
    if settings.config:
        return "routing by config"
    if settings.virtual_key:
        return "routing by virtual key"
    return f"routing to provider {settings.provider}"


def _connection_under_test(conn_id: str) -> str:
    """The id of the connection a user is testing.

    Airflow's Test button (``POST /api/v2/connections/test``) tests a copy of the form under
    a random throw-away id; naming that id in a message would only confuse. The id the user
    sees is in the request body of the API route that called us. Elsewhere (the CLI's
    ``airflow connections test``, a worker, code) the hook's own id is the user's.
    """
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("airflow.api_fastapi."):
            body = frame.f_locals.get("test_body")
            connection_id = getattr(body, "connection_id", None)
            if isinstance(connection_id, str) and connection_id:
                return connection_id
        frame = frame.f_back  # type: ignore[assignment]
    return conn_id


def _current_context() -> Mapping[str, Any] | None:
    try:
        from airflow.sdk import get_current_context

        context: Mapping[str, Any] = get_current_context()
        return context
    except Exception:
        return None
