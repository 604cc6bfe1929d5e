"""Tier 4: the provider inside Airflow distributed as production runs it: PostgreSQL, Redis,
CeleryExecutor with two workers, scheduler, dag-processor, api-server and two triggerers, each a
process of its own on loopback, against the emulator as a process of its own. The connection
lives in the metadata database (stored through the REST API). DAG runs are triggered and
watched through the REST API v2; what reached Portkey is read from the emulator.

The tests share one deployment and run in file order: scenario 2 kills a triggerer and
scenario 3 a worker (each is started again afterwards), and scenario 5, the heaviest, runs
last. Every measurement is printed on a ``DEPLOY`` line (``pytest -s`` shows them) and feeds
docs/deployment.md. Each component reports its own process name as its host
(``triggerer-1``, ``worker-2``), so the REST API tells which triggerer holds a trigger and
which worker runs a task.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.deployment.harness import (
    TRIGGERERS,
    Deployment,
    belongs_to_run,
    by_task,
    cpu_seconds,
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
CREATE_DAG = "portkey_deploy_create"
MANY_DAG = "portkey_deploy_many"
# Scenario 5's sensor count (docs/deployment.md says what 1,000 cost).
MANY = int(os.environ.get("PORTKEY_DEPLOY_MANY", "1000"))
# Scenarios 1 and 2: enough waits that both triggerers take a share.
SPREAD = 8


def report(scenario: str, **values: Any) -> None:
    shown = " ".join(
        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )
    print(f"\nDEPLOY {scenario}: {shown}")


def one(tis: list[dict[str, Any]], task_id: str) -> dict[str, Any]:
    (ti,) = by_task(tis, task_id)
    return ti


def host_of_triggerer(ti: dict[str, Any]) -> str | None:
    job = ti.get("triggerer_job") or {}
    return job.get("hostname")


def gets(d: Deployment, batch_id: str) -> int:
    return len(d.emulator.requests("batches.get", [batch_id]))


def cancels(d: Deployment, batch_id: str) -> list[dict[str, Any]]:
    return d.emulator.requests("batches.cancel", [batch_id])


def ledger_for(d: Deployment, run_id: str) -> list[list[str]]:
    """The downstream tasks' executions in a run: [dag_id, run_id, task_id, map_index, try, id]."""
    return [line.split() for line in d.airflow.ledger_lines() if line.split()[1] == run_id]


def settle_deferral(d: Deployment, dag_id: str, run_id: str, count: int) -> None:
    """Wait until the scheduler has processed the exits of the workloads that deferred.

    Finishing a batch before then lets the trigger fire and the task resume while the old
    workload's exit is still unreported, and Airflow 3.3.2 then fails the resumed task
    (docs/deployment.md, "Airflow's own limits"). That race is Airflow's, not the provider's.
    """
    wait_for(
        "the scheduler to see the deferring workloads exit",
        lambda: d.airflow.executor_events(dag_id, run_id, "wait") >= count,
        timeout=180,
        interval=1,
        diagnose=d.airflow.diagnose,
    )


def start_waits(d: Deployment, count: int) -> dict[str, str]:
    """``count`` runs of the one-sensor DAG, each on a held batch: run id -> batch id."""
    runs = {}
    for batch_id in d.emulator.seed(count):
        runs[d.airflow.trigger(WAIT_DAG, {"batch_id": batch_id})] = batch_id
    return runs


def wait_deferred_and_polled(d: Deployment, runs: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Wait until every run's sensor is deferred, its trigger has polled its batch, and the
    scheduler has seen the deferring workload exit: run id -> the sensor's task instance."""
    sensors = {}
    for run_id in runs:
        tis = d.airflow.wait_states(
            WAIT_DAG,
            run_id,
            lambda tis: one(tis, "wait")["state"] == "deferred",
            "the sensor to defer",
            timeout=300,
        )
        sensors[run_id] = one(tis, "wait")
    polls_in_worker = 1  # the sensor's own poll before it defers
    wait_for(
        "every trigger to poll its batch",
        lambda: all(gets(d, batch_id) > polls_in_worker for batch_id in runs.values()),
        timeout=120,
        diagnose=d.airflow.diagnose,
    )
    for run_id in runs:
        settle_deferral(d, WAIT_DAG, run_id, 1)
    # The triggerer that holds each trigger, as it is now (it is set once the trigger runs).
    return {run_id: one(d.airflow.task_instances(WAIT_DAG, run_id), "wait") for run_id in sensors}


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


def finish_all(d: Deployment, runs: dict[str, str]) -> float:
    """Flip every batch to completed, wait for every run to succeed: seconds from the first
    flip to the last run's success."""
    for batch_id in runs.values():
        d.emulator.set_status(batch_id, "completed")
    t_flip = time.monotonic()
    for run_id in runs:
        assert d.airflow.wait_run_state(WAIT_DAG, run_id, timeout=180) == "success", run_id
    return time.monotonic() - t_flip


# -- 0: the deployment itself -----------------------------------------------------------------


def test_every_process_listens_on_loopback_only(deployment: Deployment) -> None:
    """The api-server, PostgreSQL, Redis and the emulator bind 127.0.0.1; the log servers of
    the scheduler, triggerers and workers, which bind every interface at fixed ports, are
    off (--skip-serve-logs)."""
    d = deployment
    assert d.postgres is not None and d.redis is not None
    pids = processes_of_run(d.marker, d.root)
    listening = listening_sockets(pids)
    assert listening, "no listening socket found: the check itself is broken"
    emulator_port = int(d.emulator.root_url.rsplit(":", 1)[1])
    ports = {port for _, _, port in listening}
    assert ports >= {d.airflow.port, emulator_port, d.postgres.port, d.redis.port}
    outside = [
        (pids[pid][:60], address, port)
        for pid, address, port in listening
        if not is_loopback(address)
    ]
    assert outside == [], outside
    # The connection is in the metadata database, not in any process's environment.
    conn = d.airflow.api("GET", "connections/portkey_default")
    assert conn["conn_type"] == "portkey" and conn["host"] == d.emulator.base_url
    assert not any("AIRFLOW_CONN_" in k for k in d.airflow.env)
    report(
        "0-deployment",
        startup_s=d.timings["startup_s"],
        processes=len(pids),
        listening=sorted({f"{a}:{p}" for _, a, p in listening}),
    )


# -- 1: deferred waits spread over both triggerers ------------------------------------------


def test_deferred_waits_spread_over_both_triggerers_and_release_downstream_once(
    deployment: Deployment,
) -> None:
    d = deployment
    t0 = time.monotonic()
    runs: dict[str, str] = {}
    sensors: dict[str, dict[str, Any]] = {}
    # Airflow hands a new trigger to whichever triggerer asks first, and a busy one asks more
    # often: waits started together can all land in one. More rounds, until both hold some.
    for _ in range(4):
        started = start_waits(d, SPREAD // 2)
        runs.update(started)
        sensors.update(wait_deferred_and_polled(d, started))
        if {host_of_triggerer(ti) for ti in sensors.values()} >= set(TRIGGERERS):
            break
    held = Counter(host_of_triggerer(ti) for ti in sensors.values())
    forced = set(held) != set(TRIGGERERS)
    if forced:
        # Still all in one: which triggerer asks first is Airflow's race, not the provider's.
        # Pause that one (SIGSTOP, far below the 30 s health threshold) for one more round, so
        # the other must take it; the waits on both must then complete as any others.
        (busy,) = held
        group = d.airflow.procs[busy].pid
        os.killpg(group, signal.SIGSTOP)
        try:
            started = start_waits(d, 2)
            runs.update(started)
            sensors.update(wait_deferred_and_polled(d, started))
        finally:
            os.killpg(group, signal.SIGCONT)
    t_deferred = time.monotonic()
    for ti in sensors.values():
        assert ti["trigger"] and ti["trigger"]["classpath"].endswith("PortkeyBatchTrigger")
    share = Counter(host_of_triggerer(ti) for ti in sensors.values())
    assert set(share) == set(TRIGGERERS), share

    flip_to_last_run = finish_all(d, runs)
    for run_id, batch_id in runs.items():
        assert_ran_once(d, run_id, batch_id)
        # cancel_on_kill is on, but a trigger that ends normally must not cancel anything.
        assert cancels(d, batch_id) == []
        # The worker's poll and the trigger's carry the task's trace across processes.
        (trace,) = trace_ids(d, batch_id)
        assert trace and trace.startswith(f"airflow/{WAIT_DAG}/") and trace.endswith("/wait/try1")
    report(
        "1-spread",
        waits=len(runs),
        per_triggerer=dict(sorted(share.items())),
        spread_by_pausing_one=forced,
        trigger_to_all_deferred_s=t_deferred - t0,
        flip_to_last_run_success_s=flip_to_last_run,
        downstream_runs=len(runs),
        cancels=0,
    )


# -- 2: a triggerer SIGKILLed mid-wait: the other one takes over ------------------------------


def test_triggerer_killed_mid_wait_hands_its_triggers_to_the_other(
    deployment: Deployment,
) -> None:
    d = deployment
    af = d.airflow
    runs = start_waits(d, SPREAD)
    sensors = wait_deferred_and_polled(d, runs)
    share = Counter(host_of_triggerer(ti) for ti in sensors.values())
    victim = max(TRIGGERERS, key=lambda name: share[name])
    (survivor,) = set(TRIGGERERS) - {victim}
    orphans = {r: runs[r] for r, ti in sensors.items() if host_of_triggerer(ti) == victim}
    assert orphans, share

    kill_group_now(af.procs[victim])  # the triggerer and its trigger-runner child at once
    t_kill = time.monotonic()
    polls_at_kill = {b: gets(d, b) for b in orphans.values()}
    # Until the victim's heartbeat is older than [triggerer] triggerer_health_check_threshold
    # (15 s here), nothing polls its batches; then the survivor takes them.
    resumed_after: dict[str, float] = {}

    def every_orphan_polled_again() -> bool:
        for batch_id, before in polls_at_kill.items():
            if batch_id not in resumed_after and gets(d, batch_id) > before:
                resumed_after[batch_id] = time.monotonic() - t_kill
        return len(resumed_after) == len(orphans)

    wait_for(
        f"{survivor} to poll the batches of {victim}",
        every_orphan_polled_again,
        timeout=180,
        interval=0.25,
        diagnose=af.diagnose,
    )
    t_resumed = time.monotonic()
    for run_id in runs:
        ti = one(af.task_instances(WAIT_DAG, run_id), "wait")
        assert (ti["state"], ti["try_number"]) == ("deferred", 1), ti
        assert host_of_triggerer(ti) == survivor, ti
    af.start(victim)  # back to two triggerers for the scenarios that follow

    flip_to_last_run = finish_all(d, runs)
    for run_id, batch_id in runs.items():
        assert_ran_once(d, run_id, batch_id)
        assert cancels(d, batch_id) == []  # the failover cancelled nothing
        # Before the kill and after it, Portkey saw one and the same try of the task.
        (trace,) = trace_ids(d, batch_id)
        assert trace and trace.endswith("/wait/try1"), trace
    report(
        "2-triggerer-killed",
        waits=SPREAD,
        per_triggerer_before=dict(sorted(share.items())),
        orphaned=len(orphans),
        kill_to_first_resumed_s=min(resumed_after.values()),
        kill_to_all_resumed_s=t_resumed - t_kill,
        flip_to_last_run_success_s=flip_to_last_run,
        downstream_runs=len(runs),
        cancels=0,
    )


def test_triggerer_stalled_past_the_threshold_cancels_nothing_when_it_wakes(
    deployment: Deployment,
) -> None:
    """A triggerer frozen (SIGSTOP, as a starved or swapping machine stalls it) longer than
    [triggerer] triggerer_health_check_threshold: the other one takes its triggers; when it
    wakes (SIGCONT), nothing may be cancelled and every wait must still end in success."""
    d = deployment
    af = d.airflow
    runs = start_waits(d, 2)
    sensors = wait_deferred_and_polled(d, runs)
    share = Counter(host_of_triggerer(ti) for ti in sensors.values())
    stalled = max(TRIGGERERS, key=lambda name: share[name])
    (other,) = set(TRIGGERERS) - {stalled}
    taken = {r: runs[r] for r, ti in sensors.items() if host_of_triggerer(ti) == stalled}
    group = af.procs[stalled].pid
    polls_at_stop = {b: gets(d, b) for b in taken.values()}
    os.killpg(group, signal.SIGSTOP)
    t_stop = time.monotonic()
    try:
        wait_for(
            f"{other} to take the triggers of the stalled {stalled}",
            lambda: all(gets(d, b) > n for b, n in polls_at_stop.items()),
            timeout=180,
            interval=0.5,
            diagnose=af.diagnose,
        )
        t_taken = time.monotonic()
    finally:
        os.killpg(group, signal.SIGCONT)
    t_wake = time.monotonic()
    time.sleep(10)  # the woken triggerer's loop has seen its triggers gone
    sent = {b: len(cancels(d, b)) for b in runs.values()}
    first_cancel = min(
        (r["received_at"] for b in runs.values() for r in cancels(d, b)), default=None
    )
    for batch_id in runs.values():
        d.emulator.set_status(batch_id, "completed")
    states = {r: af.wait_run_state(WAIT_DAG, r, timeout=180) for r in runs}
    report(
        "2b-triggerer-stalled",
        stalled=stalled,
        taken=len(taken),
        stop_to_taken_s=t_taken - t_stop,
        cancels=sum(sent.values()),
        wake_to_first_cancel_s=None if first_cancel is None else first_cancel - t_wake,
        run_states=sorted(states.values()),
    )
    assert sum(sent.values()) == 0, sent
    assert set(states.values()) == {"success"}, states


# -- 3: a Celery worker SIGKILLed while a create-and-wait task waits in it --------------------


def pid_alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def creates_of(d: Deployment, run_id: str) -> list[dict[str, Any]]:
    prefix = f"airflow/{CREATE_DAG}/{run_id}/create/"
    return [
        r
        for r in d.emulator.requests("batches.create")
        if (r["headers"].get("x-portkey-trace-id") or "").startswith(prefix)
    ]


def polled_batches_of(d: Deployment, run_id: str, try_number: int) -> set[str]:
    trace = f"airflow/{CREATE_DAG}/{run_id}/create/try{try_number}"
    return {
        r["batch_id"]
        for r in d.emulator.requests("batches.get")
        if r["headers"].get("x-portkey-trace-id") == trace
    }


def test_worker_killed_mid_wait_retry_reattaches_to_the_one_batch(
    deployment: Deployment,
) -> None:
    d = deployment
    af = d.airflow
    run_id = af.trigger(CREATE_DAG, {})
    tis = af.wait_states(
        CREATE_DAG,
        run_id,
        lambda tis: one(tis, "create")["state"] == "running" and one(tis, "create")["pid"],
        "the create task to run",
        timeout=300,
    )
    wait_for(
        "the task to create its batch and poll it",
        lambda: len(creates_of(d, run_id)) == 1 and polled_batches_of(d, run_id, 1),
        timeout=120,
        diagnose=af.diagnose,
    )
    (first_batch,) = polled_batches_of(d, run_id, 1)
    ti = one(tis, "create")
    worker = ti["hostname"]
    assert worker in af.workers(), ti
    pid = int(ti["pid"])
    assert belongs_to_run(pid, d.root), f"pid {pid} of the task instance is not of this run"
    kill_group_now(af.procs[worker])  # the worker, its pool, supervisor and task at once
    t_kill = time.monotonic()
    af.start(worker)  # a fresh worker of the same name, as a restarted machine would run
    seen: dict[str, Any] = {"killed": worker}
    try:
        assert not pid_alive(pid)
        # The scheduler fails the silent try after [scheduler] task_instance_heartbeat_timeout
        # (60 s here) and, with retries=1, queues try 2 on a live worker.
        tis = af.wait_states(
            CREATE_DAG,
            run_id,
            lambda tis: (
                one(tis, "create")["try_number"] == 2 and one(tis, "create")["state"] == "running"
            ),
            "try 2 to run",
            timeout=300,
        )
        seen["kill_to_retry_running_s"] = time.monotonic() - t_kill
        seen["retry_on"] = one(tis, "create")["hostname"]
        wait_for(
            "try 2 to poll a batch",
            lambda: polled_batches_of(d, run_id, 2),
            timeout=120,
            diagnose=af.diagnose,
        )
        seen["kill_to_try2_first_poll_s"] = time.monotonic() - t_kill
        seen["try2_polls_first_batch"] = polled_batches_of(d, run_id, 2) == {first_batch}
        seen["creates"] = len(creates_of(d, run_id))
        assert polled_batches_of(d, run_id, 2) == {first_batch}
        assert len(creates_of(d, run_id)) == 1, creates_of(d, run_id)
        d.emulator.set_status(first_batch, "completed")
        assert af.wait_run_state(CREATE_DAG, run_id, timeout=180) == "success"
        ti = one(af.task_instances(CREATE_DAG, run_id), "create")
        assert (ti["state"], ti["try_number"]) == ("success", 2), ti
        assert len(creates_of(d, run_id)) == 1
    finally:
        seen["creates"] = len(creates_of(d, run_id))
        report("3-worker-killed", **seen)
        # Whatever happened, no batch of this run may keep a task waiting.
        for batch_id in polled_batches_of(d, run_id, 1) | polled_batches_of(d, run_id, 2):
            d.emulator.set_status(batch_id, "completed")
        af.wait_run_state(CREATE_DAG, run_id, timeout=180)


# -- 4: ownership: a deferred sensor marked failed; a waiting task killed ---------------------


def test_deferred_sensor_marked_failed_cancels_batch_once(deployment: Deployment) -> None:
    d = deployment
    runs = start_waits(d, 1)
    ((run_id, batch_id),) = runs.items()
    sensor = wait_deferred_and_polled(d, runs)[run_id]
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
    assert sent[0]["headers"].get("x-portkey-api-key") == d.emulator.API_KEY
    report(
        "4a-deferred-marked-failed",
        triggerer=host_of_triggerer(sensor),
        mark_to_cancel_s=t_cancel - t_mark,
        cancels=len(sent),
        batch_status=d.emulator.batch(batch_id)["status"],
    )


def start_waiting_cancel_operator(d: Deployment) -> tuple[str, str, int, str]:
    """A cancel operator that has sent its cancel and now waits for a batch stuck cancelling:
    (batch id, run id, task pid, worker)."""
    (batch_id,) = d.emulator.seed(1, status="cancelling")  # held: it never finishes stopping
    run_id = d.airflow.trigger(CANCEL_DAG, {"batch_id": batch_id})
    tis = d.airflow.wait_states(
        CANCEL_DAG,
        run_id,
        lambda tis: one(tis, "cancel")["state"] == "running" and one(tis, "cancel")["pid"],
        "the cancel operator to run",
        timeout=300,
    )
    wait_for(
        "the operator to cancel and start waiting",
        lambda: len(cancels(d, batch_id)) == 1 and gets(d, batch_id) >= 2,
        timeout=60,
        diagnose=d.airflow.diagnose,
    )
    ti = one(tis, "cancel")
    pid = int(ti["pid"])
    assert belongs_to_run(pid, d.root), f"pid {pid} of the task instance is not of this run"
    return batch_id, run_id, pid, str(ti["hostname"])


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
    """Path: mark the running task failed through the REST API. The task's supervisor (in the
    Celery worker) gets a 409 on its next heartbeat and SIGTERMs the task process, whose
    handler calls on_kill."""
    d = deployment
    batch_id, run_id, pid, worker = start_waiting_cancel_operator(d)
    polls_before = gets(d, batch_id)
    d.airflow.mark(CANCEL_DAG, run_id, "cancel", "failed")
    t_mark = time.monotonic()
    to_cancel = wait_second_cancel(d, batch_id)
    wait_for("the task process to exit", lambda: not pid_alive(pid), timeout=60)
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
        "4b-running-task-marked-failed",
        worker=worker,
        mark_to_second_cancel_s=to_cancel,
        mark_to_process_exit_s=t_exit - t_mark,
        polls_between_mark_and_exit=polls_at_exit - polls_before,
        cancels=len(sent),
    )


def test_cancel_operator_sigterm_cancels_again_and_stops_waiting(deployment: Deployment) -> None:
    """Path: SIGTERM straight to the task process (its pid from the REST API), as `kill`
    or a pod's graceful shutdown forwarded by the supervisor delivers it."""
    d = deployment
    batch_id, run_id, pid, worker = start_waiting_cancel_operator(d)
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    to_cancel = wait_second_cancel(d, batch_id)
    # Airflow 3.3.2's SIGTERM handler only calls on_kill; the operator's on_kill then ends its
    # own wait at once (AirflowTaskTerminated), instead of polling on until the batch stops.
    wait_for("the task process to exit", lambda: not pid_alive(pid), timeout=60)
    t_exit = time.monotonic()
    polls_at_exit = gets(d, batch_id)
    state = d.airflow.wait_run_state(CANCEL_DAG, run_id, timeout=120)
    time.sleep(2)
    assert gets(d, batch_id) == polls_at_exit, "something still polls after the task exited"
    sent = cancels(d, batch_id)
    assert len(sent) == 2, sent
    ti = one(d.airflow.task_instances(CANCEL_DAG, run_id), "cancel")
    assert (state, ti["state"], ti["try_number"]) == ("failed", "failed", 1), (state, ti)
    report(
        "4c-running-task-sigterm",
        worker=worker,
        sigterm_to_second_cancel_s=to_cancel,
        sigterm_to_process_exit_s=t_exit - t_kill,
        final_state=ti["state"],
        cancels=len(sent),
    )


# -- 5: scale: many deferred sensors over the two triggerers ----------------------------------


def test_many_deferred_sensors_over_two_triggerers(deployment: Deployment) -> None:
    d = deployment
    af = d.airflow
    batch_ids = d.emulator.seed(MANY)
    t0 = time.monotonic()
    run_id = af.trigger(MANY_DAG, {"batch_ids": batch_ids})
    af.wait_mapped(MANY_DAG, run_id, "wait", "deferred", MANY, timeout=1500, interval=10)
    t_deferred = time.monotonic()

    def every_batch_polled_by_trigger() -> bool:
        seen = Counter(r["batch_id"] for r in d.emulator.requests("batches.get", batch_ids))
        return len(seen) == MANY and min(seen.values()) >= 2  # the worker's poll + the trigger's

    wait_for("every trigger to poll", every_batch_polled_by_trigger, timeout=180, interval=5)
    tis = by_task(af.task_instances(MANY_DAG, run_id), "wait")
    assert {ti["state"] for ti in tis} == {"deferred"}
    share = Counter(host_of_triggerer(ti) for ti in tis)
    assert set(share) == set(TRIGGERERS), share
    assert all(p.alive() for p in af.triggerers().values())
    settle_deferral(d, MANY_DAG, run_id, MANY)

    triggerer_groups = {name: p.pid for name, p in af.triggerers().items()}
    cpu_before = {name: cpu_seconds(pgid) for name, pgid in triggerer_groups.items()}
    t_hold = time.monotonic()
    time.sleep(30)  # the triggerers' CPU while they merely hold the waits (30 s poll interval)
    hold_s = time.monotonic() - t_hold
    cpu_holding = {name: cpu_seconds(pgid) for name, pgid in triggerer_groups.items()}

    for batch_id in batch_ids:
        d.emulator.set_status(batch_id, "completed")
    t_flip = time.monotonic()
    af.wait_mapped(MANY_DAG, run_id, "wait", "success", MANY, timeout=1500, interval=10)
    t_sensors = time.monotonic()
    cpu_after = {name: cpu_seconds(pgid) for name, pgid in triggerer_groups.items()}
    assert af.wait_run_state(MANY_DAG, run_id, timeout=300, interval=2) == "success"
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
        per_triggerer=dict(sorted(share.items())),
        trigger_to_all_deferred_s=t_deferred - t0,
        flip_to_all_sensors_success_s=t_sensors - t_flip,
        flip_to_last_downstream_s=t_done - t_flip,
        polls=len(d.emulator.requests("batches.get", batch_ids)),
        downstream_batches=len(runs),
    )
    report(
        "5-many-sensors-triggerer-cpu",
        holding_cpu_pct={
            n: round(100 * (cpu_holding[n] - cpu_before[n]) / hold_s, 1) for n in cpu_before
        },
        flip_to_sensors_cpu_s={n: round(cpu_after[n] - cpu_holding[n], 1) for n in cpu_before},
        total_cpu_s={n: round(cpu_after[n], 1) for n in cpu_before},
    )
    assert all(group_members(pgid) for pgid in triggerer_groups.values())
