"""PortkeyEmulator: a local Portkey-compatible batch API on loopback, for tests and benchmarks.

It is an independent model of Portkey written from its documented behaviour: it shares no code
with the client, so it catches the client's mistakes instead of repeating them.
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

from ._api import Api
from ._batch import DURATION_KEYS, FLAVOURS, OUTCOMES, Batch, new_batch_id
from ._control import handle_control
from ._http import HttpServer
from ._limits import RequestLimit
from ._records import FAULT_KINDS, ROUTE_NAMES, Fault, RecordedRequest
from ._responses import Request, Response
from ._state import Clock, Settings, State
from ._tls import write_tls_files

_MODES = ("hosted", "upstream")


class PortkeyEmulator:
    """A Portkey-compatible HTTP/1.1 server in a background thread.

    mode "hosted" checks headers like api.portkey.ai; mode "upstream" acts as an
    OpenAI-compatible provider behind the real Portkey gateway (Authorization only).
    Batch lifecycles follow the emulator clock: real elapsed time * speed + advance().

    rate_limit=N answers 429 with Retry-After, as OpenAI does, to requests beyond N a second per
    key (the Portkey API key; behind the gateway, the provider key); refused requests are
    counted under ``counts["rate_limited"]``.

    tls=True serves HTTPS, as api.portkey.ai does, with a certificate for the host and the
    loopback names signed by a throw-away CA: a client trusts it through ``ca_file`` (e.g. a
    connection's ``verify`` extra), and refuses it with default verification.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        mode: str = "hosted",
        api_key: str | None = None,
        provider_api_key: str | None = None,
        validating_s: float = 0.05,
        in_progress_s: float = 0.2,
        finalizing_s: float = 0.05,
        cancel_delay_s: float = 0.1,
        speed: float = 1.0,
        record: bool = True,
        tls: bool = False,
        rate_limit: float | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, not {mode!r}")
        durations = {
            "validating": float(validating_s),
            "in_progress": float(in_progress_s),
            "finalizing": float(finalizing_s),
            "cancelling": float(cancel_delay_s),
        }
        self.host = host
        self.mode = mode
        self.api_key = api_key
        self.provider_api_key = provider_api_key
        settings = Settings(mode, api_key, provider_api_key, durations, record)
        self._state = State(settings, Clock(speed))
        self.set_rate_limit(rate_limit)
        self._api = Api(self._state, self._control)
        self.tls = bool(tls)
        self._ca_file: str | None = None
        context = self._tls_context() if self.tls else None
        self._server = HttpServer(self._api.handle, host, port, context)

    def _tls_context(self) -> ssl.SSLContext:
        directory = tempfile.mkdtemp(prefix="portkey-emulator-tls-")
        # The files last as long as this object (or the process), so a client can still
        # read the CA after stop().
        weakref.finalize(self, shutil.rmtree, directory, True)
        self._ca_file, cert_path, key_path = write_tls_files(self.host, directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        return context

    # -- server ---------------------------------------------------------------------------

    def start(self) -> PortkeyEmulator:
        """Start serving; returns once the socket is listening."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._server.stop()

    def __enter__(self) -> PortkeyEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        return self._server.port

    @property
    def ca_file(self) -> str | None:
        """With tls=True, the PEM file of the CA that signed the server certificate (what a
        client verifies against, e.g. ``requests.get(url, verify=emu.ca_file)``); else None."""
        return self._ca_file

    @property
    def scheme(self) -> str:
        """The URL scheme: "https" with tls=True, else "http"."""
        return "https" if self.tls else "http"

    @property
    def root_url(self) -> str:
        """http://host:port (https:// with tls=True)"""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """http://host:port/v1 (https:// with tls=True), what a client uses as its base URL."""
        return self.root_url + "/v1"

    def _control(self, req: Request) -> Response:
        return handle_control(self, req)

    # -- batches --------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator clock (Unix seconds)."""
        return self._state.clock.now()

    def add_batch(
        self,
        id: str | None = None,
        status: str = "in_progress",
        *,
        hold: bool = True,
        flavour: str = "openai",
        raw_status: str | None = None,
        request_counts: Mapping[str, int] | None = None,
        total: int = 10,
        outcome: str = "completed",
        errors: Any = None,
        metadata: Mapping[str, str] | None = None,
        output_lines: Sequence[Any] | None = None,
        durations: Mapping[str, float] | None = None,
        endpoint: str = "/v1/chat/completions",
        input_file_id: str | None = None,
    ) -> dict[str, Any]:
        """Seed a batch in `status`; hold=False lets it move on towards `outcome`.

        The batch's past (created_at, in_progress_at, ...) is laid out backwards from now with
        the durations. hold only stops the lifecycle: a cancel through the API still ends in
        "cancelled" after the cancelling duration. Returns the batch as the API renders it.
        """
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        merged = dict(self._state.settings.durations)
        for key, value in (durations or {}).items():
            if key not in DURATION_KEYS:
                raise ValueError(f"durations keys are {DURATION_KEYS}, not {key!r}")
            merged[key] = float(value)
        state = self._state
        with state.lock:
            batch_id = id
            while batch_id is None or (id is None and batch_id in state.batches):
                batch_id = new_batch_id(flavour)
            now = state.clock.now()
            batch = Batch(
                id=batch_id,
                flavour=flavour,
                status=status,
                now=now,
                hold=hold,
                outcome=outcome,
                durations=merged,
                total=int(total),
                raw_status=raw_status,
                request_counts=request_counts,
                errors=errors,
                metadata=metadata,
                output_lines=output_lines,
                endpoint=endpoint,
                input_file_id=input_file_id,
            )
            state.insert(batch)
            return batch.render(now)

    def set_status(
        self,
        batch_id: str,
        status: str,
        *,
        raw_status: str | None = None,
        request_counts: Mapping[str, int] | None = None,
        hold: bool = True,
    ) -> dict[str, Any]:
        """Force `status` now (and optionally a raw word to render); returns the batch."""
        state = self._state
        with state.lock:
            batch = state.batches[batch_id]
            now = state.clock.now()
            batch.force(
                now, status, raw_status=raw_status, request_counts=request_counts, hold=hold
            )
            return batch.render(now)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch as the API renders it now (KeyError if unknown)."""
        state = self._state
        with state.lock:
            return state.batches[batch_id].render(state.clock.now())

    def set_durations(self, **seconds: float) -> dict[str, float]:
        """Change how long batches created from now on stay in each status (e.g.
        ``in_progress=3600`` keeps them running until told); returns the durations before."""
        for key in seconds:
            if key not in DURATION_KEYS:
                raise ValueError(f"durations keys are {DURATION_KEYS}, not {key!r}")
        with self._state.lock:
            before = dict(self._state.settings.durations)
            self._state.settings.durations.update({k: float(v) for k, v in seconds.items()})
            return before

    def batch_ids(self) -> list[str]:
        """Every batch's id, in the order the batches were created or seeded."""
        with self._state.lock:
            return list(self._state.order)

    def advance(self, seconds: float) -> None:
        """Move the emulator clock forward."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._state.lock:
            self._state.clock.offset += float(seconds)

    def set_rate_limit(self, per_second: float | None) -> None:
        """Refuse requests beyond ``per_second`` a second per key with 429 (None: no limit)."""
        limit = None if per_second is None else RequestLimit(float(per_second))
        with self._state.lock:
            self._state.limit = limit

    # -- faults ---------------------------------------------------------------------------

    def add_fault(
        self,
        kind: str,
        *,
        times: int | None = 1,
        batch_id: str | None = None,
        route: str | None = None,
        method: str | None = None,
        **params: Any,
    ) -> Fault:
        """Arm a fault for the next `times` matching requests (None: until cleared).

        Kinds: status, rate_limit, server_error, slow, drop, malformed_json, empty_body, html,
        raw_cancel_body. Faults are consumed in the order they were added.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {sorted(FAULT_KINDS)}, not {kind!r}")
        if route is not None and route not in ROUTE_NAMES:
            raise ValueError(f"route must be one of {sorted(ROUTE_NAMES)}, not {route!r}")
        if kind == "raw_cancel_body" and route is None:
            route = "batches.cancel"
        fault = Fault(
            kind,
            times,
            batch_id,
            route,
            method.upper() if method else None,
            dict(params),
        )
        with self._state.lock:
            self._state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self._state.lock:
            self._state.faults.clear()

    # -- what was seen --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    def requests_to(
        self, route: str | None = None, batch_id: str | None = None, method: str | None = None
    ) -> list[RecordedRequest]:
        """Recorded requests filtered by route name, raw batch id and method."""
        method = method.upper() if method else None
        return [
            r
            for r in self.requests
            if (route is None or r.route == route)
            and (batch_id is None or r.batch_id == batch_id)
            and (method is None or r.method == method)
        ]

    def clear_requests(self) -> None:
        """Forget recorded requests and counts."""
        with self._state.lock:
            self._state.requests.clear()
            self._state.counts.clear()

    @property
    def counts(self) -> dict[str, int]:
        """Requests per route name ("unknown" for unmatched paths, "rate_limited" for those the
        rate limit refused, counted under their route too); kept even with record=False."""
        with self._state.lock:
            return dict(self._state.counts)

    def reset(self) -> None:
        """Forget batches, files, faults, requests and counts."""
        with self._state.lock:
            self._state.reset()

    # -- Airflow connection ---------------------------------------------------------------

    def _conn_extra(self, extra: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(extra)
        if self._ca_file is not None:
            merged.setdefault("verify", self._ca_file)
        if not any(merged.get(k) for k in ("provider", "virtual_key", "config")):
            # A bare provider name needs the provider's key (hosted Portkey asks for it too).
            merged.setdefault("provider", "openai")
            merged.setdefault("provider_api_key", self.provider_api_key or "sk-test")
        return merged

    def airflow_conn_json(self, **extra: Any) -> str:
        """JSON for an AIRFLOW_CONN_<ID> variable pointing at this emulator (with tls=True,
        its ``verify`` extra names ``ca_file`` unless given)."""
        return json.dumps(
            {
                "conn_type": "portkey",
                "host": self.base_url,
                "password": self.api_key or "pk-test",
                "extra": self._conn_extra(extra),
            }
        )

    def airflow_conn_uri(self, **extra: Any) -> str:
        """The same connection as an Airflow URI (host percent-encoded, extras in __extra__)."""
        password = quote(self.api_key or "pk-test", safe="")
        host = quote(self.base_url, safe="")
        payload = quote(json.dumps(self._conn_extra(extra)), safe="")
        return f"portkey://:{password}@{host}/?__extra__={payload}"
