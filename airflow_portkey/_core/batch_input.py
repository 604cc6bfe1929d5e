"""Batch input: checked before upload, so a bad request line fails the task, not the batch."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_portkey._core.errors import PortkeyConfigError
from airflow_portkey._core.messages import Upload

REQUIRED_FIELDS = ("custom_id", "method", "url", "body")
# Portkey's metadata: at most 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def requests_to_jsonl(requests: Sequence[Mapping[str, Any]]) -> bytes:
    """One JSON line per request, after checking each has what OpenAI's batch format needs."""
    if not requests:
        raise PortkeyConfigError("input: the list of requests is empty")
    seen: set[str] = set()
    lines = []
    for number, request in enumerate(requests, start=1):
        if not isinstance(request, Mapping):
            raise PortkeyConfigError(f"input: request {number} is not a dict")
        missing = [name for name in REQUIRED_FIELDS if name not in request]
        if missing:
            raise PortkeyConfigError(f"input: request {number} lacks {', '.join(missing)}")
        custom_id = str(request["custom_id"])
        if custom_id in seen:
            raise PortkeyConfigError(f"input: custom_id {custom_id!r} appears twice")
        seen.add(custom_id)
        lines.append(json.dumps(request, separators=(",", ":"), ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def upload_from(value: object) -> Upload:
    """An Upload from a list of request dicts, a local path, or an ObjectStoragePath."""
    if isinstance(value, list | tuple):
        return Upload(requests_to_jsonl(value), "batch_input.jsonl")
    if isinstance(value, str | os.PathLike) and not hasattr(value, "protocol"):
        path = Path(value)
        if not path.is_file():
            raise PortkeyConfigError(f"input: batch input file {str(path)!r} does not exist")
        return Upload(path, path.name)
    if hasattr(value, "read_bytes") and hasattr(value, "name"):
        # An ObjectStoragePath (s3://..., gs://..., file://...).
        if not value.exists():  # type: ignore[attr-defined]
            raise PortkeyConfigError(f"input: {value} does not exist")
        return Upload(value.read_bytes(), str(value.name))  # type: ignore[attr-defined]
    raise PortkeyConfigError(
        "input must be a list of request dicts, a local JSONL path or an ObjectStoragePath, "
        f"not {type(value).__name__}"
    )


def batch_metadata(user: Mapping[str, Any] | None, airflow: Mapping[str, str]) -> dict[str, str]:
    """The user's metadata plus the Airflow ids, within Portkey's limits."""
    merged = {**{str(k): str(v) for k, v in (user or {}).items()}, **airflow}
    if len(merged) > MAX_METADATA_PAIRS:
        raise PortkeyConfigError(
            f"metadata: {len(merged)} pairs with the Airflow ids; Portkey keeps at most "
            f"{MAX_METADATA_PAIRS}"
        )
    for key in merged:
        if len(key) > MAX_METADATA_KEY:
            raise PortkeyConfigError(f"metadata: key {key[:20]!r}... is over {MAX_METADATA_KEY}")
    return {key: value[:MAX_METADATA_VALUE] for key, value in merged.items()}
