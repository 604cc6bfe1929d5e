"""Run every benchmark and write docs/benchmarks.md (``make bench``).

First builds bench/.venv-baselines, a throw-away virtual environment with the packages the
baselines need (apache-airflow-providers-openai and portkey-ai, on the project's own Airflow
version), so that the project's environment stays lean. Then runs each benchmark in its own
process, prints what it prints, and writes the figures with the machine they ran on.

``--smoke`` runs tiny sizes, skips the baselines environment and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

BENCHES = [
    ("triggerer", "bench_triggerer.py", "1. Triggerer scale"),
    ("detection", "bench_detection.py", "2. Detection latency"),
    ("cancel", "bench_cancel.py", "3. Cancel fan-out"),
    ("import", "bench_import.py", "4. DAG parse cost"),
    ("overhead", "bench_overhead.py", "5. Per-call overhead"),
    ("ratelimit", "bench_ratelimit.py", "6. Rate limits"),
]
DOC = c.REPO / "docs" / "benchmarks.md"
BASELINE_PACKAGES = ("apache-airflow-providers-openai", "portkey-ai")


def baselines_venv() -> str:
    """Build (or reuse) bench/.venv-baselines; returns what it holds."""
    airflow = c.machine_info()["apache-airflow"]
    wanted = [f"apache-airflow=={airflow}", *BASELINE_PACKAGES]
    venv = c.BASELINES_VENV
    marker = venv / ".bench-ready"
    if marker.exists() and marker.read_text() == json.dumps(wanted):
        return describe_baselines()
    c.say(f"building {venv.relative_to(c.REPO)} with {' '.join(wanted)} ...")
    started = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv:
        cmd = [uv, "pip", "install", "--quiet", "--python", python, *wanted]
    else:
        cmd = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *wanted]
    subprocess.run(cmd, check=True)
    marker.write_text(json.dumps(wanted))
    c.say(f"  built in {time.perf_counter() - started:.0f}s")
    return describe_baselines()


def describe_baselines() -> str:
    python = c.baselines_python()
    assert python is not None
    names = ("apache-airflow-core", *BASELINE_PACKAGES)
    return ", ".join(f"{n} {c._version(n, python)}" for n in names)


def run_bench(script: str, smoke: bool, out: Path) -> tuple[int, dict[str, Any] | None, float]:
    cmd = [sys.executable, str(c.BENCH_DIR / script), "--json", str(out)]
    if smoke:
        cmd.append("--smoke")
    started = time.perf_counter()
    code = subprocess.run(cmd, cwd=c.REPO, check=False).returncode
    elapsed = time.perf_counter() - started
    data = json.loads(out.read_text()) if code == 0 and out.exists() else None
    return code, data, elapsed


def write_doc(
    machine: dict[str, Any],
    baselines: str,
    results: dict[str, dict[str, Any] | None],
    loads: tuple[str, str],
    wall: float,
) -> None:
    goals = [g for r in results.values() if r for g in r["goals"]]
    met = sum(1 for g in goals if g["met"])
    parts = [
        "# Benchmarks",
        "Written by `make bench` (bench/run_all.py); every ratio compares figures measured in "
        "the same run on the same machine. Do not edit by hand: run `make bench` again.",
        "## Machine",
        c.md_table(
            ("", ""),
            [
                ("date", machine["date"]),
                ("CPU", machine["cpu"]),
                ("cores", machine["cores"]),
                ("Python", machine["python"]),
                ("platform", machine["platform"]),
                ("Apache Airflow", machine["apache-airflow"]),
                ("Airflow task SDK", machine["apache-airflow-task-sdk"]),
                ("aiohttp / requests", f"{machine['aiohttp']} / {machine['requests']}"),
                ("baselines venv", baselines),
                ("load average (1, 5, 15 min) at start / end", f"{loads[0]} / {loads[1]}"),
                ("whole run", f"{wall / 60:.1f} min"),
            ],
        ),
        "The machine is shared and noisy: the load average shows how busy it was.",
        f"## Goals: {met} of {len(goals)} met",
        c.md_goals(goals),
    ]
    for key, _, title in BENCHES:
        parts.append(f"## {title}")
        result = results.get(key)
        parts.append(result["markdown"] if result else "_Did not run to the end in this run._")
    parts += [
        "## How",
        "\n".join(
            [
                "- Everything talks to the Portkey emulator (`python -m airflow_portkey.testing"
                " --no-record`) in a process of its own, over loopback, with the Airflow "
                "connection in `AIRFLOW_CONN_PORTKEY_DEFAULT`. Compiled bytecode is kept, as "
                "an installed package has it (in bench/.pycache where `PYTHONDONTWRITEBYTECODE` "
                "is set).",
                "- 1: CPU is the waiting process's own CPU time over the measured window, "
                "divided by the polls the emulator counted in it. The floor is raw aiohttp: "
                "every wait polls through one shared `ClientSession` (`trust_env=False`, one "
                "SSL context), the least a poller on the provider's own library can do. "
                "`thread` is `asyncio.to_thread(requests.get)` per poll. Transport `https`: "
                "every variant again against the emulator serving TLS (`--tls`, a throw-away "
                "CA each variant verifies against), since hosted Portkey is HTTPS only: "
                "`requests.get` then pays a TCP and TLS handshake per poll, the others reuse "
                "pooled connections; goals marked (TLS). On plain loopback HTTP a blocking "
                "call is cheap enough that the thread ratio is reported, with no goal. Memory "
                "per waiting trigger is the RSS growth over the run divided by the waits, "
                "against the provider's figures before its async path moved to aiohttp "
                "(16.5 KiB plain, 52 KiB TLS). Every variant runs in a process that has "
                "imported Airflow, as a triggerer has. Lag is how late a 10 ms ticker on the "
                "same loop wakes; a poll is on time when its request starts within 100 ms of "
                "its schedule. A variant that made fewer than 90% of its scheduled polls fell "
                "behind: the provider falling behind misses its goals; a baseline falling "
                "behind is named beside the goal.",
                "- 3: on loopback the emulator answers at once, so only CPU limits either way; "
                "the second scenario has the emulator answer each cancel after 20 ms, a "
                "stand-in for a real API's round trip.",
                "- 6: one process runs every scenario, each on a fresh event loop, against "
                "the emulator started with `--rate-limit 50` (a bucket of one second's requests "
                "per key, refilled continuously; 429 with `Retry-After: 1`). `today` turns the "
                "shared budget off (each wait backs off alone, as before it existed). Refused % "
                "= 429 answers / requests the emulator received. Between scenarios the bucket "
                "refills. CPU per poll compares the cap with no budget at the same rate (80% of "
                "the cap, no limit), and reports the 1,000 waits held to the cap over their "
                "second round (the first opens one connection per wait).",
                "- 4: every sample is a new interpreter that imports `airflow.sdk`'s DAG, then "
                "the target (forking one process that has done the first import instead reads "
                "about 40% higher here: copy-on-write faults).",
                "- Source: `bench/`; each script takes `--smoke` for a quick check.",
            ]
        ),
    ]
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n\n".join(parts) + "\n")
    c.say(f"wrote {DOC.relative_to(c.REPO)}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes; no baselines venv; no doc")
    p.add_argument("--only", nargs="+", choices=[k for k, _, _ in BENCHES])
    p.add_argument("--no-doc", action="store_true", help="do not write docs/benchmarks.md")
    args = p.parse_args()
    c.use_bytecode_cache()
    started = time.perf_counter()
    machine = c.machine_info()
    load_start = c.load_average()
    c.say(
        f"{machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"Airflow {machine['apache-airflow']}, load {load_start}"
    )
    baselines = "not built (smoke)" if args.smoke else baselines_venv()
    results: dict[str, dict[str, Any] | None] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        for key, script, title in BENCHES:
            if args.only and key not in args.only:
                continue
            c.say(f"\n=== {title} ===")
            code, data, elapsed = run_bench(script, args.smoke, Path(tmp) / f"{key}.json")
            c.say(f"=== {title}: exit {code}, {elapsed:.0f}s ===")
            results[key] = data
            if code != 0:
                failed.append(key)
    wall = time.perf_counter() - started
    goals = [g for r in results.values() if r for g in r["goals"]]
    c.say(f"\n{sum(g['met'] for g in goals)} of {len(goals)} goals met; {wall / 60:.1f} min")
    for g in goals:
        c.say(c.goal_line(g["name"], g["met"], g["detail"]))
    if not args.smoke and not args.no_doc and not args.only:
        write_doc(machine, baselines, results, (load_start, c.load_average()), wall)
    if failed:
        c.say(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
