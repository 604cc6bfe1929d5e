"""The event loop a task runs its waits on (the sync create's wait, the cancel fan-out): an
exception that a signal handler raises inside one of the loop's callbacks, as Airflow's
execution_timeout (SIGALRM) or its SIGTERM handling can, ends the wait with that exception.
asyncio only logs an exception raised in a callback: the wait then hung for ever (seen once
in a full run, on an execution_timeout test, until pytest's own limit killed it)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from airflow.sdk.exceptions import AirflowTaskTimeout

from airflow_portkey._tasks import _in_task

from .support import MakeHook


def test_a_timeout_raised_inside_a_loop_callback_ends_the_wait_with_it(
    make_hook: MakeHook,
) -> None:
    hook = make_hook()

    def timeout_fires() -> None:  # what SIGALRM's handler does, landing in a callback
        raise AirflowTaskTimeout("Timeout, PID: 1")

    async def wait_for_ever() -> None:
        asyncio.get_running_loop().call_later(0.1, timeout_fires)
        await asyncio.sleep(3600)

    ended: list[BaseException] = []

    def task() -> None:
        try:
            _in_task(hook, wait_for_ever)
        except BaseException as error:
            ended.append(error)

    runner = threading.Thread(target=task, daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "the wait went on after the timeout"
    assert [type(error) for error in ended] == [AirflowTaskTimeout]


def test_an_ordinary_cancel_of_the_wait_is_still_a_cancel(make_hook: MakeHook) -> None:
    """Only a callback's interrupting exception becomes the wait's error: a cancel stays one."""
    hook = make_hook()

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        _in_task(hook, cancelled)
