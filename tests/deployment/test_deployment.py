"""Tier 4: the provider inside a real Airflow deployment (api-server, scheduler with
LocalExecutor, triggerer, dag-processor as separate processes on SQLite), against the emulator
running as a process of its own. DAG runs are triggered and watched through the REST API v2;
what reached Portkey is read from the emulator.

The tests share one deployment and run in file order: scenario 2 replaces the triggerer that
the later scenarios then use, and scenario 5 (the heaviest) runs last. Every measurement is
printed on a ``DEPLOY`` line (``pytest -s`` shows them) and feeds docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.deployment.harness import (
    Deployment,
    belongs_to_run,
    by_task,
    group_members,
    is_loopback,
    kill_group_now,
    listening_sockets,
    processes_of_run,
    summarize,
    wait_for,
)

WAIT_DAG = "portkey_deploy_wait"
CANCEL_DAG = "portkey_deploy_cancel"
MANY_DAG = "portkey_deploy_many"
MANY = 200


def report(scenario: str, **values: Any) -> None:
    shown = " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"\nDEPLOY {scenario}: {shown}")


def one(tis: list[dict[str, Any]], task_id: str) -> dict[str, Any]:
    (ti,) = by_task(tis, task_id)
    return ti


def gets(d: Deployment, batch_id: str) -> int:
    return len(d.emulator.requests("batches.get", [batch_id]))


def cancels(d: Deployment, batch_id: str) -> list[dict[str, Any]]:
    return d.emulator.requests("batches.cancel", [batch_id])


def ledger_for(d: Deployment, run_id: str) -> list[list[str]]:
    """The downstream tasks' executions in a run: [dag_id, run_id, task_id, map_index, try, id]."""
    return [line.split() for line in d.airflow.ledger_lines() if line.split()[1] == run_id]


def wait_deferred_and_polled(d: Deployment, run_id: str, batch_id: str) -> dict[str, Any]:
    """Wait until the sensor is deferred and its trigger has polled the batch at least once."""
    tis = d.airflow.wait_states(
        WAIT_DAG,
        run_id,
        lambda tis: one(tis, "wait")["state"] == "deferred",
        "the sensor to defer",
        timeout=180,
    )
    polls_in_worker = 1  # the sensor's own poll before it defers
    wait_for(
        "the trigger to poll the batch",
        lambda: gets(d, batch_id) > polls_in_worker,
        timeout=60,
        diagnose=d.airflow.diagnose,
    )
    settle_deferral(d, WAIT_DAG, run_id, 1)
    return one(tis, "wait")


def settle_deferral(d: Deployment, dag_id: str, run_id: str, count: int) -> None:
    """Wait until the scheduler has processed the exits of the workloads that deferred.

    Finishing a batch before then lets the trigger fire and the task resume while the old
    workload's exit is still unreported, and Airflow 3.3.2 then fails the resumed task
    (docs/reliability.md, "Deployment scenarios"). That race is Airflow's, not the provider's.
    """
    wait_for(
        "the scheduler to see the deferring workloads exit",
        lambda: d.airflow.executor_events(dag_id, run_id, "wait") >= count,
        timeout=120,
        interval=1,
        diagnose=d.airflow.diagnose,
    )


def trace_ids(d: Deployment, batch_id: str) -> set[str | None]:
    """The x-portkey-trace-id of every request about a batch."""
    return {r["headers"].get("x-portkey-trace-id") for r in d.emulator.requests(None, [batch_id])}


def assert_ran_once(d: Deployment, run_id: str, batch_id: str) -> None:
    tis = d.airflow.task_instances(WAIT_DAG, run_id)
    wait, after = one(tis, "wait"), one(tis, "after")
    assert (wait["state"], wait["try_number"]) == ("success", 1), wait
    assert (after["state"], after["try_number"]) == ("success", 1), after
    runs = ledger_for(d, run_id)
    assert runs == [[WAIT_DAG, run_id, "after", "-1", "1", batch_id]], runs


# -- 0: the deployment itself -----------------------------------------------------------------


def test_every_process_listens_on_loopback_only(deployment: Deployment) -> None:
    """The api-server binds 127.0.0.1; the scheduler's and triggerer's log servers, which
    bind every interface at fixed ports, are off (--skip-serve-logs)."""
    d = deployment
    pids = processes_of_run(d.marker, d.root)
    listening = listening_sockets(pids)
    assert listening, "no listening socket found: the check itself is broken"
    emulator_port = int(d.emulator.root_url.rsplit(":", 1)[1])
    assert {port for _, _, port in listening} >= {d.airflow.port, emulator_port}
    outside = [
        (pids[pid][:60], address, port)
        for pid, address, port in listening
        if not is_loopback(address)
    ]
    assert outside == [], outside
    report(
        "0-deployment",
        startup_s=d.timings["startup_s"],
        processes=len(pids),
        listening=sorted({f"{a}:{p}" for _, a, p in listening}),
    )


# -- 1 and 2: the deferred sensor completes; and it survives its triggerer being killed ---------


def test_deferred_sensor_completes_and_releases_downstream(deployment: Deployment) -> None:
    d = deployment
    (batch_id,) = d.emulator.seed(1)
    t0 = time.monotonic()
    run_id = d.airflow.trigger(WAIT_DAG, {"batch_id": batch_id})
    sensor = wait_deferred_and_polled(d, run_id, batch_id)
    t_deferred = time.monotonic()
    assert sensor["trigger"] and sensor["trigger"]["classpath"].endswith("PortkeyBatchTrigger")

    d.emulator.set_status(batch_id, "completed")
    t_flip = time.monotonic()
    tis = d.airflow.wait_states(
        WAIT_DAG,
        run_id,
        lambda tis: one(tis, "wait")["state"] == "success",
        "the sensor to succeed",
        timeout=120,
    )
    t_sensor = time.monotonic()
    assert d.airflow.wait_run_state(WAIT_DAG, run_id, timeout=120) == "success"
    t_done = time.monotonic()

    assert_ran_once(d, run_id, batch_id)
    assert one(tis, "wait")["try_number"] == 1
    # cancel_on_kill is on, but a trigger that ends normally must not cancel anything.
    assert cancels(d, batch_id) == []
    # The worker's poll and the trigger's carry the task's trace: it survives serialisation.
    (trace,) = trace_ids(d, batch_id)
    assert trace and trace.startswith(f"airflow/{WAIT_DAG}/") and trace.endswith("/wait/try1")
    report(
        "1-sensor-completes",
        trigger_to_deferred_s=t_deferred - t0,
        flip_to_sensor_success_s=t_sensor - t_flip,
        flip_to_run_success_s=t_done - t_flip,
        polls=gets(d, batch_id),
        cancels=0,
    )


def test_triggerer_killed_mid_wait_resumes_in_new_triggerer(deployment: Deployment) -> None:
    d = deployment
    (batch_id,) = d.emulator.seed(1)
    run_id = d.airflow.trigger(WAIT_DAG, {"batch_id": batch_id})
    wait_deferred_and_polled(d, run_id, batch_id)
    sensor = one(d.airflow.task_instances(WAIT_DAG, run_id), "wait")
    old_job = (sensor.get("triggerer_job") or {}).get("id")
    assert old_job is not None, sensor

    old = d.airflow.procs["triggerer"]
    kill_group_now(old)  # SIGKILL to the triggerer and its trigger-runner child at once
    t_kill = time.monotonic()
    assert not group_members(old.pid)
    polls_at_kill = gets(d, batch_id)
    # The new triggerer takes over only once the old one's heartbeat is older than
    # [triggerer] triggerer_health_check_threshold (15 s here), so starting it at once still
    # leaves a quiet spell in which nothing may poll.
    new = d.airflow.start("triggerer")
    t_start = time.monotonic()
    time.sleep(3)
    polls_while_dead = gets(d, batch_id) - polls_at_kill
    assert polls_while_dead == 0, "something still polls the batch after the triggerer died"
    wait_for(
        "the new triggerer to poll the batch",
        lambda: gets(d, batch_id) > polls_at_kill,
        timeout=120,
        diagnose=d.airflow.diagnose,
    )
    t_resumed = time.monotonic()
    ti = one(d.airflow.task_instances(WAIT_DAG, run_id), "wait")
    assert (ti["state"], ti["try_number"]) == ("deferred", 1), ti
    new_job = (ti.get("triggerer_job") or {}).get("id")
    assert new_job is not None and new_job != old_job, (old_job, new_job)

    d.emulator.set_status(batch_id, "completed")
    t_flip = time.monotonic()
    assert d.airflow.wait_run_state(WAIT_DAG, run_id, timeout=120) == "success"
    t_done = time.monotonic()

    assert_ran_once(d, run_id, batch_id)
    assert cancels(d, batch_id) == []
    assert new.alive()
    # Before the kill and after it, Portkey saw one and the same try of the task.
    (trace,) = trace_ids(d, batch_id)
    assert trace and trace.endswith("/wait/try1"), trace
    report(
        "2-triggerer-killed",
        old_triggerer_job=old_job,
        new_triggerer_job=new_job,
        new_triggerer_start_to_first_poll_s=t_resumed - t_start,
        kill_to_resumed_s=t_resumed - t_kill,
        flip_to_run_success_s=t_done - t_flip,
        polls=gets(d, batch_id),
        sensor_try=1,
        downstream_runs=1,
    )


# -- 3: a deferred sensor marked failed: the trigger's on_kill cancels the batch ------------


def test_deferred_sensor_marked_failed_cancels_batch_once(deployment: Deployment) -> None:
    d = deployment
    (batch_id,) = d.emulator.seed(1)
    run_id = d.airflow.trigger(WAIT_DAG, {"batch_id": batch_id})
    wait_deferred_and_polled(d, run_id, batch_id)
    assert cancels(d, batch_id) == []

    d.airflow.mark(WAIT_DAG, run_id, "wait", "failed")
    t_mark = time.monotonic()
    wait_for(
        "the trigger's on_kill to cancel the batch",
        lambda: cancels(d, batch_id),
        timeout=60,
        interval=0.25,
        diagnose=d.airflow.diagnose,
    )
    t_cancel = time.monotonic()
    assert d.airflow.wait_run_state(WAIT_DAG, run_id, timeout=120) == "failed"
    time.sleep(2)  # a second cancel, if any were coming, has had time to arrive
    sent = cancels(d, batch_id)
    assert len(sent) == 1, sent
    tis = d.airflow.task_instances(WAIT_DAG, run_id)
    assert one(tis, "wait")["state"] == "failed"
    assert one(tis, "after")["state"] == "upstream_failed"
    assert ledger_for(d, run_id) == []
    assert d.emulator.batch(batch_id)["status"] in ("cancelling", "cancelled")
    headers = sent[0]["headers"]
    assert headers.get("x-portkey-api-key") == d.emulator.API_KEY
    report(
        "3-marked-failed-on_kill",
        mark_to_cancel_s=t_cancel - t_mark,
        cancels=len(sent),
        batch_status=d.emulator.batch(batch_id)["status"],
    )


# -- 4: a cancel operator waiting in a worker is killed: its on_kill cancels again ------------


def start_waiting_cancel_operator(d: Deployment) -> tuple[str, str, int]:
    """A cancel operator that has sent its cancel and now waits for a batch stuck cancelling."""
    (batch_id,) = d.emulator.seed(1, status="cancelling")  # held: it never finishes stopping
    run_id = d.airflow.trigger(CANCEL_DAG, {"batch_id": batch_id})
    tis = d.airflow.wait_states(
        CANCEL_DAG,
        run_id,
        lambda tis: one(tis, "cancel")["state"] == "running" and one(tis, "cancel")["pid"],
        "the cancel operator to run",
        timeout=180,
    )
    wait_for(
        "the operator to cancel and start waiting",
        lambda: len(cancels(d, batch_id)) == 1 and gets(d, batch_id) >= 2,
        timeout=60,
        diagnose=d.airflow.diagnose,
    )
    pid = int(one(tis, "cancel")["pid"])
    assert belongs_to_run(pid, d.root), f"pid {pid} of the task instance is not of this run"
    return batch_id, run_id, pid


def wait_second_cancel(d: Deployment, batch_id: str) -> float:
    t = time.monotonic()
    wait_for(
        "on_kill to send a second cancel",
        lambda: len(cancels(d, batch_id)) >= 2,
        timeout=90,
        interval=0.25,
        diagnose=d.airflow.diagnose,
    )
    return time.monotonic() - t


def test_cancel_operator_marked_failed_cancels_again(deployment: Deployment) -> None:
    """Path: mark the running task failed through the REST API. The task's supervisor gets a
    409 on its next heartbeat and SIGTERMs the task process, whose handler calls on_kill."""
    d = deployment
    batch_id, run_id, pid = start_waiting_cancel_operator(d)
    polls_before = gets(d, batch_id)
    d.airflow.mark(CANCEL_DAG, run_id, "cancel", "failed")
    t_mark = time.monotonic()
    to_cancel = wait_second_cancel(d, batch_id)
    # Airflow 3.3.2's SIGTERM handler runs on_kill and returns: the wait goes on until the
    # supervisor's escalation SIGKILLs the process (5 s after its SIGTERM).
    wait_for("the task process to exit", lambda: not Path(f"/proc/{pid}").exists(), timeout=60)
    t_exit = time.monotonic()
    polls_at_exit = gets(d, batch_id)
    assert d.airflow.wait_run_state(CANCEL_DAG, run_id, timeout=60) == "failed"
    time.sleep(2)
    assert gets(d, batch_id) == polls_at_exit, "something still polls after the task exited"
    sent = cancels(d, batch_id)
    assert len(sent) == 2, sent
    ti = one(d.airflow.task_instances(CANCEL_DAG, run_id), "cancel")
    assert (ti["state"], ti["try_number"]) == ("failed", 1), ti
    report(
        "4a-cancel-operator-marked-failed",
        mark_to_second_cancel_s=to_cancel,
        mark_to_process_exit_s=t_exit - t_mark,
        polls_between_mark_and_exit=polls_at_exit - polls_before,
        cancels=len(sent),
    )


def test_cancel_operator_sigterm_cancels_again(deployment: Deployment) -> None:
    """Path: SIGTERM straight to the task process (its pid from the REST API), as `kill`
    or a pod's graceful shutdown forwarded by the supervisor delivers it."""
    d = deployment
    batch_id, run_id, pid = start_waiting_cancel_operator(d)
    os.kill(pid, signal.SIGTERM)
    to_cancel = wait_second_cancel(d, batch_id)
    # Nothing escalates a SIGTERM that did not come from the supervisor, and on_kill does not
    # stop the wait: the operator goes on waiting for the batch it has cancelled twice.
    polls = gets(d, batch_id)
    time.sleep(2)
    ti = one(d.airflow.task_instances(CANCEL_DAG, run_id), "cancel")
    still_waiting = ti["state"] == "running" and Path(f"/proc/{pid}").exists()
    polls_after_kill = gets(d, batch_id) - polls
    assert still_waiting and polls_after_kill > 0, (ti["state"], polls_after_kill)

    d.emulator.set_status(batch_id, "cancelled")  # the batch stops at last
    t_stop = time.monotonic()
    state = d.airflow.wait_run_state(CANCEL_DAG, run_id, timeout=120)
    t_done = time.monotonic()
    wait_for("the task process to exit", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
    sent = cancels(d, batch_id)
    assert len(sent) == 2, sent
    ti = one(d.airflow.task_instances(CANCEL_DAG, run_id), "cancel")
    assert ti["try_number"] == 1, ti
    # The operator's job (the batch stopped) is done, so it ends in success, SIGTERM or not.
    assert (state, ti["state"]) == ("success", "success"), (state, ti)
    report(
        "4b-cancel-operator-sigterm",
        sigterm_to_second_cancel_s=to_cancel,
        polls_in_2s_after_on_kill=polls_after_kill,
        batch_stopped_to_run_end_s=t_done - t_stop,
        final_state=ti["state"],
        cancels=len(sent),
    )


# -- 5: many deferred sensors in one triggerer --------------------------------------------


def test_many_deferred_sensors_in_one_triggerer(deployment: Deployment) -> None:
    d = deployment
    af = d.airflow
    batch_ids = d.emulator.seed(MANY)
    cpu_before = af.cpu_report()
    t0 = time.monotonic()
    run_id = af.trigger(MANY_DAG, {"batch_ids": batch_ids})
    af.wait_mapped(MANY_DAG, run_id, "wait", "deferred", MANY, timeout=400)
    t_deferred = time.monotonic()

    def every_batch_polled_by_trigger() -> bool:
        seen: dict[str, int] = {}
        for r in d.emulator.requests("batches.get", batch_ids):
            seen[r["batch_id"]] = seen.get(r["batch_id"], 0) + 1
        return len(seen) == MANY and min(seen.values()) >= 2  # the worker's poll + the trigger's

    wait_for("every trigger to poll", every_batch_polled_by_trigger, timeout=120, interval=2)
    tis = by_task(af.task_instances(MANY_DAG, run_id), "wait")
    assert {ti["state"] for ti in tis} == {"deferred"}
    triggerers = {(ti.get("triggerer_job") or {}).get("id") for ti in tis}
    assert len(triggerers) == 1 and None not in triggerers, triggerers
    assert af.procs["triggerer"].alive()
    settle_deferral(d, MANY_DAG, run_id, MANY)

    for batch_id in batch_ids:
        d.emulator.set_status(batch_id, "completed")
    t_flip = time.monotonic()
    af.wait_mapped(MANY_DAG, run_id, "wait", "success", MANY, timeout=400)
    t_sensors = time.monotonic()
    assert af.wait_run_state(MANY_DAG, run_id, timeout=120, interval=2) == "success"
    t_done = time.monotonic()

    tis = af.task_instances(MANY_DAG, run_id)
    assert summarize(tis) == {
        "batch_ids": {"success": 1},
        "wait": {"success": MANY},
        "after": {"success": 1},
    }
    assert {ti["try_number"] for ti in tis} == {1}
    runs = ledger_for(d, run_id)
    assert len(runs) == MANY, len(runs)  # one execution of the downstream task, all batches
    assert sorted(r[5] for r in runs) == sorted(batch_ids)
    assert {(r[2], r[4]) for r in runs} == {("after", "1")}
    assert d.emulator.requests("batches.cancel", batch_ids) == []
    report(
        "5-many-sensors",
        sensors=MANY,
        triggerer_jobs=len(triggerers),
        trigger_to_all_deferred_s=t_deferred - t0,
        flip_to_all_sensors_success_s=t_sensors - t_flip,
        flip_to_run_success_s=t_done - t_flip,
        polls=len(d.emulator.requests("batches.get", batch_ids)),
        downstream_batches=len(runs),
    )
    cpu_after = af.cpu_report()
    print(
        "DEPLOY 5-many-sensors CPU seconds by component: "
        + ", ".join(f"{k}={cpu_after[k] - cpu_before.get(k, 0):.0f}" for k in cpu_after)
    )
