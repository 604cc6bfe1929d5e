"""Files: uploads (multipart/form-data), their JSONL lines, and the output a batch produces."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any


class StoredFile:
    """An uploaded file."""

    __slots__ = ("created_at", "data", "filename", "id", "purpose")

    def __init__(
        self, id: str, filename: str, purpose: str, data: bytes, created_at: float
    ) -> None:
        self.id = id
        self.filename = filename
        self.purpose = purpose
        self.data = data
        self.created_at = created_at

    def render(self) -> dict[str, Any]:
        """The OpenAI file object."""
        return file_object(self.id, len(self.data), self.created_at, self.filename, self.purpose)


def file_object(
    file_id: str, size: int, created_at: float, filename: str, purpose: str
) -> dict[str, Any]:
    """An OpenAI file object."""
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(created_at),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


def _param(header: str, name: str) -> str | None:
    """A parameter (`name="value"` or `name=value`) of a header such as Content-Disposition."""
    for piece in header.split(";")[1:]:
        key, _, value = piece.strip().partition("=")
        if key.strip().lower() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value
    return None


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename, content). Raises ValueError."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ValueError("expected multipart/form-data")
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise ValueError("multipart boundary missing")
    delimiter = b"--" + boundary.encode("latin-1")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # closing delimiter
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disposition = ""
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value.strip()
        field = _param(disposition, "name")
        if field is not None:
            fields[field] = (_param(disposition, "filename"), content)
    return fields


def jsonl_lines(data: bytes) -> list[bytes]:
    """The non-blank lines of a JSONL document."""
    return [line for line in data.splitlines() if line.strip()]


def _hex(*parts: object) -> str:
    # Deterministic ids: reading the same output twice gives the same bytes.
    return hashlib.sha1(":".join(map(str, parts)).encode()).hexdigest()[:24]


def _echo(line: bytes, index: int) -> tuple[str, str, str]:
    """custom_id, model and a text to echo back from one input line."""
    try:
        request = json.loads(line)
    except ValueError:
        request = {}
    if not isinstance(request, dict):
        request = {}
    body = request.get("body")
    if not isinstance(body, dict):
        body = {}
    text = ""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        text = str(messages[-1].get("content", ""))
    elif "input" in body:
        text = str(body["input"])
    custom_id = str(request.get("custom_id", f"request-{index + 1}"))
    return custom_id, str(body.get("model", "gpt-4o-mini")), text


def build_output(
    batch_id: str,
    count: int,
    created_at: float,
    input_data: bytes | None,
    output_lines: Sequence[Any] | None,
) -> bytes:
    """Output JSONL: `output_lines` verbatim if given, else one echo answer per done request."""
    if output_lines is not None:
        rendered = [
            line if isinstance(line, str) else json.dumps(line, separators=(",", ":"))
            for line in output_lines
        ]
        return "".join(line.rstrip("\n") + "\n" for line in rendered).encode()
    inputs = jsonl_lines(input_data) if input_data is not None else []
    out = []
    for i in range(count):
        custom_id, model, text = _echo(inputs[i] if i < len(inputs) else b"{}", i)
        h = _hex(batch_id, i)
        completion = {
            "id": "chatcmpl-" + h,
            "object": "chat.completion",
            "created": int(created_at),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"echo: {text}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        line = {
            "id": "batch_req_" + h,
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": "req_" + h, "body": completion},
            "error": None,
        }
        out.append(json.dumps(line, separators=(",", ":")) + "\n")
    return "".join(out).encode()
