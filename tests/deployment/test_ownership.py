"""Tier 4, spend safety: the provider owns what it starts, inside Airflow's own processes.

Paths (3), (4), (6), (8) and (9) of docs/spend-safety.md: a deferred create task marked failed,
a running one marked failed or sent SIGTERM, the DAG run marked failed through the REST API, a
triggerer restarted mid-wait, and retries (after the worker died, and after the create's answer
was lost). Each prints an ``OWNERSHIP`` line with what was observed: the time from the bad end
(the REST call, the signal) to the cancel reaching the emulator, which docs/spend-safety.md
quotes. Both clocks are the machine's monotonic clock (the emulator records ``received_at``
with it), so they compare across processes.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deployment.harness import (
    Deployment,
    belongs_to_run,
    by_task,
    http_json,
    wait_for,
)

SYNC_DAG = "portkey_own_sync"
DEFERRED_DAG = "portkey_own_deferred"
BOTH_DAG = "portkey_own_both"
TIMEOUT_DAG = "portkey_own_deferred_timeout"


def report(scenario: str, **values: Any) -> None:
    shown = " ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"\nOWNERSHIP {scenario}: {shown}")


@pytest.fixture(scope="module")
def d(deployment: Deployment) -> Iterator[Deployment]:
    """The shared deployment, with the DAGs of this module parsed and batches that the tasks
    create kept in_progress until a test says otherwise."""
    deployment.airflow.wait_ready([SYNC_DAG, DEFERRED_DAG, BOTH_DAG, TIMEOUT_DAG])
    before = control(deployment, "durations", {"in_progress": 3600})
    yield deployment
    control(deployment, "durations", before)


def control(d: Deployment, path: str, body: Any) -> Any:
    return http_json("POST", f"{d.emulator.root_url}/_emulator/{path}", body)


def trigger(d: Deployment, dag_id: str, name: str) -> str:
    run_id = f"own-{name}-{secrets.token_hex(3)}"
    return d.airflow.trigger(dag_id, {}, run_id=run_id)


def batch_of(d: Deployment, run_id: str, task_id: str, *, timeout: float = 180) -> str:
    """The batch a task created, from the trace of the first request about it (its first
    poll): every request a task sends names the dag, run, task and try."""
    needle = f"/{run_id}/{task_id}/"

    def probe() -> str | None:
        d.airflow.check_alive()
        for r in d.emulator.requests("batches.get"):
            if needle in (r["headers"].get("x-portkey-trace-id") or ""):
                return str(r["batch_id"])
        return None

    return wait_for(
        f"{task_id} of {run_id} to poll its batch",
        probe,
        timeout=timeout,
        interval=0.5,
        diagnose=d.airflow.diagnose,
    )


def requests_about(d: Deployment, batch_id: str, route: str) -> list[dict[str, Any]]:
    return d.emulator.requests(route, [batch_id])


def first_cancel_at(d: Deployment, batch_id: str, *, timeout: float = 90) -> float:
    sent = wait_for(
        f"a cancel of {batch_id}",
        lambda: requests_about(d, batch_id, "batches.cancel"),
        timeout=timeout,
        interval=0.25,
        diagnose=d.airflow.diagnose,
    )
    return float(sent[0]["received_at"])


def ti(d: Deployment, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    (one,) = by_task(d.airflow.task_instances(dag_id, run_id), task_id)
    return one


def wait_state(d: Deployment, dag_id: str, run_id: str, task_id: str, *states: str) -> dict:
    return wait_for(
        f"{dag_id}.{task_id} in {run_id} to be {'/'.join(states)}",
        lambda: (t := ti(d, dag_id, run_id, task_id))["state"] in states and t,
        timeout=180,
        interval=0.5,
        diagnose=d.airflow.diagnose,
    )


def running_pid(d: Deployment, dag_id: str, run_id: str, task_id: str) -> int:
    t = wait_for(
        f"{task_id} to run with a pid",
        lambda: (t := ti(d, dag_id, run_id, task_id))["state"] == "running" and t["pid"] and t,
        timeout=180,
        interval=0.5,
        diagnose=d.airflow.diagnose,
    )
    pid = int(t["pid"])
    assert belongs_to_run(pid, d.root), f"pid {pid} of the task instance is not of this run"
    return pid


def settled(d: Deployment, dag_id: str, run_id: str, task_id: str) -> None:
    """Let the scheduler see the deferring workload exit before the trigger may fire: Airflow
    3.3.2 fails a task whose trigger fires within seconds of deferring (apache/airflow#72716)."""
    wait_for(
        "the scheduler to see the deferring workload exit",
        lambda: d.airflow.executor_events(dag_id, run_id, task_id) >= 1,
        timeout=120,
        interval=1,
        diagnose=d.airflow.diagnose,
    )


def exited(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


# -- (3) a deferred create task marked failed: the trigger's on_kill cancels -------------------


def test_deferred_create_task_marked_failed_cancels_its_batch(d: Deployment) -> None:
    run_id = trigger(d, DEFERRED_DAG, "3")
    batch_id = batch_of(d, run_id, "create")
    wait_state(d, DEFERRED_DAG, run_id, "create", "deferred")
    assert requests_about(d, batch_id, "batches.cancel") == []

    t_mark = time.monotonic()
    d.airflow.mark(DEFERRED_DAG, run_id, "create", "failed")
    t_cancel = first_cancel_at(d, batch_id)
    assert d.airflow.wait_run_state(DEFERRED_DAG, run_id, timeout=120) == "failed"
    time.sleep(2)  # a second cancel, if one were coming, has had time to arrive
    assert len(requests_about(d, batch_id, "batches.cancel")) == 1
    assert d.emulator.batch(batch_id)["status"] in ("cancelling", "cancelled")
    assert ti(d, DEFERRED_DAG, run_id, "create")["try_number"] == 1
    report("3-deferred-marked-failed", mark_to_cancel_s=t_cancel - t_mark, cancels=1)


# -- (4) a create task waiting in a worker, marked failed or sent SIGTERM ----------------------


@pytest.mark.parametrize("how", ["marked-failed", "sigterm"])
def test_running_create_task_killed_cancels_and_stops_at_once(d: Deployment, how: str) -> None:
    run_id = trigger(d, SYNC_DAG, f"4{how[0]}")
    batch_id = batch_of(d, run_id, "create")
    pid = running_pid(d, SYNC_DAG, run_id, "create")

    t_kill = time.monotonic()
    if how == "sigterm":
        os.kill(pid, signal.SIGTERM)
    else:
        d.airflow.mark(SYNC_DAG, run_id, "create", "failed")
    t_cancel = first_cancel_at(d, batch_id)
    wait_for("the task process to exit", lambda: exited(pid), timeout=60, interval=0.1)
    t_exit = time.monotonic()
    polls_at_exit = len(requests_about(d, batch_id, "batches.get"))
    assert d.airflow.wait_run_state(SYNC_DAG, run_id, timeout=120) == "failed"
    time.sleep(2)
    assert len(requests_about(d, batch_id, "batches.get")) == polls_at_exit, "still polled"
    assert len(requests_about(d, batch_id, "batches.cancel")) == 1
    t = ti(d, SYNC_DAG, run_id, "create")
    # Ended as terminated: failed at once, no retry, although the task has retries=1.
    assert (t["state"], t["try_number"]) == ("failed", 1), t
    assert d.emulator.batch(batch_id)["status"] in ("cancelling", "cancelled")
    report(
        f"4-running-{how}",
        kill_to_cancel_s=t_cancel - t_kill,
        kill_to_process_exit_s=t_exit - t_kill,
        cancels=1,
    )


# -- (5) execution_timeout while deferred: the trigger's deadline stops at it, and cancels ----


def test_execution_timeout_while_deferred_cancels_the_batch(d: Deployment) -> None:
    run_id = trigger(d, TIMEOUT_DAG, "5")
    batch_id = batch_of(d, run_id, "create")
    wait_state(d, TIMEOUT_DAG, run_id, "create", "deferred")
    t_deferred = time.monotonic()
    t_cancel = first_cancel_at(d, batch_id, timeout=180)
    assert d.airflow.wait_run_state(TIMEOUT_DAG, run_id, timeout=120) == "failed"
    time.sleep(2)
    assert len(requests_about(d, batch_id, "batches.cancel")) == 1
    assert d.emulator.batch(batch_id)["status"] in ("cancelling", "cancelled")
    t = ti(d, TIMEOUT_DAG, run_id, "create")
    assert (t["state"], t["try_number"]) == ("failed", 1), t
    # Airflow 3.3.2 does not apply execution_timeout to a deferred task; the operator stops its
    # trigger's deadline at it (20 s from the task's start), and the timeout event cancels.
    report("5-execution-timeout-deferred", deferred_to_cancel_s=t_cancel - t_deferred, cancels=1)


# -- (6) the DAG run marked failed: every running and deferred task's batch is cancelled -------


def test_dag_run_marked_failed_cancels_every_running_and_deferred_batch(d: Deployment) -> None:
    run_id = trigger(d, BOTH_DAG, "6")
    in_worker = batch_of(d, run_id, "in_worker")
    in_triggerer = batch_of(d, run_id, "in_triggerer")
    running_pid(d, BOTH_DAG, run_id, "in_worker")
    wait_state(d, BOTH_DAG, run_id, "in_triggerer", "deferred")

    t_mark = time.monotonic()
    d.airflow.api("PATCH", f"dags/{BOTH_DAG}/dagRuns/{run_id}", {"state": "failed"})
    t_worker = first_cancel_at(d, in_worker)
    t_triggerer = first_cancel_at(d, in_triggerer)
    time.sleep(2)
    for batch_id in (in_worker, in_triggerer):
        assert len(requests_about(d, batch_id, "batches.cancel")) == 1, batch_id
        assert d.emulator.batch(batch_id)["status"] in ("cancelling", "cancelled")
    assert d.airflow.dag_run(BOTH_DAG, run_id)["state"] == "failed"
    report(
        "6-run-marked-failed",
        mark_to_cancel_in_worker_s=t_worker - t_mark,
        mark_to_cancel_in_triggerer_s=t_triggerer - t_mark,
        cancels=2,
    )


# -- (8) a triggerer restart neither cancels nor loses the wait ---------------------------------


def test_triggerer_restart_neither_cancels_nor_loses_the_wait(d: Deployment) -> None:
    from tests.deployment.harness import stop_group

    run_id = trigger(d, DEFERRED_DAG, "8")
    batch_id = batch_of(d, run_id, "create")
    wait_state(d, DEFERRED_DAG, run_id, "create", "deferred")
    settled(d, DEFERRED_DAG, run_id, "create")
    holder = wait_for(
        "a triggerer to take the trigger",
        lambda: (ti(d, DEFERRED_DAG, run_id, "create").get("triggerer_job") or {}).get("hostname"),
        timeout=60,
        diagnose=d.airflow.diagnose,
    )
    name = str(holder).split("@")[0]
    assert name in d.airflow.triggerers(), (holder, list(d.airflow.triggerers()))

    t_stop = time.monotonic()
    stop_group(d.airflow.procs[name])  # SIGTERM: a graceful restart, as a deploy does it
    polls_at_stop = len(requests_about(d, batch_id, "batches.get"))
    d.airflow.start(name)
    wait_for(
        "a triggerer to poll the batch again",
        lambda: len(requests_about(d, batch_id, "batches.get")) > polls_at_stop,
        timeout=180,
        diagnose=d.airflow.diagnose,
    )
    t_resumed = time.monotonic()
    assert requests_about(d, batch_id, "batches.cancel") == []
    assert ti(d, DEFERRED_DAG, run_id, "create")["state"] == "deferred"

    d.emulator.set_status(batch_id, "completed")
    assert d.airflow.wait_run_state(DEFERRED_DAG, run_id, timeout=120) == "success"
    t = ti(d, DEFERRED_DAG, run_id, "create")
    assert (t["state"], t["try_number"]) == ("success", 1), t
    assert requests_about(d, batch_id, "batches.cancel") == []
    report("8-triggerer-restart", stop_to_resumed_poll_s=t_resumed - t_stop, cancels=0)


# -- (9) a retry re-attaches: exactly one create ------------------------------------------------


def creates_of(d: Deployment, run_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in d.emulator.requests("batches.create")
        if f"/{run_id}/" in (r["headers"].get("x-portkey-trace-id") or "")
    ]


def test_retry_after_the_worker_died_reattaches_without_a_second_create(d: Deployment) -> None:
    run_id = trigger(d, SYNC_DAG, "9a")
    batch_id = batch_of(d, run_id, "create")
    pid = running_pid(d, SYNC_DAG, run_id, "create")
    os.kill(pid, signal.SIGKILL)  # the worker dies: no on_kill, no cancel
    t_kill = time.monotonic()
    wait_for(
        "the retry to poll the batch again",
        lambda: any(
            (r["headers"].get("x-portkey-trace-id") or "").endswith("/create/try2")
            for r in requests_about(d, batch_id, "batches.get")
        ),
        timeout=180,
        interval=0.5,
        diagnose=d.airflow.diagnose,
    )
    t_reattached = time.monotonic()
    d.emulator.set_status(batch_id, "completed")
    assert d.airflow.wait_run_state(SYNC_DAG, run_id, timeout=120) == "success"
    t = ti(d, SYNC_DAG, run_id, "create")
    assert (t["state"], t["try_number"]) == ("success", 2), t
    assert len(creates_of(d, run_id)) == 1
    assert requests_about(d, batch_id, "batches.cancel") == []
    report("9a-retry-after-worker-died", kill_to_reattached_s=t_reattached - t_kill, creates=1)


def test_a_lost_create_answer_is_found_by_its_stamp_without_a_second_create(
    d: Deployment,
) -> None:
    # Portkey creates the batch, but the connection drops before its answer arrives.
    control(d, "faults", {"kind": "drop", "route": "batches.create", "times": 1, "perform": True})
    run_id = trigger(d, SYNC_DAG, "9b")
    batch_id = batch_of(d, run_id, "create")
    d.emulator.set_status(batch_id, "completed")
    assert d.airflow.wait_run_state(SYNC_DAG, run_id, timeout=120) == "success"
    t = ti(d, SYNC_DAG, run_id, "create")
    assert (t["state"], t["try_number"]) == ("success", 1), t
    assert len(creates_of(d, run_id)) == 1
    lists = [
        r
        for r in d.emulator.requests("batches.list")
        if f"/{run_id}/" in (r["headers"].get("x-portkey-trace-id") or "")
    ]
    assert len(lists) >= 1  # the search by stamp
    assert requests_about(d, batch_id, "batches.cancel") == []
    report("9b-lost-create-answer", creates=1, searches=len(lists))
