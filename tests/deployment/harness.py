"""Tier 4 harness: Airflow as production runs it, on loopback. PostgreSQL (metadata database)
and Redis (Celery broker) from the Debian packages, Airflow's components (api-server,
scheduler with CeleryExecutor, dag-processor, two triggerers, two Celery workers) and the
emulator, each in a process group of its own, plus small HTTP clients for the emulator's
control API and Airflow's REST API.

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
import tempfile
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
# portkey_deploy_host: the hostname callable that names each component's "machine".
PYLIB = Path(__file__).resolve().parent / "pylib"
HOST_VAR = "PORTKEY_DEPLOY_HOST"
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
    # How stop_groups asks it to stop: PostgreSQL's postmaster wants SIGINT (fast shutdown)
    # and alone; its backends, sharing its group, must not get a signal of their own.
    stop_signal: signal.Signals = signal.SIGTERM
    signal_leader_only: bool = False

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


def start_process(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log_dir: Path,
    *,
    user: str | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``argv`` as the leader of a new session and process group, output to a log file
    (as ``user`` when given: PostgreSQL refuses to run as root)."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with killpg, children too
            cwd=cwd or log_dir,
            user=user,
            group=None if user is None else _primary_group(user),
        )
    return Proc(name, popen, log_path)


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def children_of(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (by parent pid), whatever its process group."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                if fields[0] != "Z":
                    parents[int(entry.name)] = int(fields[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


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
        if proc.signal_leader_only:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, proc.stop_signal)
        else:
            _killpg(proc.pid, proc.stop_signal)
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
    """SIGKILL the process group and every descendant at once, as a crashed host would lose
    them (Airflow's task processes run in process groups of their own)."""
    descendants = children_of(proc.pid)
    _killpg(proc.pid, signal.SIGKILL)
    for pid in descendants:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
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


def base_env(marker: str) -> dict[str, str]:
    """The environment of every process of the run: ours without Airflow's or pytest's
    settings, with the run marker and the venv's bin/ on PATH (Airflow starts its own
    processes by name)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "PYTEST", "_AIRFLOW")) and k != "PYTHONPATH"
    }
    env.update(
        {
            RUN_MARKER_VAR: marker,
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "SCARF_ANALYTICS": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
    )
    return env


# -- PostgreSQL and Redis -------------------------------------------------------------------


def postgres_bin(program: str) -> str:
    """A PostgreSQL server program: Debian keeps them in /usr/lib/postgresql/<ver>/bin,
    off PATH. The newest installed version wins; PATH is the fallback."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{program}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if versions:
        return str(versions[-1])
    found = shutil.which(program)
    if found is None:
        raise DeploymentError(
            f"PostgreSQL's {program} not found: apt-get install postgresql (.ci/run does)"
        )
    return found


def _service_user() -> str | None:
    """Who runs PostgreSQL: ``postgres`` when we are root (it refuses root), else ourselves."""
    return "postgres" if os.geteuid() == 0 else None


INITDB = ("-E", "UTF8", "--no-locale", "--no-sync")


@dataclass
class Postgres:
    """A fresh PostgreSQL cluster in a folder of the run, on a free loopback port, trusting
    local connections, without durability (fsync off): the metadata database of one run."""

    proc: Proc
    port: int
    database: str = "airflow"
    user: str = "airflow"

    @property
    def login(self) -> list[str]:
        return ["-U", self.user, self.database]

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @classmethod
    def start(cls, root: Path, env: dict[str, str], log_dir: Path) -> Postgres:
        owner = _service_user()
        folder = root / "postgres"
        data = folder / "data"
        folder.mkdir()
        if owner is not None:
            shutil.chown(folder, owner, owner)
        initdb = subprocess.run(
            [postgres_bin("initdb"), "-D", str(data), "-U", "airflow", "-A", "trust", *INITDB],
            env=env,
            user=owner,
            group=None if owner is None else _primary_group(owner),
            cwd=folder,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if initdb.returncode != 0:
            raise DeploymentError(f"initdb failed: {initdb.stderr.decode()[-2000:]}")
        port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(folder),
            "max_connections": "300",
            "shared_buffers": "128MB",
            # A throw-away cluster: durability costs disk syncs and buys nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        argv = [postgres_bin("postgres"), "-D", str(data), "-p", str(port)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        proc = start_process("postgres", argv, env, log_dir, user=owner, cwd=folder)
        proc.stop_signal, proc.signal_leader_only = signal.SIGINT, True
        server = cls(proc, port)

        def accepting() -> bool:
            if not proc.alive():
                raise DeploymentError(f"postgres exited:\n{proc.tail()}")
            ready = subprocess.run(
                [postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                capture_output=True,
                check=False,
            )
            return ready.returncode == 0

        wait_for("PostgreSQL to accept connections", accepting, timeout=60, interval=0.2)
        created = subprocess.run(
            [postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), *server.login],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise DeploymentError(f"createdb failed: {created.stderr.decode()[-2000:]}")
        return server


@dataclass
class Redis:
    """A Redis server on a free loopback port with a config of its own: no persistence."""

    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, root: Path, env: dict[str, str], log_dir: Path) -> Redis:
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(server).exists():
            raise DeploymentError("redis-server not found: apt-get install redis-server")
        folder = root / "redis"
        folder.mkdir()
        port = free_port()
        config = folder / "redis.conf"
        config.write_text(
            f"bind 127.0.0.1\nport {port}\nprotected-mode yes\ndaemonize no\n"
            f'dir {folder}\nsave ""\nappendonly no\nlogfile ""\ndatabases 1\n'
        )
        proc = start_process("redis", [server, str(config)], env, log_dir)

        def listening() -> bool:
            if not proc.alive():
                raise DeploymentError(f"redis exited:\n{proc.tail()}")
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        wait_for("Redis to answer PING", listening, timeout=30, interval=0.2)
        return cls(proc, port)


# -- the emulator ---------------------------------------------------------------------------


class Emulator:
    """The Portkey emulator as a separate process, driven through /_emulator/.

    Its keys are random per run, so that the secrets check can look for them in every log.
    Batches that a task creates stay ``in_progress`` until a test flips them.
    """

    def __init__(self, proc: Proc, root_url: str, api_key: str, provider_key: str) -> None:
        self.proc = proc
        self.root_url = root_url
        self.base_url = root_url + "/v1"
        self.API_KEY = api_key
        self.PROVIDER_KEY = provider_key

    @property
    def secrets(self) -> tuple[str, str]:
        return (self.API_KEY, self.PROVIDER_KEY)

    @classmethod
    def start(cls, env: dict[str, str], log_dir: Path) -> Emulator:
        api_key = "pk-deploy-" + secrets.token_hex(12)
        provider_key = "sk-deploy-" + secrets.token_hex(12)
        process = EmulatorProcess(
            "--api-key",
            api_key,
            "--provider-api-key",
            provider_key,
            "--in-progress-s",
            "86400",
            env=env,
            log_path=log_dir / "emulator.log",
            python=sys.executable,
        )
        try:
            process.start(timeout=30)
        except (RuntimeError, TimeoutError) as error:
            raise DeploymentError(f"the emulator did not start: {error}") from None
        assert process.popen is not None
        proc = Proc("emulator", process.popen, process.log_path)
        return cls(proc, process.root_url, api_key, provider_key)

    def connection(self, conn_id: str = "portkey_default") -> dict[str, Any]:
        """The connection as the REST API's POST /connections takes it."""
        return {
            "connection_id": conn_id,
            "conn_type": "portkey",
            "host": self.base_url,
            "password": self.API_KEY,
            "extra": json.dumps({"provider": "openai", "provider_api_key": self.PROVIDER_KEY}),
        }

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


class Components(dict[str, "Proc"]):
    """Process name -> process. A bare ``triggerer`` or ``worker`` means the first of them,
    as in a deployment that runs one."""

    def __missing__(self, name: str) -> Proc:
        if name in ("triggerer", "worker"):
            return self[f"{name}-1"]
        raise KeyError(name)


# The components of the distributed deployment, by process name.
TRIGGERERS = ("triggerer-1", "triggerer-2")
WORKERS = ("worker-1", "worker-2")
COMPONENTS = ("api-server", "dag-processor", "scheduler", *TRIGGERERS, *WORKERS)
WORKER_CONCURRENCY = 4


@dataclass
class Airflow:
    """Airflow's components as separate processes sharing one temporary AIRFLOW_HOME, with
    PostgreSQL as the metadata database and Redis as the Celery broker."""

    home: Path
    env: dict[str, str]
    port: int
    log_dir: Path
    procs: Components = field(default_factory=Components)
    retired: list[Proc] = field(default_factory=list)
    _token: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def prepare(
        cls,
        root: Path,
        *,
        marker: str,
        database_url: str,
        broker_url: str,
        parallelism: int = 16,
        log_dir: Path | None = None,
    ) -> Airflow:
        from cryptography.fernet import Fernet

        home = root / "airflow-home"
        dags = home / "dags"
        log_dir = log_dir or root / "logs"
        for folder in (home, dags, log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        for source in sorted(DAG_SOURCES.glob("*.py")):
            shutil.copy(source, dags / source.name)
        port = free_port()
        env = base_env(marker)
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "portkey_deploy_host.hostname",
                "PYTHONPATH": str(PYLIB),
                # Connections in the database are encrypted, as in production.
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2048",
                "AIRFLOW__CORE__DEFAULT_POOL_TASK_SLOT_COUNT": "2048",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "3",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "5",
                "AIRFLOW__CELERY__BROKER_URL": broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
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
                # A task whose worker died is failed (and retried) 60 s after its last
                # heartbeat, not 300 s.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                # A triggerer silent this long is dead: the other one takes its triggers.
                # Airflow's default; lower is unsafe: a triggerer's main loop stalls for
                # 15-20 s on a loaded 2-core machine when its first trigger arrives, and the
                # triggerer whose triggers were taken calls their on_kill (docs/deployment.md).
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "30",
                # Small bites, so that both triggerers take a share of a burst of deferrals.
                "AIRFLOW__TRIGGERER__MAX_TRIGGER_TO_SELECT_PER_LOOP": "50",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
                "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
                "PORTKEY_DEPLOY_LEDGER": str(root / "ledger.txt"),
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

    def start(self, name: str) -> Proc:
        """Start a component by its process name: ``api-server``, ``scheduler``,
        ``dag-processor``, ``triggerer-<n>`` or ``worker-<n>`` (a Celery worker). A name that
        ran before is started afresh (the old process is kept as retired); a bare
        ``triggerer`` or ``worker`` means the first of them."""
        if name in ("triggerer", "worker"):
            name += "-1"
        if name in self.procs and self.procs[name].alive():
            raise DeploymentError(f"{name} is already running")
        if name in self.procs:
            self.retired.append(self.procs.pop(name))
        generation = len([p for p in self.retired if p.name.startswith(name + "#")]) + 1
        component = name.split("-")[0] if name.startswith(("triggerer", "worker")) else name
        pid_file = str(self.home / f"{name}.pid")  # each instance its own, or the second refuses
        if component == "worker":
            argv = ["airflow", "celery", "worker", "--celery-hostname", f"{name}@%h"]
            argv += ["--concurrency", str(WORKER_CONCURRENCY), "--pid", pid_file]
            argv += ["--without-gossip", "--without-mingle"]
        else:
            argv = ["airflow", component]
            if component == "triggerer":
                argv += ["--pid", pid_file]
        if component in ("scheduler", "triggerer", "worker"):
            # Their log servers listen on every interface at fixed ports (8793, 8794): they
            # would leave loopback and collide with each other. The API server reads the task
            # and trigger logs from the shared local folder instead.
            argv.append("--skip-serve-logs")
        env = {**self.env, HOST_VAR: name}
        proc = start_process(f"{name}#{generation}", argv, env, self.log_dir)
        self.procs[name] = proc
        return proc

    def triggerers(self) -> dict[str, Proc]:
        return {n: p for n, p in self.procs.items() if n.startswith("triggerer")}

    def workers(self) -> dict[str, Proc]:
        return {n: p for n, p in self.procs.items() if n.startswith("worker")}

    def wait_worker_ready(self, name: str, *, timeout: float = 120) -> None:
        proc = self.procs[name]
        wait_for(
            f"Celery {name} to be ready",
            lambda: self._check_alive() and " ready." in proc.log_path.read_text(errors="replace"),
            timeout=timeout,
            diagnose=self.diagnose,
        )

    def _check_alive(self) -> bool:
        self.check_alive()
        return True

    def stop_all(self) -> None:
        # The scheduler and the triggerers first, so no more work starts; the workers next;
        # the API server last, since task processes talk to it while they wind down.
        first = [p for n, p in self.procs.items() if n in ("scheduler", "dag-processor")]
        first += [p for n, p in self.procs.items() if n.startswith("triggerer")] + self.retired
        stop_groups(first)
        stop_groups(list(self.workers().values()))
        stop_groups([p for n, p in self.procs.items() if n == "api-server"])

    def cpu_report(self) -> dict[str, float]:
        """CPU seconds used so far by each running component's process group."""
        return {name: round(cpu_seconds(p.pid), 1) for name, p in self.procs.items()}

    def check_alive(self) -> None:
        dead = {name: p for name, p in self.procs.items() if not p.alive()}
        if dead:
            raise UnexpectedState(
                "Airflow component(s) exited: "
                + "; ".join(f"{n} (rc={p.popen.returncode}):\n{p.tail()}" for n, p in dead.items())
            )

    def diagnose(self) -> str:
        return "\n".join(
            f"--- {name} ({'alive' if p.alive() else f'rc={p.popen.returncode}'}) ---\n{p.tail(25)}"
            for name, p in self.procs.items()
        )

    def log_files(self) -> list[Path]:
        """Every log Airflow wrote in this run: components' output, task and trigger logs."""
        task_logs = Path(self.env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
        return sorted(
            [p for p in task_logs.rglob("*") if p.is_file()]
            + [p for p in self.log_dir.glob("*.log") if p.name.split("#")[0] in COMPONENTS]
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

    def add_connection(self, body: dict[str, Any]) -> None:
        """Store a connection in the metadata database through the REST API."""
        self.api("POST", "connections", body)

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
        for log in self.log_dir.glob("scheduler#*.log"):
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

    def __init__(
        self,
        emulator: Emulator,
        airflow: Airflow,
        marker: str,
        root: Path,
        postgres: Postgres | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.emulator = emulator
        self.airflow = airflow
        self.marker = marker
        self.root = root
        self.postgres = postgres
        self.redis = redis
        self.timings: dict[str, float] = {}


def warm_up_triggerers(
    d: Deployment, dag_id: str, *, per_round: int = 4, rounds: int = 2
) -> set[str]:
    """Run throw-away waits of ``dag_id`` (one deferrable sensor on ``params.batch_id``) until
    every triggerer has run one of them (or ``rounds`` are done); return the triggerers that did.

    A triggerer's first trigger builds its in-process execution API, which stalls the
    triggerer's main loop, heartbeat included, for 15-20 s on a loaded 2-core machine. The
    scenarios' waits should not meet that stall: past [triggerer] triggerer_health_check_threshold
    the other triggerer takes the stalled one's triggers, and the stalled one then calls their
    on_kill as if a user had acted (Airflow 3.3.2), so a cancel_on_kill sensor cancels its batch.
    """
    af = d.airflow
    wanted = set(af.triggerers())
    seen: set[str] = set()
    for _ in range(rounds):
        runs = {af.trigger(dag_id, {"batch_id": b}): b for b in d.emulator.seed(per_round)}

        def running_in_triggerer(run_id: str, batch_id: str) -> str | None:
            (ti,) = by_task(af.task_instances(dag_id, run_id), "wait")
            host = (ti.get("triggerer_job") or {}).get("hostname")
            polls = len(d.emulator.requests("batches.get", [batch_id]))
            return host if ti["state"] == "deferred" and host and polls >= 2 else None

        for run_id, batch_id in runs.items():
            host = wait_for(
                "a warm-up wait to run in a triggerer",
                lambda r=run_id, b=batch_id: running_in_triggerer(r, b),
                timeout=300,
                diagnose=af.diagnose,
            )
            seen.add(host)
        for batch_id in runs.values():
            d.emulator.set_status(batch_id, "completed")
        for run_id in runs:
            af.wait_run_state(dag_id, run_id, timeout=180)
        if seen >= wanted:
            break
    return seen


@contextlib.contextmanager
def deployment_running(
    dag_ids: Iterable[str],
    *,
    warm_up_dag: str | None = None,
    keep_logs: Callable[[], bool] = lambda: False,
) -> Iterator[Deployment]:
    """Start the whole deployment in a fresh temporary folder, yield it, and stop every
    process it started, by id, whatever happens (the run's leftovers are swept by marker)."""
    root = Path(tempfile.mkdtemp(prefix="airflow-portkey-deploy-"))
    root.chmod(0o711)  # PostgreSQL, running as its own user, must reach its folder inside
    marker = secrets.token_hex(8)
    log_dir = root / "logs"
    log_dir.mkdir()
    env = base_env(marker)
    services: list[Proc] = []
    emulator: Emulator | None = None
    airflow: Airflow | None = None
    with sigterm_as_interrupt():
        try:
            started = time.monotonic()
            postgres = Postgres.start(root, env, log_dir)
            services.append(postgres.proc)
            redis = Redis.start(root, env, log_dir)
            services.append(redis.proc)
            emulator = Emulator.start(env, log_dir)
            services.append(emulator.proc)
            airflow = Airflow.prepare(
                root,
                marker=marker,
                database_url=postgres.sqlalchemy_url,
                broker_url=redis.url,
                log_dir=log_dir,
            )
            airflow.migrate()
            for name in COMPONENTS:
                airflow.start(name)
            airflow.wait_ready(dag_ids)
            for name in WORKERS:
                airflow.wait_worker_ready(name)
            airflow.add_connection(emulator.connection())
            deployment = Deployment(emulator, airflow, marker, root, postgres, redis)
            if warm_up_dag is not None:
                warm = warm_up_triggerers(deployment, warm_up_dag)
                print(f"\ntriggerers warmed up: {sorted(warm)}")
            deployment.timings["startup_s"] = time.monotonic() - started
            print(f"\ndeployment ready in {deployment.timings['startup_s']:.1f}s under {root}")
            yield deployment
        finally:
            if airflow is not None:
                print(f"\nCPU seconds by component: {airflow.cpu_report()}")
                airflow.stop_all()
            stop_groups(services[::-1])  # the emulator, Redis, then PostgreSQL
            # Task processes live in process groups of their own, and one that ignores its
            # SIGTERM outlives its supervisor's group: sweep whatever is left of the run.
            leftovers = processes_of_run(marker, root)
            if leftovers:
                print(f"\nkilling processes that outlived their groups: {leftovers}")
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if leftovers:
                time.sleep(1)
            remaining = processes_of_run(marker, root)
            if keep_logs() or os.environ.get("PORTKEY_DEPLOY_KEEP"):
                print(f"\ndeployment logs kept in {log_dir}")
            else:
                shutil.rmtree(root, ignore_errors=True)
            assert not remaining, f"processes of this run still alive: {remaining}"
