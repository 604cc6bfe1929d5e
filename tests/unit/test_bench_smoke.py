"""The benchmarks still run: each bench/ script in --smoke mode, as a subprocess.

The six start together (most of a smoke run is a process importing Airflow, and the machine
has two cores), then each test waits for its own and checks the figures it printed.
Smoke mode needs no baselines environment and writes no docs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
TIMEOUT_S = 180
# Every process of this module's smoke runs inherits this variable: how the test finds any
# emulator they leave behind.
RUN_TAG = "PORTKEY_BENCH_SMOKE_RUN"

NUMBER = r"[0-9]+(?:\.[0-9]+)?"
# A percentile of lateness over a short smoke window that held no poll or tick: on a loaded
# machine that happens, and says nothing of the code (the CPU and poll columns stay numbers).
LATENESS = rf"(?:-?{NUMBER}|nan)"
VERDICT = r"(?:MET|MISSED) \(.+\)"

# What each script must print: a line for every figure, a verdict for every goal.
EXPECTED: dict[str, list[str]] = {
    "bench_triggerer.py": [
        *(
            rf"^{variant} \| {transport} \| 20 \| [0-9]+ \([0-9]+%\) \| {NUMBER} \| {NUMBER} \| "
            rf"-?{NUMBER} \| {LATENESS} \| {NUMBER}% \| {LATENESS} \| {NUMBER} \| {NUMBER}$"
            for variant, transport in (
                ("provider", "http"),
                ("floor", "http"),
                ("thread", "http"),
                # Hosted Portkey is HTTPS only: the same waits against the emulator over TLS.
                ("provider", "https"),
                ("floor", "https"),
                ("thread", "https"),
            )
        ),
        rf"^tracemalloc, bytes held per waiting trigger \(n=20\): provider -?{NUMBER} KiB",
        rf"^n=20: CPU per poll provider/floor = {NUMBER}x, thread/provider = {NUMBER}x$",
        rf"^GOAL triggerer CPU within 1\.3x the floor at 20: {VERDICT}$",
        rf"^GOAL triggerer memory <= 16\.5 KiB per waiting trigger at 20: {VERDICT}$",
        rf"^n=20 \(TLS\): CPU per poll provider/floor = {NUMBER}x, thread/provider = {NUMBER}x$",
        rf"^GOAL triggerer memory <= 52 KiB per waiting trigger at 20 \(TLS\): {VERDICT}$",
        rf"^GOAL triggerer CPU within 1\.3x the floor at 20 \(TLS\): {VERDICT}$",
        rf"^GOAL triggerer CPU >=3x less than the thread pattern at 20 \(TLS\): {VERDICT}$",
        rf"^GOAL p99 event-loop lag < 50 ms at 20: {VERDICT}$",
        r"^BENCH triggerer done$",
    ],
    "bench_detection.py": [
        rf"^detection latency, poll interval 0\.2 s, 3 samples: median {NUMBER} ms, "
        rf"p95 {NUMBER} ms, max {NUMBER} ms",
        rf"^GOAL detection <= poll interval \+ 50 ms: {VERDICT}$",
        r"^BENCH detection done$",
    ],
    "bench_cancel.py": [
        *(
            rf"^cancel 30 running batches, 16 in flight \({where}\), median of runs:$"
            for where in ("loopback, no added latency", "20 ms per cancel")
        ),
        *(
            rf"^  {method} +{NUMBER} s  \({NUMBER} ms/batch; runs .*30 cancels \+ [0-9]+ other"
            for method in ("operator", "raw", "one_by_one")
        ),
        rf"^  operator/raw = {NUMBER}x; one-by-one/operator = {NUMBER}x$",
        r"^  checked: every batch cancelling or cancelled, exactly 30 cancel requests per run$",
        *(
            rf"^GOAL cancel fan-out {goal} \({where}\): {VERDICT}$"
            for goal in (r"within 1\.2x raw aiohttp", ">=5x faster than one by one")
            for where in ("loopback", "20 ms latency")
        ),
        r"^BENCH cancel done$",
    ],
    "bench_import.py": [
        r"^\(smoke: one sample; baselines skipped",
        rf"^  operator \+ sensor +{NUMBER} ms  \(min {NUMBER}, max {NUMBER}\)$",
        rf"^  operator +{NUMBER} ms",
        rf"^  sensor, after the operator +{NUMBER} ms",
        rf"^  \(for scale: `from airflow\.sdk import DAG` itself: {NUMBER} s, project venv\)$",
        rf"^GOAL DAG parse cost <= 30 ms: {VERDICT}$",
        r"^BENCH import done$",
    ],
    "bench_overhead.py": [
        *(
            rf"^  {re.escape(call)} +{NUMBER} us wall +{NUMBER} us CPU$"
            for call in (
                "hook.get_batch",
                "requests.Session.get",
                "hook.aget_batch",
                "aiohttp.ClientSession.get",
            )
        ),
        *(rf"^  {path}: hook/raw = {NUMBER}x wall, {NUMBER}x CPU$" for path in ("sync", "async")),
        *(
            rf"^GOAL per-call overhead within 1\.15x \({path}\): {VERDICT}$"
            for path in ("sync", "async")
        ),
        r"^BENCH overhead done$",
    ],
    "bench_ratelimit.py": [
        *(
            rf"^waits {mode}: n=16, [0-9]+ requests in [0-9]+ s, [0-9]+ refused \({NUMBER}%\)$"
            for mode in ("today", "hold", "cap")
        ),
        rf"^detection under the cap: 4 of 4 detected, median {NUMBER} s, max {NUMBER} s, "
        rf"bound {NUMBER} s",
        rf"^CPU per poll, 2 waits at 0\.1 s, no limit: budget off {NUMBER} us, cap {NUMBER} us",
        rf"^shared reads: 16 waits on 2 batches, {NUMBER} requests per interval",
        *(
            rf"^cancel {mode}: 36 of 36 cancelled, [0-9]+ requests, [0-9]+ refused"
            for mode in ("today", "cap")
        ),
        rf"^GOAL refused <= 1% of requests, 16 waits at 30 req/s: {VERDICT}$",
        rf"^GOAL completion detected within interval \+ N/cap \(\+0\.5 s\): {VERDICT}$",
        rf"^GOAL CPU per poll with the cap within 1\.25x of no budget: {VERDICT}$",
        rf"^GOAL 16 waits on 2 batches: about 2 requests per interval: {VERDICT}$",
        rf"^GOAL cancel fan-out of 36 at 30 req/s: all cancelled, refused <= 1%: {VERDICT}$",
        r"^BENCH ratelimit done$",
    ],
}


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    output: Path
    figures: Path
    tag: str


def tagged_emulators(tag: str) -> list[int]:
    """The live emulator processes whose environment carries RUN_TAG=tag."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            b"airflow_portkey.testing" in cmdline
            and f"{RUN_TAG}={tag}".encode() in environ
            and state not in ("Z", "X")
        ):
            found.append(int(proc.name))
    return found


def start_runs(tmp: Path) -> dict[str, Run]:
    """Start every script's smoke run."""
    # A clean environment: no AIRFLOW_* settings of the test run leak into the benchmarks.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env[RUN_TAG] = uuid.uuid4().hex
    started: dict[str, Run] = {}
    for script in EXPECTED:
        output, figures = tmp / f"{script}.out", tmp / f"{script}.json"
        with output.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, str(BENCH / script), "--smoke", "--json", str(figures)],
                cwd=REPO,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        started[script] = Run(proc, output, figures, env[RUN_TAG])
    return started


def stop_runs(started: dict[str, Run]) -> None:
    for run in started.values():
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    started = start_runs(tmp_path_factory.mktemp("bench-smoke"))
    try:
        yield started
    finally:
        stop_runs(started)


@pytest.mark.parametrize("script", list(EXPECTED))
def test_smoke_run_prints_its_figures(runs: dict[str, Run], script: str) -> None:
    run = runs[script]
    try:
        code = run.proc.wait(TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        pytest.fail(f"{script} --smoke did not finish in {TIMEOUT_S}s")
    text = run.output.read_text(errors="replace")
    assert code == 0, f"{script} --smoke exited {code}:\n{text[-4000:]}"
    lines = text.splitlines()
    for pattern in EXPECTED[script]:
        assert any(re.search(pattern, line) for line in lines), (
            f"{script} printed no line matching {pattern!r}:\n{text[-4000:]}"
        )
    figures = json.loads(run.figures.read_text())
    assert figures["goals"], "the JSON figures name the goals"
    assert all(isinstance(g["met"], bool) for g in figures["goals"])
    assert figures["markdown"].strip()


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_smoke_runs_leave_no_emulator_behind(runs: dict[str, Run]) -> None:
    # Runs that overran were killed by the test above (SIGKILL, no cleanup in them): their
    # emulators must exit too, as they follow the pipe their launcher held.
    stop_runs(runs)
    tag = next(iter(runs.values())).tag
    deadline = time.monotonic() + 30
    while (left := tagged_emulators(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        os.kill(pid, 9)
    assert left == [], f"emulators {left} outlived their smoke runs"
