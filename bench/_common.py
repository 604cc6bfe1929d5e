"""What every benchmark shares: the emulator in its own process, its control API, the
Airflow connection in an environment variable, statistics, and how results are handed on.

Only the standard library is imported here, so a worker process that imports this module
pays nothing before it starts measuring.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import http.client
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from airflow_portkey.testing.processes import EmulatorProcess

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
BASELINES_VENV = BENCH_DIR / ".venv-baselines"
PYCACHE = BENCH_DIR / ".pycache"
API_KEY = "pk-bench"
PROVIDER_API_KEY = "sk-bench"
CONN_ID = "portkey_default"


# -- processes -----------------------------------------------------------------------------


def use_bytecode_cache() -> None:
    """Let every process this one starts keep compiled bytecode.

    Installed packages normally come with their bytecode (pip compiles it), or Python writes
    it beside the sources at the first import, where every later process (the tests' too)
    finds it. An environment that sets PYTHONDONTWRITEBYTECODE would have every new process
    compile all of Airflow from source, which is not what a DAG file or a triggerer pays:
    there the cache lives under bench/ (PYTHONPYCACHEPREFIX), so nothing is written next to
    the sources.
    """
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        os.environ.setdefault("PYTHONPYCACHEPREFIX", str(PYCACHE))


# -- arguments and results -------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    use_bytecode_cache()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, no baselines venv")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    return p


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def say(line: str = "") -> None:
    print(line, flush=True)


def goal_line(name: str, met: bool, detail: str) -> str:
    return f"GOAL {name}: {'MET' if met else 'MISSED'} ({detail})"


# -- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# -- the Airflow side --------------------------------------------------------------------------


def conn_json(base_url: str, ca_file: str | None = None) -> str:
    """The bench connection; over HTTPS its verify extra names the emulator's CA file."""
    extra: dict[str, Any] = {"provider": "openai", "provider_api_key": PROVIDER_API_KEY}
    if ca_file:
        extra["verify"] = ca_file
    return json.dumps(
        {"conn_type": "portkey", "host": base_url, "password": API_KEY, "extra": extra}
    )


def airflow_env(base_url: str | None, home: str, ca_file: str | None = None) -> dict[str, str]:
    """Environment for a process that uses the provider against the emulator at base_url."""
    env = {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    if base_url is not None:
        env["AIRFLOW_CONN_PORTKEY_DEFAULT"] = conn_json(base_url, ca_file)
    return env


def use_airflow_env(base_url: str | None, ca_file: str | None = None) -> str:
    """Set the Airflow variables in this process (before Airflow is imported)."""
    home = os.environ.get("BENCH_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="airflow-portkey-bench-")
    for key, value in airflow_env(base_url, home, ca_file).items():
        if value:
            os.environ[key] = value
    return home


def bench_headers() -> dict[str, str]:
    """What the hook sends for the bench connection (checked against the hook in the benches)."""
    return {
        "x-portkey-api-key": API_KEY,
        "x-portkey-provider": "openai",
        "authorization": f"Bearer {PROVIDER_API_KEY}",
    }


# -- the emulator, in its own process --------------------------------------------------------


class Control:
    """A keep-alive client of the emulator's /_emulator/ API (blocking, standard library);
    over HTTPS when given the emulator's CA file."""

    def __init__(self, host: str, port: int, ca_file: str | None = None) -> None:
        self.host, self.port, self.ca_file = host, port, ca_file
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            if self._conn is None:
                if self.ca_file:
                    context = ssl.create_default_context(cafile=self.ca_file)
                    self._conn = http.client.HTTPSConnection(
                        self.host, self.port, timeout=60, context=context
                    )
                else:
                    self._conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self._conn.request(
                    method, "/_emulator/" + path, body=data, headers={"content-type": "json"}
                )
                response = self._conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"emulator {method} {path}: {response.status} {payload[:200]!r}")
            return json.loads(payload)
        raise AssertionError("unreachable")

    def seed(self, count: int, **kwargs: Any) -> list[str]:
        """Add `count` batches held in_progress; their ids."""
        ids: list[str] = []
        while len(ids) < count:
            chunk = min(2000, count - len(ids))
            data = self.call("POST", "batches", {"count": chunk, "status": "in_progress", **kwargs})
            ids.extend(b["id"] for b in data["data"])
        return ids

    def counts(self) -> dict[str, int]:
        return dict(self.call("GET", "counts"))

    def reset(self) -> None:
        self.call("POST", "reset", {})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Emulator(EmulatorProcess):
    """``python -m airflow_portkey.testing`` in a child process, checking keys like Portkey
    (:class:`airflow_portkey.testing.processes.EmulatorProcess`), counting requests only.

    With ``--tls`` among the arguments it serves HTTPS; ``ca_file`` is then the CA file to
    verify it with (None over plain HTTP).
    """

    def __init__(self, *extra_args: str) -> None:
        super().__init__(
            "--no-record",
            "--api-key",
            API_KEY,
            "--provider-api-key",
            PROVIDER_API_KEY,
            *extra_args,
            cwd=REPO,
        )

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.popen

    @property
    def transport(self) -> str:
        """The scheme it serves: "https" or "http"."""
        return "https" if self.ca_file else "http"

    def control(self) -> Control:
        return Control(self.host, self.port, self.ca_file)

    def cpu_seconds(self) -> float:
        """CPU time the emulator process has used so far (user + system)."""
        return process_cpu_seconds(self.pid)


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- worker processes --------------------------------------------------------------------------


def run_worker(
    script: Path, spec: dict[str, Any], *, env: dict[str, str], timeout: float, log: Path
) -> dict[str, Any]:
    """Run ``script --worker SPEC_FILE`` in a fresh process; its result is the JSON it writes.

    The worker's own output (Airflow's log lines) goes to `log`, as a task's would go to a
    log file, so that printing them on a terminal is not part of what is measured.
    """
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps({**spec, "result_path": str(result_path)}))
        with log.open("ab") as sink:
            proc = subprocess.run(
                [sys.executable, str(script), "--worker", str(spec_path)],
                env={**os.environ, **env},
                stdout=sink,
                stderr=sink,
                timeout=timeout,
                cwd=REPO,
                check=False,
            )
        text = result_path.read_text() if result_path.exists() else ""
        if proc.returncode != 0 or not text:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"worker {spec.get('kind')} exited {proc.returncode}:\n{tail}")
        return dict(json.loads(text))


def load_spec(path: str) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text()))


def finish_worker(spec: dict[str, Any], result: dict[str, Any]) -> None:
    Path(spec["result_path"]).write_text(json.dumps(result))


# -- the machine -------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(dist: str, python: str | None = None) -> str:
    if python is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(dist)
        except PackageNotFoundError:
            return "-"
    code = f"from importlib.metadata import version; print(version({dist!r}))"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "-"


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "-"


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "apache-airflow": _version("apache-airflow-core"),
        "apache-airflow-task-sdk": _version("apache-airflow-task-sdk"),
        "aiohttp": _version("aiohttp"),
        "requests": _version("requests"),
        "airflow-portkey": _version("airflow-portkey"),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def baselines_python() -> str | None:
    """The baselines venv's interpreter, when `make bench` has built it."""
    python = BASELINES_VENV / "bin" / "python"
    return str(python) if python.exists() else None


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    say(f"  ({label}: {time.perf_counter() - started:.1f}s)")


# -- markdown for docs/benchmarks.md ---------------------------------------------------------


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def md_goals(goals: Sequence[dict[str, Any]]) -> str:
    return md_table(
        ("goal", "measured", "verdict"),
        [(g["name"], g["detail"], "met" if g["met"] else "**missed**") for g in goals],
    )
