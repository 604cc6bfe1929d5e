"""The sensor in poke, reschedule and deferrable mode, through real Airflow runs."""

from __future__ import annotations

import pytest

MODES = ["poke", "reschedule", "deferrable"]


@pytest.mark.parametrize("mode", MODES)
def test_batch_that_completes_releases_downstream(mode, emulator, run_dag, finish_after_polls):
    batch = emulator.add_batch(status="in_progress", hold=True)
    finish_after_polls(batch["id"], "completed", polls=2)
    result = run_dag(f"sensor_{mode}_wait", batch_id=batch["id"])
    assert result.state == "success"
    assert result.states == {"wait": "success", "downstream": "success"}
    assert result.xcoms["wait"]["id"] == batch["id"]
    assert result.xcoms["wait"]["status"] == "completed"
    assert result.xcoms["downstream"] == "completed"
    polls = emulator.requests_to(route="batches.get", batch_id=batch["id"])
    assert len(polls) >= 2
    assert not emulator.requests_to(route="batches.cancel")


@pytest.mark.parametrize("mode", MODES)
def test_batch_that_fails_fails_the_sensor(mode, emulator, run_dag, finish_after_polls):
    batch = emulator.add_batch(
        status="in_progress",
        hold=True,
        errors=[{"code": "invalid_json_line", "message": "bad line", "line": 3}],
    )
    finish_after_polls(batch["id"], "failed", polls=2)
    result = run_dag(f"sensor_{mode}_wait", batch_id=batch["id"])
    assert result.state == "failed"
    assert result.states["wait"] == "failed"
    assert result.states["downstream"] == "upstream_failed"
    assert "wait" not in result.xcoms


# Each mode reaches the timeout by its own path (poke and reschedule in execute, deferrable in
# execute_complete): each is run without either option and with both. Each option alone is
# run once, in poke mode, to show that neither brings the other.
TIMEOUTS = [
    *(
        pytest.param(mode, variant, wait_state, cancels, id=f"{variant}-{mode}")
        for mode in MODES
        for variant, wait_state, cancels in [
            ("plain", "failed", 0),
            ("soft_fail_cancel", "skipped", 1),
        ]
    ),
    pytest.param("poke", "soft_fail", "skipped", 0, id="soft_fail-poke"),
    pytest.param("poke", "cancel", "failed", 1, id="cancel-poke"),
]


@pytest.mark.parametrize(("mode", "variant", "wait_state", "cancels"), TIMEOUTS)
def test_batch_that_never_finishes_times_out(mode, variant, wait_state, cancels, emulator, run_dag):
    batch = emulator.add_batch(status="in_progress", hold=True)
    result = run_dag(f"sensor_{mode}_{variant}", batch_id=batch["id"])
    assert result.states["wait"] == wait_state
    assert result.states["downstream"] in {"upstream_failed", "skipped"}
    sent = emulator.requests_to(route="batches.cancel", batch_id=batch["id"])
    assert len(sent) == cancels
    expected = {"cancelling", "cancelled"} if cancels else {"in_progress"}
    assert emulator.get_batch(batch["id"])["status"] in expected


@pytest.mark.parametrize("mode", MODES)
def test_task_log_shows_where_the_batch_stands_and_its_status_changes(
    mode, emulator, run_dag, finish_after_polls, capfd
):
    batch = emulator.add_batch(status="in_progress", hold=True, total=4)
    finish_after_polls(batch["id"], "completed", polls=2)
    result = run_dag(f"sensor_{mode}_wait", batch_id=batch["id"])
    assert result.states["wait"] == "success"
    captured = capfd.readouterr()
    log = captured.out + captured.err
    assert f"Batch {batch['id']} is in_progress: " in log
    assert "/4 requests done (" in log
    # Poke mode and the trigger keep one PollLog for the whole wait and log the change itself;
    # each reschedule poke starts afresh and says where the batch stands.
    final = "is now completed (was in_progress)" if mode != "reschedule" else "is completed"
    assert f"Batch {batch['id']} {final}: " in log
