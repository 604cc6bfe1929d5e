"""Ownership through real Airflow runs (dag.test()): a task that created a batch cancels it on
every bad end, a retry re-attaches instead of submitting again, and a teardown cancels what the
DAG run started only when the run failed. docs/spend-safety.md lists what each test proves.

Each test that cancels prints an ``OWNERSHIP`` line: the time from the last request of the
failed wait to the cancel reaching the emulator (figures for docs/spend-safety.md, not
assertions).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.emulator(in_progress_s=3600)  # created batches run until told

# dag.test() keeps a run's conf as the DAG's params for the next run: pass every param.
DEFAULT = "portkey_default"
WAIT_FAULTS = {
    "503": {"kind": "server_error", "status": 503},
    "401": {"kind": "status", "status": 401},
    "dropped": {"kind": "drop"},
    "malformed": {"kind": "malformed_json"},
}


@pytest.fixture
def faulty(emulator, monkeypatch):
    """A connection that gives up at once: a lasting fault ends a wait on its first failure."""
    conn = json.loads(emulator.airflow_conn_json())
    conn["extra"].update(max_retries=0, request_timeout=0.5)
    monkeypatch.setenv("AIRFLOW_CONN_PORTKEY_FAULTY", json.dumps(conn))
    return "portkey_faulty"


def created(emulator) -> str:
    """The one batch the run created (the emulator holds no other)."""
    assert len(emulator.requests_to(route="batches.create")) == 1
    (batch_id,) = emulator.batch_ids()
    return batch_id


def _all_batches(emulator) -> list[str]:
    return emulator.batch_ids()


def cancel_gap(emulator, batch_id: str, scenario: str) -> float:
    """Seconds from the wait's last request about the batch to its (first) cancel."""
    about = emulator.requests_to(batch_id=batch_id)
    (first_cancel, *_) = [r for r in about if r.route == "batches.cancel"]
    before = [r.received_at for r in about if r.received_at <= first_cancel.received_at]
    before = [t for t in before if t != first_cancel.received_at] or [first_cancel.received_at]
    gap = first_cancel.received_at - max(before)
    print(f"\nOWNERSHIP {scenario}: last_request_to_cancel_s={gap:.3f}")
    return gap


# -- the wait fails: the batch the task created is cancelled (sync and deferrable) ------------


@pytest.mark.parametrize("fault", WAIT_FAULTS)
@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_a_failed_wait_cancels_the_batch_the_task_created(mode, fault, emulator, faulty, run_dag):
    options = dict(WAIT_FAULTS[fault])
    emulator.add_fault(options.pop("kind"), route="batches.get", times=None, **options)
    result = run_dag(f"own_wait_{mode}", conn_id=faulty)
    assert result.states == {"create": "failed"}
    assert len(emulator.requests_to(route="batches.create")) == 1
    batch_id = created(emulator)
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch_id)) == 1
    assert emulator.get_batch(batch_id)["status"] in {"cancelling", "cancelled"}
    cancel_gap(emulator, batch_id, f"wait-error-{fault}-{mode}")


def task_log(capfd) -> str:
    captured = capfd.readouterr()
    return captured.out + captured.err


def test_a_failed_cancel_is_logged_and_the_wait_error_is_raised(emulator, faulty, run_dag, capfd):
    emulator.add_fault("status", status=401, route="batches.get", times=None)
    emulator.add_fault("server_error", status=500, route="batches.cancel", times=None)
    result = run_dag("own_wait_sync", conn_id=faulty)
    assert result.states == {"create": "failed"}
    batch_id = created(emulator)
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch_id)) == 1
    text = task_log(capfd)
    assert f"could not cancel batch {batch_id}: Portkey answered 500" in text
    # The task fails with the wait's error, not the cancel's.
    assert f"PortkeyError: Waiting for batch {batch_id} failed: Portkey answered 401" in text
    assert emulator.get_batch(batch_id)["status"] in {"validating", "in_progress"}


def test_cancel_on_error_off_leaves_the_batch_running(emulator, faulty, run_dag, capfd):
    emulator.add_fault("status", status=401, route="batches.get", times=None)
    result = run_dag("own_keep_on_error_sync", conn_id=faulty)
    assert result.states == {"create": "failed"}
    batch_id = created(emulator)
    assert emulator.requests_to(route="batches.cancel") == []
    assert emulator.get_batch(batch_id)["status"] in {"validating", "in_progress"}
    assert f"batch {batch_id} left running (cancel_on_error is off)" in task_log(capfd)


# -- path 2: the task's own timeout; path 5: execution_timeout while waiting -------------------


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_the_tasks_own_timeout_cancels_its_batch(mode, emulator, run_dag):
    result = run_dag(f"own_timeout_{mode}", conn_id=DEFAULT)
    assert result.states == {"create": "failed"}
    batch_id = created(emulator)
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch_id)) == 1
    assert emulator.get_batch(batch_id)["status"] in {"cancelling", "cancelled"}
    cancel_gap(emulator, batch_id, f"own-timeout-{mode}")


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_execution_timeout_while_waiting_cancels_once(mode, emulator, run_dag):
    # Deferred, the trigger's deadline stops at the task's execution_timeout: Airflow 3.3.2
    # does not apply execution_timeout to a deferred task.
    result = run_dag(f"own_exec_timeout_{mode}", conn_id=DEFAULT)
    assert result.states == {"create": "failed"}
    batch_id = created(emulator)
    # The wait's own guard and on_kill (which Airflow calls after the timeout) both see the
    # kill: one cancel between them.
    assert len(emulator.requests_to(route="batches.cancel", batch_id=batch_id)) == 1
    assert emulator.get_batch(batch_id)["status"] in {"cancelling", "cancelled"}
    cancel_gap(emulator, batch_id, f"execution-timeout-{mode}")


# -- path 1: downstream failure, the teardown; path 7: success sends nothing -------------------


def test_teardown_cancels_every_batch_of_a_failed_run_found_by_stamp(emulator, run_dag):
    other = emulator.add_batch(status="in_progress", hold=True)["id"]  # not this run's
    result = run_dag("own_teardown", fail=True)
    assert result.state == "failed"
    assert result.states["work"] == "failed"
    assert result.states["cancel"] == "success"
    mine = [r.batch_id for r in emulator.requests_to(route="batches.cancel")]
    creates = emulator.requests_to(route="batches.create")
    assert len(creates) == 3  # one plain and two mapped setups
    assert len(mine) == 3 and other not in mine
    for batch_id in mine:
        assert emulator.get_batch(batch_id)["status"] in {"cancelling", "cancelled"}
    assert emulator.get_batch(other)["status"] == "in_progress"
    stamps = {
        (c.json()["metadata"]["airflow_task_id"], c.json()["metadata"]["airflow_map_index"])
        for c in creates
    }
    assert stamps == {("create", "-1"), ("create_mapped", "0"), ("create_mapped", "1")}


def test_teardown_sends_nothing_when_the_run_succeeded(emulator, run_dag):
    result = run_dag("own_teardown", fail=False)
    assert result.state == "success"
    assert result.states["cancel"] == "success"
    assert len(emulator.requests_to(route="batches.create")) == 3
    # Not a cancel, not even a search: the batches a successful run left running keep running.
    assert [r.route for r in emulator.requests if r.route.startswith("batches.")] == [
        "batches.create"
    ] * 3
    for batch_id in _all_batches(emulator):
        assert emulator.get_batch(batch_id)["status"] in {"validating", "in_progress"}


def test_teardown_when_always_cancels_after_a_successful_run(emulator, run_dag):
    result = run_dag("own_teardown_always", fail=False)
    assert result.state == "success"
    assert len(emulator.requests_to(route="batches.cancel")) == 3


def test_notifier_cancels_what_the_run_created_without_xcom_wiring(emulator, run_dag):
    other = emulator.add_batch(status="in_progress", hold=True)["id"]
    result = run_dag("own_notifier", fail=True)
    assert result.states == {"create": "success", "process": "failed"}
    (cancel,) = emulator.requests_to(route="batches.cancel")
    assert cancel.batch_id != other
    assert emulator.get_batch(other)["status"] == "in_progress"


def test_a_successful_wait_sends_no_cancel(emulator, run_dag, finish_after_polls):
    import threading
    import time

    def finish_the_created_batch() -> None:
        while not emulator.batch_ids():
            time.sleep(0.02)
        finish_after_polls(emulator.batch_ids()[0], "completed", polls=1)

    threading.Thread(target=finish_the_created_batch, daemon=True).start()
    result = run_dag("own_wait_sync", conn_id=DEFAULT)
    assert result.states == {"create": "success"}
    assert result.xcoms["create"]["status"] == "completed"
    assert emulator.requests_to(route="batches.cancel") == []


# -- path 9: a create whose answer was lost, and retries ---------------------------------------


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_a_lost_create_answer_finds_the_batch_instead_of_failing(
    mode, emulator, faulty, run_dag, finish_after_polls
):
    # Portkey creates the batch, but the connection drops before the answer arrives.
    emulator.add_fault("drop", route="batches.create", times=1, perform=True)
    import threading
    import time

    def finish_when_polled() -> None:
        while not emulator.requests_to(route="batches.list"):
            time.sleep(0.02)
        finish_after_polls(_all_batches(emulator)[0], "completed", polls=1)

    threading.Thread(target=finish_when_polled, daemon=True).start()
    result = run_dag(f"own_wait_{mode}", conn_id=faulty)
    assert result.states == {"create": "success"}
    assert len(emulator.requests_to(route="batches.create")) == 1
    (batch_id,) = _all_batches(emulator)
    assert result.xcoms["create"]["id"] == batch_id
    assert result.xcoms["create"]["status"] == "completed"
    assert emulator.requests_to(route="batches.cancel") == []


def finish_when(emulator, ready, status: str = "completed") -> None:
    """Set the newest batch to ``status`` once ``ready()`` holds (watched from a thread)."""
    import threading
    import time

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if ready():
                emulator.set_status(_all_batches(emulator)[-1], status)
                return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def outage_in_the_first_try(emulator) -> None:
    """Try 1's first poll and its cancel both fail: the batch outlives the failed try."""
    emulator.add_fault("status", status=401, route="batches.get", times=1)
    emulator.add_fault("server_error", status=503, route="batches.cancel", times=1)


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_a_retry_reattaches_to_the_batch_still_running(mode, emulator, faulty, run_dag):
    outage_in_the_first_try(emulator)
    # Finish the batch only once the retry has read it again (the failed poll, then the
    # retry's read of the recorded id, then one poll of its wait).
    finish_when(emulator, lambda: len(emulator.requests_to(route="batches.get")) >= 3)
    result = run_dag(f"own_retry_{mode}", conn_id=faulty)
    assert result.states == {"create": "success"}
    assert len(emulator.requests_to(route="batches.create")) == 1
    (batch_id,) = _all_batches(emulator)
    assert result.xcoms["create"]["id"] == batch_id
    assert result.xcoms["create"]["status"] == "completed"
    traces = {
        r.headers.get("x-portkey-trace-id", "")[-4:]
        for r in emulator.requests_to(route="batches.get")
    }
    assert traces == {"try1", "try2"}


def test_a_retry_returns_a_batch_that_completed_meanwhile(emulator, faulty, run_dag):
    outage_in_the_first_try(emulator)
    finish_when(emulator, lambda: len(emulator.requests_to(route="batches.cancel")) >= 1)
    result = run_dag("own_retry_sync", conn_id=faulty)
    assert result.states == {"create": "success"}
    assert len(emulator.requests_to(route="batches.create")) == 1
    assert result.xcoms["create"]["status"] == "completed"
    # The failed poll of try 1, and the one read of try 2 that found it completed.
    assert len(emulator.requests_to(route="batches.get")) == 2


def test_a_retry_submits_again_after_the_batch_was_cancelled(emulator, faulty, run_dag):
    emulator.add_fault("status", status=401, route="batches.get", times=1)  # try 1 cancels
    finish_when(emulator, lambda: len(emulator.requests_to(route="batches.create")) >= 2)
    result = run_dag("own_retry_sync", conn_id=faulty)
    assert result.states == {"create": "success"}
    first, second = _all_batches(emulator)
    assert len(emulator.requests_to(route="batches.create")) == 2
    assert emulator.get_batch(first)["status"] in {"cancelling", "cancelled"}
    assert result.xcoms["create"]["id"] == second
