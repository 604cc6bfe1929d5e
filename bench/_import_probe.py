"""Time one import after ``from airflow.sdk import DAG``, in this brand-new interpreter.

Run by bench_import.py, once per sample, with the interpreter of the virtual environment
under test (the project's, or the baselines'). argv: JSON list of [name, code] steps, run in
order. Prints JSON: name -> seconds, plus "_dag_import" (the ``from airflow.sdk import DAG``
that comes first, as in every DAG file).
"""

from __future__ import annotations

import time

_started = time.perf_counter()
from airflow.sdk import DAG  # noqa: E402, F401 - the import every DAG file starts with

_dag_import = time.perf_counter() - _started

import json  # noqa: E402
import sys  # noqa: E402


def main() -> None:
    timings = {"_dag_import": _dag_import}
    for name, code in json.loads(sys.argv[1]):
        started = time.perf_counter()
        exec(compile(code, "<import-target>", "exec"), {})
        timings[name] = time.perf_counter() - started
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
