"""Batch input is checked before upload (a bad request line fails the task, not the batch),
and metadata stays within Portkey's limits. Pure: ``_core.batch_input`` and ``endpoints``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_portkey._core import endpoints
from airflow_portkey._core.batch_input import batch_metadata, requests_to_jsonl, upload_from
from airflow_portkey.exceptions import PortkeyConfigError

LINE = {"custom_id": "req-0", "method": "POST", "url": "/v1/chat/completions", "body": {}}


def test_requests_become_compact_jsonl() -> None:
    second = {**LINE, "custom_id": "req-1", "body": {"text": "ünï"}}
    data = requests_to_jsonl([LINE, second])
    assert data.decode().splitlines() == [
        json.dumps(LINE, separators=(",", ":")),
        json.dumps(second, separators=(",", ":"), ensure_ascii=False),
    ]
    assert data.endswith(b"\n")


@pytest.mark.parametrize(
    ("requests", "words"),
    [
        ([], "the list of requests is empty"),
        ([{"custom_id": "a", "method": "POST", "url": "/v1/x"}], "request 1 lacks body"),
        ([{"custom_id": "a"}], "request 1 lacks method, url, body"),
        ([LINE, LINE], "custom_id 'req-0' appears twice"),
        ([LINE, "not a dict"], "request 2 is not a dict"),
    ],
    ids=["empty", "missing-field", "missing-fields", "duplicate-id", "not-a-dict"],
)
def test_a_bad_request_list_is_refused_naming_the_request(requests: Any, words: str) -> None:
    with pytest.raises(PortkeyConfigError, match=words):
        requests_to_jsonl(requests)


def test_a_path_is_read_on_every_attempt(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"one\n")
    upload = upload_from(str(path))
    path.write_bytes(b"two\n")
    assert (upload.filename, upload.read()) == ("in.jsonl", b"two\n")


@pytest.mark.parametrize("value", ["/no/such/file.jsonl", 42, {"a": 1}], ids=repr)
def test_input_that_cannot_be_uploaded_is_refused(value: object) -> None:
    with pytest.raises(PortkeyConfigError, match="input"):
        upload_from(value)


@pytest.mark.parametrize(
    "field",
    ["input_file_id", "endpoint", "completion_window"],
)
def test_create_refuses_empty_arguments(field: str) -> None:
    arguments = {"input_file_id": "file-1", "endpoint": "/v1/x", "completion_window": "24h"}
    arguments[field] = "  "
    with pytest.raises(ValueError, match=f"{field} must be a non-empty string"):
        endpoints.create_batch_request(metadata=None, **arguments)


def test_metadata_carries_the_airflow_ids_over_the_users() -> None:
    merged = batch_metadata(
        {"team": "ml", "dag_id": "mine", "n": 1}, {"dag_id": "d", "run_id": "r"}
    )
    assert merged == {"team": "ml", "dag_id": "d", "n": "1", "run_id": "r"}


def test_metadata_values_are_cut_to_portkeys_limit() -> None:
    assert batch_metadata({"long": "x" * 600}, {}) == {"long": "x" * 512}


@pytest.mark.parametrize(
    ("user", "words"),
    [
        ({f"k{i}": "v" for i in range(15)}, "17 pairs"),
        ({"k" * 65: "v"}, "is over 64"),
    ],
    ids=["too-many-pairs", "key-too-long"],
)
def test_metadata_beyond_portkeys_limits_is_refused(user: dict[str, str], words: str) -> None:
    with pytest.raises(PortkeyConfigError, match=words):
        batch_metadata(user, {"dag_id": "d", "run_id": "r"})
