"""Tier 4 harness: the emulator and Airflow's own processes on loopback, each in its own
process group, plus small HTTP clients for the emulator's control API and Airflow's REST API.

Every process starts in the run's own folder with ``PORTKEY_DEPLOY_RUN=<marker>`` in its
environment. Children inherit both, the task processes that Airflow puts into process groups of
their own too, so the final sweep finds whatever is left of the run and nothing else on the
machine (see ``processes_of_run``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from airflow_portkey.testing.processes import EmulatorProcess

T = TypeVar("T")

DAG_SOURCES = Path(__file__).resolve().parent / "dags"
VENV_BIN = Path(sys.executable).parent
RUN_MARKER_VAR = "PORTKEY_DEPLOY_RUN"
# Every wait ends by this monotonic time at the latest, so that a stuck run still ends (and
# cleans up) within the tier's budget of 10 minutes. The session fixture sets it.
BUDGET = {"deadline": float("inf")}
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


class DeploymentError(AssertionError):
    pass


class UnexpectedState(DeploymentError):
    """A task reached a state the test did not expect: fail now rather than at the deadline."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str,
    probe: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.5,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``
    (or when the session's time budget runs out, whichever comes first)."""
    start = time.monotonic()
    deadline = min(start + timeout, BUDGET["deadline"])
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except UnexpectedState:
            raise
        except Exception as error:  # a component still starting: keep trying until the deadline
            last_error = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = "\n" + diagnose() if diagnose else ""
            budget_ran_out = deadline < start + timeout
            why = "the session's time budget ran out" if budget_ran_out else f"{timeout:.0f}s"
            raise DeploymentError(f"timed out ({why}) waiting for {what}{detail}{extra}")
        time.sleep(interval)


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")[:2000]
        raise DeploymentError(f"{method} {url} -> HTTP {error.code}: {detail}") from None
    return json.loads(raw) if raw.strip() else None


# -- processes -----------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def start_process(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    """Start ``argv`` as the leader of a new session and process group, output to a log file."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with killpg, children too
            cwd=log_dir,
        )
    return Proc(name, popen, log_path)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def cpu_seconds(pgid: int) -> float:
    """CPU time of a process group's live members, with the children they have reaped
    (a LocalExecutor worker reaps its task processes, so their CPU counts here)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in group_members(pgid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / tick


def stop_groups(procs: list[Proc], *, grace: float = 20.0) -> None:
    """SIGTERM each process group, wait for them to empty, then SIGKILL what is left."""
    for proc in procs:
        _killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for proc in procs:
            proc.popen.poll()
        if not any(group_members(proc.pid) for proc in procs):
            break
        time.sleep(0.2)
    for proc in procs:
        _killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=10)


def stop_group(proc: Proc, *, grace: float = 20.0) -> None:
    stop_groups([proc], grace=grace)


def kill_group_now(proc: Proc) -> None:
    """SIGKILL the whole process group at once, as a crashed host would lose it."""
    _killpg(proc.pid, signal.SIGKILL)
    proc.popen.wait(timeout=10)
    wait_for(
        f"process group of {proc.name} to vanish", lambda: not group_members(proc.pid), timeout=10
    )


def processes_of_run(marker: str, root: Path) -> dict[int, str]:
    """pid -> command line of every live process of this run.

    A process belongs to the run when its environment carries the run marker or its working
    directory lies under the run's folder (every process starts there and Airflow's never
    leave it). Both are needed: ``setproctitle``, which Airflow calls in its workers and task
    processes, writes the process title over the memory that /proc/<pid>/environ shows.
    """
    needle = f"{RUN_MARKER_VAR}={marker}".encode()
    root = root.resolve()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "Z":
                continue  # a zombie waiting for its parent to reap it: nothing runs
            ours = needle in (entry / "environ").read_bytes().split(b"\0")
            if not ours:
                cwd = Path(os.readlink(entry / "cwd"))
                ours = cwd == root or root in cwd.parents
            if ours:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                found[int(entry.name)] = cmdline.decode(errors="replace").strip()
    return found


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp{,6} print addresses as 32-bit words in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return socket.inet_ntop(socket.AF_INET, words)
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_sockets(pids: Iterable[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket that these processes listen on."""
    owner: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        owner[target[8:-1]] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in owner:  # 0A: LISTEN
                    continue
                address, port = fields[1].split(":")
                found.append((owner[fields[9]], _decode_address(address), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    return (
        address.startswith("127.")
        or address in ("::1", "::ffff:127.0.0.1")
        or (address.startswith("::ffff:127."))
    )


def belongs_to_run(pid: int, root: Path) -> bool:
    with contextlib.suppress(OSError):
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        return cwd == root.resolve() or root.resolve() in cwd.parents
    return False


# -- the emulator ---------------------------------------------------------------------------


class Emulator:
    """The Portkey emulator as a separate process, driven through /_emulator/."""

    API_KEY = "pk-deploy"
    PROVIDER_KEY = "sk-deploy"

    def __init__(self, proc: Proc, root_url: str) -> None:
        self.proc = proc
        self.root_url = root_url
        self.base_url = root_url + "/v1"

    @classmethod
    def start(cls, env: dict[str, str], log_dir: Path) -> Emulator:
        process = EmulatorProcess(
            "--api-key",
            cls.API_KEY,
            "--provider-api-key",
            cls.PROVIDER_KEY,
            env=env,
            log_path=log_dir / "emulator.log",
            python=sys.executable,
        )
        try:
            process.start(timeout=30)
        except (RuntimeError, TimeoutError) as error:
            raise DeploymentError(f"the emulator did not start: {error}") from None
        assert process.popen is not None
        return cls(Proc("emulator", process.popen, process.log_path), process.root_url)

    def connection_json(self) -> str:
        return json.dumps(
            {
                "conn_type": "portkey",
                "host": self.base_url,
                "password": self.API_KEY,
                "extra": {"provider": "openai", "provider_api_key": self.PROVIDER_KEY},
            }
        )

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        return http_json(method, f"{self.root_url}/_emulator/{path}", body)

    def seed(self, count: int = 1, status: str = "in_progress") -> list[str]:
        """Seed held batches (they stay in ``status`` until told otherwise)."""
        answer = self._control("POST", "batches", {"count": count, "status": status, "hold": True})
        return [batch["id"] for batch in answer["data"]]

    def set_status(self, batch_id: str, status: str) -> dict[str, Any]:
        result: dict[str, Any] = self._control(
            "POST", "status", {"batch_id": batch_id, "status": status}
        )
        return result

    def batch(self, batch_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._control(
            "GET", "batches/" + urllib.parse.quote(batch_id, safe="")
        )
        return result

    def requests(
        self, route: str | None = None, batch_ids: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        wanted = None if batch_ids is None else set(batch_ids)
        return [
            r
            for r in self._control("GET", "requests")["data"]
            if (route is None or r["route"] == route)
            and (wanted is None or r["batch_id"] in wanted)
        ]

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = self._control("GET", "counts")
        return result


# -- Airflow --------------------------------------------------------------------------------


@dataclass
class Airflow:
    """Airflow's components as separate processes sharing one temporary AIRFLOW_HOME."""

    home: Path
    env: dict[str, str]
    port: int
    log_dir: Path
    procs: dict[str, Proc] = field(default_factory=dict)
    retired: list[Proc] = field(default_factory=list)
    _token: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def prepare(cls, root: Path, *, marker: str, parallelism: int = 4) -> Airflow:
        home = root / "airflow-home"
        dags = home / "dags"
        log_dir = root / "logs"
        for folder in (home, dags, log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for source in sorted(DAG_SOURCES.glob("*.py")):
            shutil.copy(source, dags / source.name)
        port = free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AIRFLOW", "PYTEST", "_AIRFLOW")) and k != "PYTHONPATH"
        }
        env.update(
            {
                RUN_MARKER_VAR: marker,
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "512",
                "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "512",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": "250",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
                "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
                "SCARF_ANALYTICS": "false",
                "DO_NOT_TRACK": "1",
                "PORTKEY_DEPLOY_LEDGER": str(root / "ledger.txt"),
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        return cls(home, env, port, log_dir)

    @property
    def ledger(self) -> Path:
        return Path(self.env["PORTKEY_DEPLOY_LEDGER"])

    def ledger_lines(self) -> list[str]:
        try:
            return self.ledger.read_text().splitlines()
        except FileNotFoundError:
            return []

    def migrate(self) -> None:
        log = self.log_dir / "db-migrate.log"
        with open(log, "wb") as out:
            done = subprocess.run(
                ["airflow", "db", "migrate"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                timeout=300,
                check=False,
            )
        if done.returncode != 0:
            raise DeploymentError(f"airflow db migrate failed:\n{log.read_text()[-4000:]}")

    def start(self, component: str) -> Proc:
        """Start ``airflow <component>`` (api-server, scheduler, triggerer, dag-processor)."""
        if component in self.procs and self.procs[component].alive():
            raise DeploymentError(f"{component} is already running")
        if component in self.procs:
            self.retired.append(self.procs.pop(component))
        suffix = f"-{len([p for p in self.retired if p.name.startswith(component)]) + 1}"
        argv = ["airflow", component]
        if component in ("scheduler", "triggerer"):
            # Their log servers listen on every interface at fixed ports (8793, 8794): they
            # would leave loopback and collide with other runs. The API server reads the task
            # and trigger logs from the shared local folder instead.
            argv.append("--skip-serve-logs")
        proc = start_process(component + suffix, argv, self.env, self.log_dir)
        self.procs[component] = proc
        return proc

    def stop_all(self) -> None:
        # The scheduler and the triggerer first, so no more work starts; the API server last,
        # since task processes talk to it while they wind down.
        first = [p for n, p in self.procs.items() if n != "api-server"] + self.retired
        stop_groups(first)
        stop_groups([p for n, p in self.procs.items() if n == "api-server"])

    def cpu_report(self) -> dict[str, float]:
        """CPU seconds used so far by each running component's process group."""
        return {name: round(cpu_seconds(p.pid), 1) for name, p in self.procs.items()}

    def check_alive(self) -> None:
        dead = {name: p for name, p in self.procs.items() if not p.alive()}
        if dead:
            raise DeploymentError(
                "Airflow component(s) exited: "
                + "; ".join(f"{n} (rc={p.popen.returncode}):\n{p.tail()}" for n, p in dead.items())
            )

    def diagnose(self) -> str:
        return "\n".join(
            f"--- {name} ({'alive' if p.alive() else f'rc={p.popen.returncode}'}) ---\n{p.tail(25)}"
            for name, p in self.procs.items()
        )

    # -- REST API v2 ------------------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            answer = http_json("GET", f"{self.api_url}/auth/token")
            self._token = str(answer["access_token"])
        return self._token

    def api(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        url = f"{self.api_url}/api/v2/{path.lstrip('/')}"
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        return http_json(method, url, body, headers={"Authorization": f"Bearer {self.token()}"})

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json("GET", f"{self.api_url}/api/v2/monitor/health")
        return result

    def wait_ready(self, dag_ids: Iterable[str], *, timeout: float = 240) -> float:
        """Wait until every component reports healthy and every DAG is parsed and unpaused."""
        start = time.monotonic()
        wanted = set(dag_ids)

        def healthy() -> bool:
            self.check_alive()
            health = self.health()
            return all(
                (health.get(part) or {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
            )

        wait_for(
            "Airflow components to be healthy",
            healthy,
            timeout=timeout,
            interval=1,
            diagnose=self.diagnose,
        )

        def parsed() -> bool:
            self.check_alive()
            errors = self.api("GET", "importErrors")
            if errors.get("total_entries"):
                raise DeploymentError(f"DAG import errors: {errors['import_errors']}")
            found = {d["dag_id"] for d in self.api("GET", "dags", limit=100)["dags"]}
            return wanted <= found

        remaining = max(10.0, timeout - (time.monotonic() - start))
        wait_for(
            f"DAGs {sorted(wanted)} to be parsed",
            parsed,
            timeout=remaining,
            interval=1,
            diagnose=self.diagnose,
        )
        for dag_id in wanted:
            self.api("PATCH", f"dags/{dag_id}", {"is_paused": False})
        return time.monotonic() - start

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        answer = self.api("POST", f"dags/{dag_id}/dagRuns", body)
        return str(answer["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")
        return result

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.api(
                "GET",
                f"dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                limit=100,
                offset=len(items),
            )
            items.extend(page["task_instances"])
            if len(items) >= page["total_entries"] or not page["task_instances"]:
                return items

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.api(
            "GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        )
        return result

    def count_mapped(self, dag_id: str, run_id: str, task_id: str, *states: str) -> int:
        """How many mapped instances of a task are in one of ``states`` (one cheap request)."""
        page = self.api(
            "GET",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/listMapped",
            state=list(states),
            limit=1,
        )
        return int(page["total_entries"])

    def wait_mapped(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        state: str,
        count: int,
        *,
        timeout: float,
        interval: float = 5.0,
    ) -> None:
        """Wait until ``count`` mapped instances are in ``state``; fail at once if one fails."""

        def probe() -> bool:
            self.check_alive()
            bad = self.count_mapped(dag_id, run_id, task_id, "failed", "upstream_failed")
            if bad:
                raise UnexpectedState(
                    f"{bad} instance(s) of {dag_id}.{task_id} failed while waiting for "
                    f"{count} to be {state}\n{self.diagnose()}"
                )
            return self.count_mapped(dag_id, run_id, task_id, state) >= count

        wait_for(
            f"{count} instances of {dag_id}.{task_id} to be {state}",
            probe,
            timeout=timeout,
            interval=interval,
            diagnose=self.diagnose,
        )

    def mark(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        return self.api(
            "PATCH",
            f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
            {"new_state": state},
        )

    def wait_states(
        self,
        dag_id: str,
        run_id: str,
        accept: Callable[[list[dict[str, Any]]], bool],
        what: str,
        *,
        timeout: float,
        interval: float = 1.0,
        forbid: Iterable[str] = ("failed", "upstream_failed"),
    ) -> list[dict[str, Any]]:
        forbidden = set(forbid)

        def probe() -> list[dict[str, Any]] | None:
            self.check_alive()
            tis = self.task_instances(dag_id, run_id)
            bad = [ti for ti in tis if ti["state"] in forbidden]
            if bad:
                raise UnexpectedState(
                    f"{dag_id}/{run_id}: {summarize(tis)} while waiting for {what}\n"
                    + self.diagnose()
                )
            return tis if accept(tis) else None

        def diagnose() -> str:
            try:
                tis = self.task_instances(dag_id, run_id)
                states = summarize(tis)
            except Exception as error:
                states = repr(error)
            return f"task states of {dag_id}/{run_id}: {states}\n{self.diagnose()}"

        return wait_for(what, probe, timeout=timeout, interval=interval, diagnose=diagnose)

    def executor_events(self, dag_id: str, run_id: str, task_id: str) -> int:
        """How many executor events the scheduler has processed for a task in a run.

        A deferring task's workload reports to the scheduler only after its process has exited,
        which can take seconds. Airflow 3.3.2 fails the task ("state changed externally") when
        that report arrives after the trigger has fired and the resumed task is already
        running under the same try number, so tests let it arrive before a batch finishes.
        """
        needle = f"TaskInstanceKey(dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}',"
        count = 0
        for log in self.log_dir.glob("scheduler-*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if "Received executor event with state" in line and needle in line:
                    count += 1
        return count

    def wait_run_state(
        self, dag_id: str, run_id: str, *, timeout: float, interval: float = 1.0
    ) -> str:
        final = {"success", "failed"}

        def probe() -> str | None:
            self.check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            return state if state in final else None

        return wait_for(
            f"DAG run {dag_id}/{run_id} to finish",
            probe,
            timeout=timeout,
            interval=interval,
            diagnose=self.diagnose,
        )


def summarize(tis: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """task id -> state -> count."""
    out: dict[str, dict[str, int]] = {}
    for ti in tis:
        per_task = out.setdefault(ti["task_id"], {})
        state = str(ti["state"])
        per_task[state] = per_task.get(state, 0) + 1
    return out


def by_task(tis: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [ti for ti in tis if ti["task_id"] == task_id]


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM (a CI job being cancelled) into KeyboardInterrupt so cleanup still runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Deployment:
    """What the tests get: the emulator, Airflow, and timings worth reporting."""

    def __init__(self, emulator: Emulator, airflow: Airflow, marker: str, root: Path) -> None:
        self.emulator = emulator
        self.airflow = airflow
        self.marker = marker
        self.root = root
        self.timings: dict[str, float] = {}
