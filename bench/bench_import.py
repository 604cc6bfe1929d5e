"""Benchmark 4, DAG parse cost: what importing this provider adds to a DAG file.

Measured after ``from airflow.sdk import DAG`` (every DAG file imports it first), each sample
in a brand-new interpreter (see _import_probe.py), median of the samples (the first may
also write bytecode caches; the median leaves it out). One sample times
the operator's import, then the sensor's on top, so their sum is the pair's cost.
Baselines, measured the same way with the baselines virtual environment
(bench/.venv-baselines, built by ``make bench``; the same Airflow version):
``airflow.providers.openai.operators.openai`` and ``portkey_ai``, each in its own samples.
Compiled bytecode is kept, as an installed package has it (_common.use_bytecode_cache).
Goal: the provider's operator and sensor together in 30 ms or less.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import _common as c

GOAL_MS = 30.0
PROBE = c.BENCH_DIR / "_import_probe.py"
OWN = [
    ["operator", "from airflow_portkey.operators.batch import PortkeyCancelBatchOperator"],
    ["sensor, after the operator", "from airflow_portkey.sensors.batch import PortkeyBatchSensor"],
]
BASELINES = {
    "airflow.providers.openai.operators.openai": [
        ["openai", "import airflow.providers.openai.operators.openai"]
    ],
    "portkey_ai": [["portkey_ai", "import portkey_ai"]],
}
PAIR = "operator + sensor"


def probe(python: str, steps: list[list[str]], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [python, str(PROBE), json.dumps(steps)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # not the checkout: the baselines must not see the provider
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{python} {PROBE.name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(smoke: bool) -> dict[str, Any]:
    repeats = 1 if smoke else 10
    baselines = None if smoke else c.baselines_python()
    if smoke:
        c.say("(smoke: one sample; baselines skipped, they need bench/.venv-baselines)")
    elif not baselines:
        c.say("baselines skipped: bench/.venv-baselines is missing (make bench builds it)")
    jobs: list[tuple[str, str, list[list[str]]]] = [("project venv", sys.executable, OWN)]
    if baselines:
        jobs += [("baselines venv", baselines, steps) for steps in BASELINES.values()]
    samples: dict[str, list[float]] = {}
    dag_import: dict[str, list[float]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as home:
        env = {**os.environ, **c.airflow_env(None, home)}
        for _ in range(repeats):
            for where, python, steps in jobs:  # interleaved: slow moments hit every target
                timings = probe(python, steps, env)
                dag_import.setdefault(where, []).append(timings.pop("_dag_import"))
                if steps is OWN:
                    timings[PAIR] = sum(timings.values())
                for name, seconds in timings.items():
                    samples.setdefault(name, []).append(seconds)
    wall = time.perf_counter() - started
    med = {name: 1000 * c.median(values) for name, values in samples.items()}
    c.say(
        f"import time after `from airflow.sdk import DAG`, median of {repeats} new "
        f"interpreter(s) each ({wall:.0f}s in all):"
    )
    order = [PAIR, *(name for name in samples if name != PAIR)]
    for name in order:
        values = samples[name]
        c.say(
            f"  {name:27} {med[name]:8.1f} ms  (min {1000 * min(values):.1f}, "
            f"max {1000 * max(values):.1f})"
        )
    dag = {where: c.median(v) for where, v in dag_import.items()}
    for where, seconds in dag.items():
        c.say(f"  (for scale: `from airflow.sdk import DAG` itself: {seconds:.2f} s, {where})")
    ours = med[PAIR]
    for name in ("openai", "portkey_ai"):
        if name in med:
            c.say(f"  {PAIR} vs {name}: {c.ratio(ours, med[name]):.2f}x")
    goals = [
        {"name": "DAG parse cost <= 30 ms", "met": ours <= GOAL_MS, "detail": f"{ours:.1f} ms"}
    ]
    for g in goals:
        c.say(c.goal_line(g["name"], g["met"], g["detail"]))
    names = {
        "openai": "`import airflow.providers.openai.operators.openai`",
        "portkey_ai": "`import portkey_ai`",
    }
    rows = [
        (
            names.get(name, name),
            f"{med[name]:.1f}",
            f"{1000 * min(samples[name]):.1f}",
            f"{1000 * max(samples[name]):.1f}",
            f"{c.ratio(med[name], ours):.1f}" if name in names else "-",
        )
        for name in order
    ]
    markdown = "\n\n".join(
        [
            f"Import time after `from airflow.sdk import DAG`, median of {repeats} brand-new "
            "interpreters per row (`from airflow.sdk import DAG` itself took "
            + ", ".join(f"{s:.2f} s in the {w}" for w, s in dag.items())
            + ").",
            c.md_table(("import", "median ms", "min ms", "max ms", f"x {PAIR}"), rows),
            c.md_goals(goals),
        ]
    )
    c.say("BENCH import done")
    return {
        "markdown": markdown,
        "median_ms": med,
        "samples": samples,
        "dag_import_s": dag_import,
        "goals": goals,
    }


def main() -> int:
    args = c.parser(__doc__.splitlines()[0]).parse_args()
    c.say("Benchmark 4: DAG parse cost")
    c.write_json(args.json, run(args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
