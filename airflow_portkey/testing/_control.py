"""/_emulator/ routes: the Python API over HTTP, for benchmarks and demos in another process."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._responses import Request, Response, json_response

if TYPE_CHECKING:
    from .emulator import PortkeyEmulator


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _required(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise ValueError(f"missing field {name!r}")
    return body.pop(name)


def handle_control(emu: PortkeyEmulator, req: Request) -> Response:
    """Answer a control request; not recorded, no header checks, no faults."""
    try:
        body: Any = json.loads(req.body) if req.body.strip() else {}
    except ValueError:
        return _error(400, "body is not JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    try:
        return _route(emu, req.method, req.path[len("/_emulator/") :], body)
    except KeyError as exc:
        return _error(404, f"unknown batch {exc.args[0]!r}" if exc.args else "not found")
    except (TypeError, ValueError) as exc:
        return _error(400, str(exc))


def _route(emu: PortkeyEmulator, method: str, path: str, body: dict[str, Any]) -> Response:
    if method == "GET" and path == "health":
        return json_response(200, {"ok": True, "base_url": emu.base_url})
    if method == "POST" and path == "batches":
        count = body.pop("count", None)
        if count is None:
            return json_response(200, emu.add_batch(**body))
        if "id" in body:
            raise ValueError("'id' cannot be combined with 'count'")
        data = [emu.add_batch(**body) for _ in range(int(count))]
        return json_response(200, {"object": "list", "data": data})
    if method == "GET" and path.startswith("batches/"):
        return json_response(200, emu.get_batch(path[len("batches/") :]))
    if method == "POST" and path == "status":
        batch_id = _required(body, "batch_id")
        status = _required(body, "status")
        return json_response(200, emu.set_status(batch_id, status, **body))
    if path == "faults":
        if method == "POST":
            kind = _required(body, "kind")
            return json_response(200, emu.add_fault(kind, **body).to_dict())
        if method == "DELETE":
            emu.clear_faults()
            return json_response(200, {"ok": True})
    if method == "POST" and path == "rate_limit":
        emu.set_rate_limit(body.get("per_second"))
        return json_response(200, {"per_second": body.get("per_second")})
    if method == "POST" and path == "durations":
        return json_response(200, emu.set_durations(**body))
    if method == "POST" and path == "advance":
        emu.advance(float(body.get("seconds", 0)))
        return json_response(200, {"now": emu.now()})
    if path == "requests":
        if method == "GET":
            return json_response(200, {"data": [r.to_dict() for r in emu.requests]})
        if method == "DELETE":
            emu.clear_requests()
            return json_response(200, {"ok": True})
    if method == "GET" and path == "counts":
        return json_response(200, emu.counts)
    if method == "POST" and path == "reset":
        emu.reset()
        return json_response(200, {"ok": True})
    return json_response(404, {"message": "Not Found", "ok": False})
