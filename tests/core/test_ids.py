"""Batch ids go into the path verbatim; ids that could reach another path are refused before
any request is built, by every request that carries an id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_portkey._core import endpoints, plans
from airflow_portkey._core.ids import MAX_BATCH_ID_LENGTH, check_batch_id
from airflow_portkey._core.messages import ApiRequest
from airflow_portkey._core.waits import WaitSpec, terminal_spec, wait_for_batch
from airflow_portkey.batches import BatchStatus
from airflow_portkey.exceptions import PortkeyConfigError, PortkeyInvalidBatchIdError

from .script import answer, batch, context, drive

ARN = "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Amodel-invocation-job%2Fabc123"

BAD_IDS: list[tuple[Any, str]] = [
    (None, "must be a string, got NoneType"),
    (123, "must be a string, got int"),
    (b"batch_abc", "must be a string, got bytes"),
    ("", "empty or only whitespace"),
    ("   ", "empty or only whitespace"),
    ("\t\n", "empty or only whitespace"),
    ("a/b", "contains '/'"),
    ("a?b", "contains '?'"),
    ("a#b", "contains '#'"),
    ("a b", "contains ' '"),
    ("a\tb", "contains '\\t'"),
    ("a\nb", "contains '\\n'"),
    ("a\rb", "contains '\\r'"),
    ("\x00", "contains '\\x00'"),
    ("batch\x7f", "contains '\\x7f'"),
    ("batch\u200b", "contains '\\u200b'"),
    ("batch\u2028x", "contains '\\u2028'"),
    (".", "path segment"),
    ("..", "path segment"),
    ("%2e%2e", "path segment"),
    ("%2E", "path segment"),
    (".%2e", "path segment"),
    ("..%2ffiles", "path segment"),
    ("%2e%2e%2ffiles", "path segment"),
    ("files%2F..", "path segment"),
    ("a%2F.%2Fb", "path segment"),
    ("a%00b", "escaped '\\x00'"),
    ("a%0Ab", "escaped '\\n'"),
    ("a%3Fb", "escaped '?'"),
    ("a%23b", "escaped '#'"),
    ("a%5Cb", "escaped '\\\\'"),
    ("a\\b", "contains '\\\\'"),
    ("100%", "'%' that is not an escape"),
    ("a%zz", "'%' that is not an escape"),
    ("x" * (MAX_BATCH_ID_LENGTH + 1), "513 characters long; at most 512"),
]
BAD_ID_PARAMS = [pytest.param(value, words, id=repr(value)[:20]) for value, words in BAD_IDS]

GOOD_IDS = [
    pytest.param("batch_abc123", id="openai"),
    pytest.param("3fa85f64-5717-4562-b3fc-2c963f66afa6", id="cohere"),
    pytest.param("1234567890123456789", id="vertex"),
    pytest.param(ARN, id="bedrock-arn-already-encoded"),
    pytest.param("a%2Fb", id="escaped-slash"),
    pytest.param("x" * MAX_BATCH_ID_LENGTH, id="512-chars"),
]

# Every request builder that puts an id in the path.
BUILDERS: dict[str, Callable[[Any], ApiRequest]] = {
    "get": endpoints.get_batch_request,
    "cancel": endpoints.cancel_batch_request,
    "output": endpoints.batch_output_request,
    "file-content": endpoints.file_content_request,
}


@pytest.mark.parametrize(("batch_id", "words"), BAD_ID_PARAMS)
def test_check_batch_id_refuses_with_a_message_naming_the_id(batch_id: Any, words: str) -> None:
    with pytest.raises(PortkeyInvalidBatchIdError) as raised:
        check_batch_id(batch_id)
    assert words in str(raised.value)
    assert str(raised.value).startswith("batch_id")
    assert isinstance(raised.value, PortkeyConfigError)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize("builder", list(BUILDERS))
@pytest.mark.parametrize(("batch_id", "words"), BAD_ID_PARAMS)
def test_every_request_with_an_id_refuses_a_bad_one(
    builder: str, batch_id: Any, words: str
) -> None:
    with pytest.raises(PortkeyInvalidBatchIdError, match="batch_id") as raised:
        BUILDERS[builder](batch_id)
    assert words in str(raised.value)


@pytest.mark.parametrize("plan", ["get", "cancel"])
@pytest.mark.parametrize(("batch_id", "words"), BAD_ID_PARAMS)
def test_plans_refuse_a_bad_id_before_sending_anything(
    plan: str, batch_id: Any, words: str
) -> None:
    make = plans.get_batch if plan == "get" else plans.cancel_batch
    run = drive(make(context(), batch_id), [], raises=True)
    assert isinstance(run.error, PortkeyInvalidBatchIdError)
    assert words in str(run.error)
    assert run.requests == []


@pytest.mark.parametrize(("batch_id", "words"), BAD_ID_PARAMS)
def test_a_wait_refuses_a_bad_id_when_it_is_described(batch_id: Any, words: str) -> None:
    with pytest.raises(PortkeyInvalidBatchIdError, match="batch_id"):
        terminal_spec(batch_id, deadline=0, poll_interval=1)


@pytest.mark.parametrize("batch_id", GOOD_IDS)
def test_good_ids_are_returned_unchanged(batch_id: str) -> None:
    assert check_batch_id(batch_id) is batch_id


@pytest.mark.parametrize("batch_id", GOOD_IDS)
def test_good_ids_reach_every_path_verbatim(batch_id: str) -> None:
    assert endpoints.get_batch_request(batch_id).path == f"/batches/{batch_id}"
    assert endpoints.cancel_batch_request(batch_id).path == f"/batches/{batch_id}/cancel"
    assert endpoints.batch_output_request(batch_id).path == f"/batches/{batch_id}/output"
    assert endpoints.file_content_request(batch_id).path == f"/files/{batch_id}/content"


def test_an_encoded_bedrock_arn_is_never_encoded_again() -> None:
    """Bedrock's cancel answers {"status": "success"}: the batch is then read by the same id."""
    run = drive(
        plans.cancel_batch(context(), ARN),
        [answer(200, {"status": "success"}), batch(ARN, "stopping")],
    )
    assert run.calls == [f"POST /batches/{ARN}/cancel", f"GET /batches/{ARN}"]
    assert (run.result.id, run.result.status) == (ARN, BatchStatus.CANCELLING)


def test_a_wait_polls_the_id_verbatim() -> None:
    spec = WaitSpec(
        ARN,
        success=frozenset({BatchStatus.COMPLETED}),
        failure=frozenset({BatchStatus.FAILED}),
        deadline=2_000_000_000,
        poll_interval=5,
    )
    run = drive(wait_for_batch(context(), spec), [batch(ARN, "completed")])
    assert run.calls == [f"GET /batches/{ARN}"]
