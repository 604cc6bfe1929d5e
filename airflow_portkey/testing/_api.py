"""The Portkey batch API: routing, recording, faults, header checks and the route handlers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from ._auth import check_hosted, check_upstream, plain_provider
from ._batch import PROVIDER_OF_FLAVOUR, Batch, new_batch_id, new_file_id
from ._faults import fault_result, take
from ._files import StoredFile, build_output, file_object, jsonl_lines, parse_multipart
from ._records import RecordedRequest
from ._responses import (
    Request,
    Response,
    Result,
    json_response,
    openai_error,
    route_not_found,
)
from ._state import State

_FLAVOUR_OF_PROVIDER = {"bedrock": "bedrock", "cohere": "cohere", "vertex-ai": "vertex"}
_CONTROL_PREFIX = "/_emulator/"


def match_route(method: str, path: str) -> tuple[str | None, str | None]:
    """(route name, raw id segment) for a raw path, or (None, None)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] or parts[1] != "v1":
        return None, None
    kind, rest = parts[2], parts[3:]
    if kind not in ("batches", "files"):
        return None, None
    if not rest:
        if method == "POST":
            return f"{kind}.create", None
        if method == "GET" and kind == "batches":
            return "batches.list", None
        return None, None
    ident = rest[0]
    if not ident:
        return None, None
    if len(rest) == 1:
        return (f"{kind}.get", ident) if method == "GET" else (None, None)
    if len(rest) == 2:
        action = rest[1]
        if kind == "batches":
            if method == "POST" and action == "cancel":
                return "batches.cancel", ident
            if method == "GET" and action == "output":
                return "batches.output", ident
        elif method == "GET" and action == "content":
            return "files.content", ident
    return None, None


def _caller(req: Request, mode: str) -> str:
    """Whose rate limit a request counts against: the Portkey key, or the provider's key."""
    if mode == "hosted":
        return req.headers.get("x-portkey-api-key", "")
    return req.headers.get("authorization", "")


class Api:
    """Answers one request; called on the server thread."""

    def __init__(self, state: State, control: Callable[[Request], Response]) -> None:
        self.state = state
        self.control = control

    def handle(self, req: Request, first: bool) -> Result:
        """The answer to `req`; `first` is False when replaying a request after a delay."""
        if req.path.startswith(_CONTROL_PREFIX):
            return self.control(req)
        route, ident = match_route(req.method, req.path)
        batch_id = ident if route is not None and route.startswith("batches.") else None
        state = self.state
        with state.lock:
            if first:
                key = route or "unknown"
                state.counts[key] = state.counts.get(key, 0) + 1
                if state.settings.record:
                    state.requests.append(
                        RecordedRequest(
                            method=req.method,
                            path=req.path,
                            query=dict(parse_qsl(req.query_string, keep_blank_values=True)),
                            headers=dict(req.headers),
                            body=req.body,
                            route=route,
                            batch_id=batch_id,
                            received_at=time.monotonic(),
                        )
                    )
                if state.limit is not None and route is not None:
                    wait_s = state.limit.admit(_caller(req, state.settings.mode), time.monotonic())
                    if wait_s is not None:
                        state.counts["rate_limited"] = state.counts.get("rate_limited", 0) + 1
                        return state.limit.refusal(wait_s, self._provider(req, batch_id))
                fault = take(state.faults, req.method, route, batch_id) if state.faults else None
                if fault is not None:
                    return fault_result(
                        fault,
                        provider=self._provider(req, batch_id),
                        batch_id=batch_id,
                        normal=lambda: self._serve(req, route, ident),
                        upstream=state.settings.mode == "upstream",
                    )
            return self._serve(req, route, ident)

    # -- helpers --------------------------------------------------------------------------

    def _provider(self, req: Request, batch_id: str | None) -> str | None:
        """Provider named in error prefixes: the gateway adds one, a bare provider does not."""
        if self.state.settings.mode != "hosted":
            return None
        batch = self.state.batches.get(batch_id) if batch_id is not None else None
        if batch is not None:
            return PROVIDER_OF_FLAVOUR[batch.flavour]
        return plain_provider(req.headers) or "openai"

    def _bad_request(self, req: Request, message: str, param: str | None) -> Response:
        code = "missing_required_parameter" if message.startswith("Missing") else None
        return openai_error(
            400, message, provider=self._provider(req, None), param=param, code=code
        )

    def _serve(self, req: Request, route: str | None, ident: str | None) -> Response:
        if route is None:
            return route_not_found()
        settings = self.state.settings
        if settings.mode == "hosted":
            refusal = check_hosted(req.headers, settings.api_key, settings.provider_api_key)
        else:
            refusal = check_upstream(req.headers, settings.provider_api_key)
        if refusal is not None:
            return refusal
        if route == "batches.create":
            return self._create_batch(req)
        if route == "batches.list":
            return self._list(req)
        if route == "files.create":
            return self._create_file(req)
        assert ident is not None
        if route.startswith("files."):
            return self._file(req, ident, content=route == "files.content")
        batch = self.state.batches.get(ident)
        if batch is None:
            return openai_error(
                404, f"No batch found with id '{ident}'.", provider=self._provider(req, None)
            )
        if route == "batches.cancel":
            return self._cancel(req, batch)
        if route == "batches.output":
            return self._output(req, batch)
        return json_response(200, batch.render(self.state.clock.now()))

    # -- batches --------------------------------------------------------------------------

    def _cancel(self, req: Request, batch: Batch) -> Response:
        now = self.state.clock.now()
        if batch.cancel(now) == "terminal":
            status = batch.status_at(now)
            return openai_error(
                409,
                f"Cannot cancel a batch with status '{status}'.",
                provider=self._provider(req, batch.id),
            )
        if batch.flavour in ("bedrock", "cohere"):
            return json_response(200, {"status": "success", "object": "batch", "id": batch.id})
        if batch.flavour == "vertex":
            return json_response(200, {})
        return json_response(200, batch.render(now))

    def _output(self, req: Request, batch: Batch) -> Response:
        now = self.state.clock.now()
        if not batch.has_output(now):
            return openai_error(
                400,
                f"Batch '{batch.id}' has no output yet: status is '{batch.status_at(now)}'.",
                provider=self._provider(req, batch.id),
            )
        return Response(200, self._output_bytes(batch, now), "application/octet-stream")

    def _output_bytes(self, batch: Batch, now: float) -> bytes:
        source = self.state.files.get(batch.input_file_id)
        # Stamped with when the batch finished, not with the download's time: every download
        # of one output is the same bytes, as a stored file is.
        return build_output(
            batch.id,
            batch.counts_at(now)["completed"],
            batch.status_since(now),
            source.data if source is not None else None,
            batch.output_lines,
        )

    def _list(self, req: Request) -> Response:
        query = dict(parse_qsl(req.query_string, keep_blank_values=True))
        try:
            limit = int(query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return self._bad_request(
                req, "Invalid 'limit': must be an integer between 1 and 100.", "limit"
            )
        state = self.state
        end = len(state.order)
        after = query.get("after")
        if after:
            end = state.position.get(after, 0)  # an unknown cursor yields an empty page
        start = max(0, end - limit)
        ids = state.order[start:end][::-1]  # newest first
        now = state.clock.now()
        data = [state.batches[i].render(now, listing=True) for i in ids]
        return json_response(
            200,
            {
                "object": "list",
                "data": data,
                "first_id": ids[0] if ids else None,
                "last_id": ids[-1] if ids else None,
                "has_more": start > 0,
            },
        )

    def _create_batch(self, req: Request) -> Response:
        try:
            body = json.loads(req.body or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._bad_request(req, "The request body must be a JSON object.", None)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not body.get(name):
                return self._bad_request(req, f"Missing required parameter: '{name}'.", name)
        file_id = str(body["input_file_id"])
        source = self.state.files.get(file_id)
        if source is None:
            return self._bad_request(
                req, f"Invalid 'input_file_id': no file with id '{file_id}'.", "input_file_id"
            )
        if source.purpose != "batch":
            return self._bad_request(
                req,
                f"Invalid 'input_file_id': file '{file_id}' has purpose "
                f"'{source.purpose}', expected 'batch'.",
                "input_file_id",
            )
        endpoint = str(body["endpoint"])
        if not endpoint.startswith("/v1/"):
            return self._bad_request(req, f"Invalid 'endpoint': '{endpoint}'.", "endpoint")
        metadata = body.get("metadata")
        problem = _metadata_problem(metadata)
        if problem:
            return self._bad_request(req, problem, "metadata")
        settings = self.state.settings
        provider = plain_provider(req.headers) if settings.mode == "hosted" else None
        flavour = _FLAVOUR_OF_PROVIDER.get(provider or "", "openai")
        total = len(jsonl_lines(source.data))
        batch = Batch(
            id=_new_id(self.state, flavour),
            flavour=flavour,
            status="validating",
            now=self.state.clock.now(),
            hold=False,
            outcome="completed" if total else "failed",  # an empty input fails validation
            durations=settings.durations,
            total=total,
            metadata=metadata,
            endpoint=endpoint,
            input_file_id=file_id,
            completion_window=str(body["completion_window"]),
        )
        self.state.insert(batch)
        return json_response(200, batch.render(self.state.clock.now()))

    # -- files ----------------------------------------------------------------------------

    def _create_file(self, req: Request) -> Response:
        try:
            fields = parse_multipart(req.headers.get("content-type", ""), req.body)
        except ValueError as exc:
            return self._bad_request(req, f"Invalid multipart body: {exc}.", None)
        purpose = fields.get("purpose", (None, b""))[1].decode("utf-8", "replace").strip()
        if not purpose:
            return self._bad_request(req, "Missing required parameter: 'purpose'.", "purpose")
        if "file" not in fields:
            return self._bad_request(req, "Missing required parameter: 'file'.", "file")
        filename, data = fields["file"]
        stored = StoredFile(
            new_file_id(), filename or "upload.jsonl", purpose, data, self.state.clock.now()
        )
        self.state.files[stored.id] = stored
        return json_response(200, stored.render())

    def _file(self, req: Request, file_id: str, *, content: bool) -> Response:
        state = self.state
        stored = state.files.get(file_id)
        if stored is not None:
            if content:
                return Response(200, stored.data, "application/octet-stream")
            return json_response(200, stored.render())
        batch_id = state.output_files.get(file_id)
        batch = state.batches.get(batch_id) if batch_id is not None else None
        now = state.clock.now()
        if batch is None or batch.output_file_id_at(now) is None:
            return openai_error(
                404,
                f"No such File object: {file_id}",
                provider=self._provider(req, None),
                param="id",
            )
        data = self._output_bytes(batch, now)
        if content:
            return Response(200, data, "application/octet-stream")
        name = f"batch_{batch.id}_output.jsonl"
        return json_response(200, file_object(file_id, len(data), now, name, "batch_output"))


def _metadata_problem(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        return "Invalid 'metadata': expected an object."
    if len(metadata) > 16:
        return "Invalid 'metadata': at most 16 pairs are allowed."
    for key, value in metadata.items():
        if len(key) > 64:
            return f"Invalid 'metadata': key '{key[:20]}...' is longer than 64 characters."
        if not isinstance(value, str) or len(value) > 512:
            return f"Invalid 'metadata': value of '{key}' must be a string of at most 512."
    return None


def _new_id(state: State, flavour: str) -> str:
    while True:
        batch_id = new_batch_id(flavour)
        if batch_id not in state.batches:
            return batch_id
