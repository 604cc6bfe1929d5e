"""The requests of Portkey's batch API, built and checked before anything is sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_portkey._core.ids import check_batch_id
from airflow_portkey._core.messages import (
    ApiRequest,
    Upload,
)


def get_batch_request(
    batch_id: str, *, share_for: float = 0.0, deadline: float | None = None
) -> ApiRequest:
    """Read a batch; ``share_for`` and ``deadline`` as :class:`ApiRequest` says (a wait's poll)."""
    return ApiRequest(
        "GET", f"/batches/{check_batch_id(batch_id)}", share_for=share_for, deadline=deadline
    )


def cancel_batch_request(batch_id: str) -> ApiRequest:
    return ApiRequest("POST", f"/batches/{check_batch_id(batch_id)}/cancel")


def batch_output_request(batch_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/batches/{check_batch_id(batch_id)}/output", stream=True)


def file_content_request(file_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/files/{check_batch_id(file_id)}/content", stream=True)


def list_batches_request(limit: int, after: str | None) -> ApiRequest:
    if not 1 <= limit <= 100:
        raise ValueError(f"limit must be between 1 and 100, got {limit}")
    params = {"limit": str(limit)}
    if after:
        params["after"] = after
    return ApiRequest("GET", "/batches", params=params)


def create_batch_request(
    input_file_id: str, endpoint: str, completion_window: str, metadata: Mapping[str, str] | None
) -> ApiRequest:
    for name, value in (
        ("input_file_id", input_file_id),
        ("endpoint", endpoint),
        ("completion_window", completion_window),
    ):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    body: dict[str, Any] = {
        "input_file_id": input_file_id,
        "endpoint": endpoint,
        "completion_window": completion_window,
    }
    if metadata:
        body["metadata"] = dict(metadata)
    # Portkey has no idempotency key for batches: a repeated create may make a second batch.
    return ApiRequest("POST", "/batches", json_body=body, idempotent=False)


def upload_file_request(upload: Upload, purpose: str) -> ApiRequest:
    return ApiRequest("POST", "/files", form={"purpose": purpose}, upload=upload)
