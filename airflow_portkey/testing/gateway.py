"""Start and stop the real open-source Portkey gateway (npm ``@portkey-ai/gateway``) on loopback.

The gateway runs as ``node --import <preloads> .../start-server.js --port=N --headless`` in its
own process group. Three preloads are always loaded (``gateway_preload/``): one binds it to
127.0.0.1 (it binds every interface otherwise), one refuses any connection off the machine
(its ``/batches/{id}/output`` route dials api.openai.com whatever the custom host says), and
one makes it exit when its standard input, a pipe this process holds, closes: a launcher that
dies without calling :meth:`Gateway.stop` leaves no gateway behind.

Node.js and a ``node_modules`` holding the pinned gateway (``make node-install``, i.e.
``npm ci`` in this repository) are required: :func:`check_installation` says what is missing
and how to fix it. The ``node_modules`` used is ``$PORTKEY_GATEWAY_NODE_MODULES`` if set, else
the first found in the working directory or its parents, else the one of the source checkout
this package was installed from (editable installs). Standard library only: like the emulator,
nothing here imports the client side.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from .processes import stop_process_group

_CHECKOUT = Path(__file__).resolve().parents[2]
_GATEWAY_SCRIPT = Path("@portkey-ai") / "gateway" / "build" / "start-server.js"
PRELOADS = (
    Path(__file__).resolve().parent / "gateway_preload" / "bind_loopback.mjs",
    Path(__file__).resolve().parent / "gateway_preload" / "block_offhost.mjs",
    Path(__file__).resolve().parent / "gateway_preload" / "exit_on_stdin_eof.mjs",
)
# What package.json / package-lock.json pin; a plain `npm install` of the gateway today floats
# @hono/node-server to a version that breaks every streamed response (gateway issue #1389).
PINNED = {"@portkey-ai/gateway": "1.15.2", "@hono/node-server": "1.13.8"}
MIN_NODE_MAJOR = 18
READY_BODY = b"AI Gateway says hey!"
BLOCKED_MARK = "[offhost-guard] BLOCKED"

INSTALL_HINT = (
    f"The tier-3 tests run the real Portkey gateway, which needs Node.js (>= {MIN_NODE_MAJOR}) "
    "and npm. Install them (Debian/Ubuntu: `apt-get install nodejs npm`; elsewhere see "
    "https://nodejs.org/en/download), then run `make node-install` in the airflow-portkey "
    "checkout (npm ci from package-lock.json), or point PORTKEY_GATEWAY_NODE_MODULES at a "
    "node_modules holding the pinned gateway."
)

# Variables that would make the gateway reach something other than the emulator.
_SCRUBBED_ENV = (
    "REDIS_CONNECTION_STRING",
    "TRUSTED_CUSTOM_HOSTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "NODE_OPTIONS",
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class GatewayUnavailable(RuntimeError):
    """Node.js or the pinned gateway install is missing."""


def find_node_modules() -> Path:
    """The ``node_modules`` to start the gateway from (see the module's docstring)."""
    named = os.environ.get("PORTKEY_GATEWAY_NODE_MODULES")
    if named:
        return Path(named)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "node_modules" / _GATEWAY_SCRIPT).is_file():
            return folder / "node_modules"
    return _CHECKOUT / "node_modules"


def check_installation(node_modules: Path | None = None) -> str:
    """The path of ``node``, or GatewayUnavailable saying what is missing and how to fix it."""
    node_modules = node_modules or find_node_modules()
    node = shutil.which("node")
    if node is None:
        raise GatewayUnavailable(f"`node` was not found on PATH. {INSTALL_HINT}")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        raise GatewayUnavailable(f"`node --version` said {version!r}. {INSTALL_HINT}") from None
    if major < MIN_NODE_MAJOR:
        raise GatewayUnavailable(f"Node.js {version} is too old. {INSTALL_HINT}")
    if not (node_modules / _GATEWAY_SCRIPT).is_file():
        raise GatewayUnavailable(f"{node_modules / _GATEWAY_SCRIPT} is missing. {INSTALL_HINT}")
    for package, wanted in PINNED.items():
        manifest = node_modules / package / "package.json"
        found = json.loads(manifest.read_text())["version"] if manifest.is_file() else None
        if found != wanted:
            raise GatewayUnavailable(
                f"node_modules holds {package} {found}, but package-lock.json pins {wanted}. "
                "Run `make node-install` (npm ci), not `npm install`."
            )
    return node


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port`` (from /proc/net)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.add(_decode_address(address))
    return found


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net lists addresses as 32-bit words in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


class Gateway:
    """One gateway process; its stdout and stderr go to a log file read by the tests."""

    def __init__(
        self, node: str, port: int | None = None, *, node_modules: Path | None = None
    ) -> None:
        self.node = node
        self.start_server = (node_modules or find_node_modules()) / _GATEWAY_SCRIPT
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_dir = tempfile.mkdtemp(prefix="portkey-gateway-")
        self.log_path = Path(self._log_dir) / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    @property
    def base_url(self) -> str:
        """What a Portkey connection uses as its host."""
        return self.url + "/v1"

    def command(self) -> list[str]:
        preloads = [arg for path in PRELOADS for arg in ("--import", path.as_uri())]
        return [self.node, *preloads, str(self.start_server), f"--port={self.port}", "--headless"]

    def start(self, timeout: float = 30.0) -> Gateway:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self._log_dir,  # it writes no files; if it ever did, they land here
                stdin=subprocess.PIPE,  # held until stop(): see exit_on_stdin_eof.mjs
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, stopped as one
            )
        deadline = started + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the Portkey gateway exited with {self.proc.returncode} before it was "
                    f"ready; its output:\n{self.log_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"the Portkey gateway was not ready within {timeout:.0f}s; "
                    f"its output:\n{self.log_text()}"
                )
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - started
        return self

    def _ready(self) -> bool:
        """GET / answers 200 "AI Gateway says hey!" once the app is mounted."""
        try:
            with _NO_PROXY.open(self.url + "/", timeout=1) as response:
                return bool(response.status == 200 and response.read() == READY_BODY)
        except OSError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group (SIGKILL if it lingers); returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        code = stop_process_group(proc, timeout)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        return code

    def group_alive(self) -> bool:
        """Whether any process of the gateway's process group is still there."""
        if self.proc is None:
            return False
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(since)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        shutil.rmtree(self._log_dir, ignore_errors=True)
