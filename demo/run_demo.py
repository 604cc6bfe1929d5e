"""`make demo`: the example DAGs through a real Airflow on SQLite, against a local Portkey.

Offline: a Portkey emulator on loopback stands for Portkey (behind the real open-source
gateway when Node.js and the gateway are installed), Airflow runs every example DAG with
``dag.test()`` (what ``airflow dags test`` runs) in a throw-away AIRFLOW_HOME, and a short
report says what each DAG did to each batch. Airflow's own log goes to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[1]
API_KEY = "pk-demo-0000"
PROVIDER_KEY = "sk-demo-0000"


class Report:
    """Writes to the terminal even while Airflow's output goes to the log file."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()


@contextlib.contextmanager
def output_to(log_path: Path) -> Iterator[TextIO]:
    """Send fd 1 and 2 (Airflow's noisy task logs) to a file; yield the real terminal."""
    sys.stdout.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(1), "w")
    saved_err = os.dup(2)
    with log_path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(terminal.fileno(), 1)
        os.dup2(saved_err, 2)
        os.close(saved_err)


@contextlib.contextmanager
def portkey(report: Report, use_gateway: bool) -> Iterator[tuple[Any, str, dict[str, Any]]]:
    """The emulator, behind the real gateway when possible; yields (emulator, url, extras)."""
    from airflow_portkey.testing import PortkeyEmulator

    gateway = None
    if use_gateway:
        try:
            from airflow_portkey.testing.gateway import Gateway, check_installation

            gateway = Gateway(check_installation()).start()
        except Exception as error:  # the demo still runs, directly against the emulator
            report.line(f"  (real gateway not used: {error})")
            gateway = None
    mode = "upstream" if gateway else "hosted"
    # Batches take a few seconds, so the failing DAGs really find theirs running.
    lifecycle = {"validating_s": 0.5, "in_progress_s": 3.0, "finalizing_s": 0.5}
    with PortkeyEmulator(
        mode=mode, api_key=API_KEY, provider_api_key=PROVIDER_KEY, **lifecycle
    ) as emu:
        extras: dict[str, Any] = {"provider": "openai", "provider_api_key": PROVIDER_KEY}
        if gateway:
            extras["custom_host"] = emu.base_url
            report.line(f"  Portkey gateway (npm @portkey-ai/gateway) at {gateway.base_url}")
            report.line(f"  in front of the emulator (an OpenAI-style upstream) at {emu.base_url}")
            url = gateway.base_url
        else:
            report.line(f"  Portkey emulator (hosted mode) at {emu.base_url}")
            url = emu.base_url
        try:
            yield emu, url, extras
        finally:
            if gateway:
                gateway.stop()


# What the tasks said about their batches (the provider's wait and cancel log lines), taken
# from Airflow's log lines: "<time> [info     ] <message> [<logger>] loc=...".
_LOG_LINE = re.compile(r"^\S+ \[\w+\s*\] (?P<message>.*?) \[[\w.]+\]( loc=\S+)?$")
_BATCH_NEWS = re.compile(r"^(Batch \S+ (is |progress:|still |was already )|Cancel requested)")


def batch_news(log_text: str) -> list[str]:
    """The status changes, progress and cancel lines a DAG run's tasks logged, in order."""
    lines = []
    for line in log_text.splitlines():
        match = _LOG_LINE.match(line.strip())
        if match and _BATCH_NEWS.match(match["message"]):
            lines.append(match["message"])
    return lines


def run_dags(report: Report, emu: Any, log_path: Path) -> list[dict[str, Any]]:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.resetdb()
    bag = DagBag(str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"example DAGs failed to import: {bag.import_errors}")

    def batches_to_cancel() -> dict[str, Any]:
        # Seeded just before their DAG runs, so that "since it was created" in its log is
        # that run's time, not the whole demo's.
        running = [emu.add_batch(status="in_progress", hold=True)["id"] for _ in range(2)]
        finished = emu.add_batch(status="completed", hold=True)["id"]
        return {"batch_ids": [*running, finished]}

    plan: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
        ("portkey_batch_lifecycle", dict, "create, wait (deferrable), fetch results"),
        ("portkey_cancel_on_failure_teardown", dict, "work fails; the teardown cancels"),
        ("portkey_cancel_on_failure_notifier", dict, "work fails; the callback cancels"),
        ("portkey_cancel_batches", batches_to_cancel, "cancel given ids, wait until stopped"),
    ]
    runs = []
    for dag_id, make_conf, what in plan:
        conf = make_conf()
        emu.clear_requests()
        started = time.monotonic()
        log_start = log_path.stat().st_size
        dag_run = bag.get_dag(dag_id).test(run_conf=conf)
        runs.append(describe_run(dag_id, what, dag_run, emu, time.monotonic() - started))
        sys.stdout.flush()
        sys.stderr.flush()
        with log_path.open("rb") as log:
            log.seek(log_start)
            runs[-1]["news"] = batch_news(log.read().decode("utf-8", "replace"))
    return runs


def describe_run(dag_id: str, what: str, dag_run: Any, emu: Any, seconds: float) -> dict[str, Any]:
    from airflow.utils.session import create_session

    from airflow_portkey._core.trace import trace_from_context

    tasks = []
    with create_session() as session:
        tis = sorted(dag_run.get_task_instances(session=session), key=lambda ti: ti.start_date or 0)
        for ti in tis:
            # The trace id the task's requests carried (the gateway does not pass x-portkey-*
            # headers upstream, so it is derived here exactly as the hook derives it).
            trace_id, _ = trace_from_context({"ti": ti})
            tasks.append((ti.task_id, str(getattr(ti.state, "value", ti.state)), trace_id))
    batches: dict[str, dict[str, Any]] = {}
    for request in emu.requests:
        if request.batch_id:
            entry = batches.setdefault(request.batch_id, {"cancels": 0})
            entry["cancels"] += request.route == "batches.cancel"
    for batch_id, entry in batches.items():
        entry["status"] = emu.get_batch(batch_id)["status"]
    return {
        "dag_id": dag_id,
        "what": what,
        "state": str(getattr(dag_run.state, "value", dag_run.state)),
        "tasks": tasks,
        "batches": batches,
        "seconds": seconds,
    }


def print_report(report: Report, runs: list[dict[str, Any]]) -> None:
    for run in runs:
        report.line()
        report.line(f"DAG {run['dag_id']}: {run['state'].upper()} in {run['seconds']:.1f}s")
        report.line(f"  ({run['what']})")
        for task_id, state, trace_id in run["tasks"]:
            report.line(f"  task {task_id:<22} {state:<8} trace id {trace_id}")
        for batch_id, entry in run["batches"].items():
            if entry["cancels"]:
                why = (
                    "cancel sent: the run failed while it was still running"
                    if run["state"] == "failed"
                    else "cancel sent on request"
                )
                if entry["status"] == "completed":
                    why = "cancel sent, refused by Portkey (already completed): left alone"
            else:
                why = "not cancelled"
            report.line(f"  batch {batch_id}: {entry['status']} ({why})")
        if run.get("news"):
            report.line("  what the tasks logged about their batches:")
            for line in run["news"]:
                report.line(f"    {line}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-gateway", action="store_true", help="talk to the emulator directly")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="airflow-portkey-demo-"))
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "PORTKEY_EXAMPLE_POLL_SECONDS": "0.5",
        }
    )
    # Ctrl-C and SIGTERM unwind through the finally blocks, which stop the gateway.
    signal.signal(signal.SIGTERM, _interrupt)
    log_path = home / "airflow-demo.log"
    report = Report(sys.stdout)
    report.line("airflow-portkey demo: example DAGs in a real Airflow on SQLite, offline")
    report.line(f"  Airflow home {home} (log: {log_path})")
    started = time.monotonic()
    try:
        with portkey(report, use_gateway=not args.no_gateway) as (emu, url, extras):
            os.environ["AIRFLOW_CONN_PORTKEY_DEFAULT"] = json.dumps(
                {"conn_type": "portkey", "host": url, "password": API_KEY, "extra": extras}
            )
            with output_to(log_path) as terminal:
                report = Report(terminal)
                runs = run_dags(report, emu, log_path)
            report = Report(sys.stdout)
            print_report(report, runs)
    except KeyboardInterrupt:
        report.line("interrupted; everything the demo started has been stopped")
        return 130
    expected = {
        "portkey_batch_lifecycle": "success",
        "portkey_cancel_on_failure_teardown": "failed",
        "portkey_cancel_on_failure_notifier": "failed",
        "portkey_cancel_batches": "success",
    }
    surprises = [r["dag_id"] for r in runs if expected[r["dag_id"]] != r["state"]]
    report.line()
    report.line(
        f"Done in {time.monotonic() - started:.0f}s. The two 'failed' runs fail on purpose."
    )
    if surprises:
        report.line(f"UNEXPECTED outcome for: {', '.join(surprises)} (see {log_path})")
        return 1
    shutil.rmtree(home / "logs", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
