"""Reading Portkey's answers: the error of each status from any of Portkey's body shapes,
secrets redacted from every message, and answers that are not what was asked for."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_portkey._core import endpoints, plans
from airflow_portkey._core.answers import api_error, redact, redactable
from airflow_portkey._core.retry import RetryPolicy
from airflow_portkey._core.waits import WaitOutcome, event_payload
from airflow_portkey.exceptions import PortkeyAPIError, PortkeyResponseError

from .script import CONN_ID, answer, batch, context, drive

GET = endpoints.get_batch_request("batch_1")
SECRET = "sk-SECRET-provider-5e6f"


@pytest.mark.parametrize(
    ("body", "message", "provider"),
    [
        (
            {"error": {"message": "bad key", "type": "auth"}, "provider": "openai"},
            "bad key",
            "openai",
        ),
        ({"error": "plain text error"}, "plain text error", None),
        ({"status": "failure", "message": "gateway says no"}, "gateway says no", None),
        (
            {"html-message": "<html><title>Upstream Down</title></html>"},
            "Upstream Down",
            None,
        ),
        (
            b"<html><head><title>502 Bad Gateway</title></head><body>x</body></html>",
            "502 Bad Gateway",
            None,
        ),
        (b"", "empty body", None),
        (b"plain <b>text</b>", "plain text", None),
    ],
    ids=["provider", "string-error", "gateway", "wrapped-html", "html", "empty", "text"],
)
def test_the_message_is_read_from_every_error_shape(
    body: object, message: str, provider: str | None
) -> None:
    error = api_error(answer(500, body), GET, conn_id=CONN_ID, secrets=())
    assert (error.portkey_message, error.provider) == (message, provider)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422, 429, 500, 503])
def test_an_error_echoing_a_secret_is_redacted(status: int) -> None:
    body = {"error": {"message": f"key {SECRET} refused"}}
    error = api_error(answer(status, body), GET, conn_id=CONN_ID, secrets=(SECRET,))
    assert SECRET not in str(error) and SECRET not in error.portkey_message
    assert "key *** refused" in str(error)


def test_the_longest_secret_is_redacted_first() -> None:
    assert redact("pk-abc-long and pk-abc", ("pk-abc", "pk-abc-long")) == "*** and ***"


def test_an_html_page_echoing_a_secret_is_redacted() -> None:
    page = f"<html><title>Denied for {SECRET}</title></html>".encode()
    error = api_error(answer(503, page), GET, conn_id=CONN_ID, secrets=(SECRET,))
    assert error.portkey_message == "Denied for ***"


def test_a_long_html_title_ending_in_a_secret_shows_none_of_it() -> None:
    # Cut at 200 characters before redaction, the key's head would no longer match and show.
    title = "x" * (200 - len(SECRET) + 1) + SECRET
    page = f"<html><title>{title}</title></html>".encode()
    error = api_error(answer(502, page), GET, conn_id=CONN_ID, secrets=(SECRET,))
    assert SECRET[:-1] not in str(error) and SECRET[:8] not in error.portkey_message
    assert error.portkey_message.endswith("***")


def test_a_batch_echoing_a_secret_reaches_xcom_and_events_redacted() -> None:
    # The batch object goes to XCom and into the trigger event as it is: its errors, and any
    # other field, must hold no credential the provider echoed.
    echoed = batch(
        status="failed",
        errors={"data": [{"code": "auth", "message": f"bad key {SECRET}", "line": 1}]},
        metadata={"note": f"Bearer {SECRET}"},
    )
    plain = batch()
    ctx = context(secrets=(SECRET,))
    failed = drive(plans.get_batch(ctx, "batch_1"), [echoed]).result
    running = drive(plans.get_batch(ctx, "batch_1"), [plain]).result
    stored = json.dumps(
        [failed.to_xcom(), event_payload([WaitOutcome("failure", "b", failed, "")])]
    )
    assert SECRET not in stored
    assert failed.errors == ("line 1: bad key ***",)
    assert failed.raw["metadata"] == {"note": "Bearer ***"}
    assert running.raw["created_at"] == 1_700_000_000 and running.status.value == "in_progress"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
@pytest.mark.parametrize("spelling", ["plain", "escaped"])
def test_a_batch_echoing_a_secret_in_any_json_spelling_is_redacted(
    spelling: str, encoding: str
) -> None:
    # JSON escapes (\u002d for '-') spell a secret that the answer's text does not hold as
    # it stands; a UTF-16 answer holds none of its bytes as UTF-8 would.
    shown = SECRET if spelling == "plain" else "".join(f"\\u{ord(c):04x}" for c in SECRET)
    text = (
        '{"id": "batch_1", "object": "batch", "status": "failed", "created_at": 1700000000, '
        f'"errors": {{"data": [{{"message": "bad key {shown}"}}]}}}}'
    )
    ctx = context(secrets=(SECRET,))
    run = drive(plans.get_batch(ctx, "batch_1"), [answer(200, text.encode(encoding))])
    assert run.result.errors == ("bad key ***",)
    assert SECRET not in json.dumps(run.result.to_xcom())


def test_a_batch_echoing_a_secret_as_a_json_key_is_redacted_from_its_xcom() -> None:
    # Metadata keyed by what it was sent, and an error whose message is an object keyed so.
    body = batch(
        status="failed",
        metadata={SECRET: "echoed", "nested": {f"x-{SECRET}": [{SECRET: 1}]}},
        errors={"data": [{"message": {SECRET: "bad"}, "line": 1}]},
    )
    run = drive(plans.get_batch(context(secrets=(SECRET,)), "batch_1"), [body])
    shown = json.dumps(run.result.to_xcom())
    assert SECRET not in shown and SECRET not in " ".join(run.result.errors)
    assert run.result.to_xcom()["raw"]["metadata"]["***"] == "echoed"  # the value is kept


def test_a_cancel_answer_and_a_list_page_echoing_a_secret_as_a_key_are_redacted() -> None:
    echoed = batch(status="cancelling", metadata={SECRET: "x"})
    ctx = context(secrets=(SECRET,))
    cancelled = drive(plans.cancel_batch(ctx, "batch_1"), [echoed])
    item = {"id": "b1", "status": "completed", "metadata": {SECRET: "x"}}
    page = {"data": [item], "has_more": False}
    listed = drive(plans.list_page(ctx, 10, None), [answer(200, page)])
    assert SECRET not in json.dumps(cancelled.result.to_xcom())
    assert SECRET not in json.dumps(listed.result.batches[0].to_xcom())


def test_a_list_page_echoing_a_secret_is_redacted() -> None:
    page = {
        "data": [{"id": "b1", "status": "failed", "errors": [f"bad key {SECRET}"]}],
        "has_more": False,
    }
    run = drive(plans.list_page(context(secrets=(SECRET,)), 10, None), [answer(200, page)])
    assert run.result.batches[0].errors == ("bad key ***",)


def test_a_lasting_error_echoing_a_secret_is_redacted_after_retries() -> None:
    ctx = context(policy=RetryPolicy(max_retries=1), secrets=(SECRET,))
    echo = answer(503, {"error": {"message": f"upstream refused {SECRET}"}})
    run = drive(plans.get_batch(ctx, "batch_1"), [echo, echo], raises=True)
    assert isinstance(run.error, PortkeyAPIError)
    assert SECRET not in str(run.error) and SECRET not in repr(run.error)


@pytest.mark.parametrize(
    "body",
    [[], {"object": "list"}, {"status": "completed"}, {"id": 42, "status": "completed"}],
    ids=["list", "no-id", "status-only", "id-not-text"],
)
def test_an_answer_that_is_not_a_batch_is_a_response_error(body: object) -> None:
    run = drive(
        plans.get_batch(context(policy=RetryPolicy(max_retries=0)), "batch_1"),
        [answer(200, body)],
        raises=True,
    )
    assert type(run.error) is PortkeyResponseError
    assert str(run.error) == "Portkey's answer to GET /batches/batch_1 is not a batch"


def test_a_list_page_says_where_the_next_page_starts() -> None:
    page = answer(
        200,
        {"data": [{"id": "b3", "status": "completed"}, {"id": "b2"}], "has_more": True},
    )
    run = drive(plans.list_page(context(), 2, None), [page])
    assert run.requests[0].params == {"limit": "2"}
    assert [b.id for b in run.result.batches] == ["b3", "b2"]
    assert run.result.next_after == "b2"
    last = drive(
        plans.list_page(context(), 2, "b2"), [answer(200, {"data": [], "has_more": False})]
    )
    assert last.requests[0].params == {"limit": "2", "after": "b2"}
    assert last.result.next_after is None


@pytest.mark.parametrize(
    ("after", "visited"),
    [("b2", set()), ("b2", {"b4", "b2"})],
    ids=["cursor-does-not-move", "cursor-goes-back"],
)
def test_a_list_page_pointing_back_to_a_page_already_read_ends_the_listing(
    after: str, visited: set[str]
) -> None:
    last = "b2" if not visited else "b4"
    page = answer(
        200, {"data": [{"id": "b9", "status": "completed"}], "has_more": True, "last_id": last}
    )
    run = drive(plans.list_page(context(), 2, after, visited), [page])
    assert [b.id for b in run.result.batches] == ["b9"]
    assert run.result.next_after is None
    assert run.said(logging.WARNING) == [
        f"Portkey's answer to GET /batches says the next page starts after {last!r}, a page "
        "already read; the listing stops here"
    ]


def test_a_list_page_whose_cursor_moves_on_goes_on() -> None:
    page = answer(
        200, {"data": [{"id": "b1", "status": "completed"}], "has_more": True, "last_id": "b1"}
    )
    run = drive(plans.list_page(context(), 2, "b2", {"b4", "b2"}), [page])
    assert run.result.next_after == "b1" and run.notes == []


def test_a_list_answer_without_data_is_a_response_error() -> None:
    run = drive(plans.list_page(context(), 10, None), [batch()], raises=True)
    assert type(run.error) is PortkeyResponseError


@pytest.mark.parametrize("limit", [0, 101, -1])
def test_a_page_size_out_of_range_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be between 1 and 100"):
        endpoints.list_batches_request(limit, None)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "check the API key, virtual key and provider key in Airflow connection"),
        (403, "is not allowed to do this; check its permissions"),
        (404, "check the batch id and the base URL (host) of Airflow connection"),
        (412, "a Portkey budget or rate limit for this key is exhausted"),
        (422, "check the task's arguments"),
    ],
)
def test_an_error_says_what_to_do_about_it(status: int, hint: str) -> None:
    error = api_error(answer(status, {"error": "no"}), GET, conn_id=CONN_ID, secrets=())
    assert error.hint is not None and hint in error.hint
    assert str(error) == f"Portkey answered {status} on GET /batches/batch_1: no ({error.hint})"


@pytest.mark.parametrize("status", [400, 409, 429, 500, 503])
def test_an_error_without_advice_gives_none(status: int) -> None:
    error = api_error(answer(status, {"error": "no"}), GET, conn_id=CONN_ID, secrets=())
    assert error.hint is None
    assert str(error) == f"Portkey answered {status} on GET /batches/batch_1: no"


def _nested(levels: int, inner: str = "1") -> bytes:
    """A batch whose metadata value sits inside ``levels`` arrays (the batch is 2 deep)."""
    return (
        '{"id": "batch_1", "object": "batch", "status": "completed", "created_at": 1, '
        f'"metadata": {{"x": {"[" * levels}{inner}{"]" * levels}}}}}'
    ).encode()


@pytest.mark.parametrize(
    "body",
    [_nested(62), _nested(0, '"' + "[{" * 5000 + '\\""'), _nested(0, "[" + "[],{}," * 5000 + "0]")],
    ids=["64-deep", "brackets-in-a-string", "wide"],
)
def test_an_answer_nested_to_the_depth_limit_is_read(body: bytes) -> None:
    run = drive(plans.get_batch(context(secrets=(SECRET,)), "batch_1"), [answer(200, body)])
    assert run.result.status.value == "completed"


@pytest.mark.parametrize(
    "body",
    [_nested(63), _nested(100_000), _nested(900, '"\\u0041"')],
    ids=["65-deep", "beyond-json", "beyond-the-redaction-walk"],
)
def test_an_answer_nested_deeper_than_the_limit_is_a_response_error(body: bytes) -> None:
    # From ~1000 levels json.loads, from ~500 the redaction walk (an escape in the answer, a
    # secret on the connection) would raise a RecursionError instead.
    ctx = context(policy=RetryPolicy(max_retries=0), secrets=(SECRET,))
    run = drive(plans.get_batch(ctx, "batch_1"), [answer(200, body)], raises=True)
    assert type(run.error) is PortkeyResponseError
    assert "GET /batches/batch_1 with JSON nested deeper than 64 levels" in str(run.error)


def test_an_error_answer_nested_too_deep_is_still_its_typed_error() -> None:
    body = b'{"error": {"message": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    error = api_error(answer(503, body), GET, conn_id=CONN_ID, secrets=(SECRET,))
    assert error.status_code == 503 and type(error).__name__ == "PortkeyServerError"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_an_answer_with_a_number_json_does_not_allow_is_a_response_error(constant: str) -> None:
    # Python's json reads them; the XCom push of the batch would fail on them after it completed.
    body = f'{{"id": "batch_1", "status": "completed", "created_at": {constant}}}'.encode()
    ctx = context(policy=RetryPolicy(max_retries=0))
    run = drive(plans.get_batch(ctx, "batch_1"), [answer(200, body)], raises=True)
    assert type(run.error) is PortkeyResponseError
    assert f"GET /batches/batch_1 with {constant}, which is not JSON" in str(run.error)


def test_an_answer_whose_strings_say_nan_is_read() -> None:
    body = b'{"id": "batch_1", "status": "completed", "created_at": 1, "metadata": {"x": "NaN"}}'
    run = drive(plans.get_batch(context(), "batch_1"), [answer(200, body)])
    assert run.result.raw["metadata"] == {"x": "NaN"}
    json.dumps(run.result.to_xcom(), allow_nan=False)


def test_secrets_shorter_than_airflows_minimum_are_not_redacted() -> None:
    # A routing header's "1" would otherwise turn batch_1 into batch_*** in every answer.
    secrets = redactable(("1", "true", "abcde", SECRET), 5)
    assert secrets == ("abcde", SECRET)
    run = drive(
        plans.get_batch(context(secrets=secrets), "batch_1"), [batch(metadata={"a": "true"})]
    )
    assert run.result.id == "batch_1" and run.result.raw["metadata"] == {"a": "true"}


@pytest.mark.parametrize(
    ("page", "content_type"),
    [
        pytest.param(f"denied for {SECRET}".encode("utf-16-le"), "text/plain", id="utf-16 no bom"),
        pytest.param(f"denied for {SECRET}".encode("utf-16"), "text/plain", id="utf-16 bom"),
        pytest.param(f"denied for {SECRET}".encode("utf-32"), "text/plain", id="utf-32 bom"),
        pytest.param(
            f"<title>denied for {SECRET}</title>".encode("utf-16-be"),
            "text/html; charset=UTF-16BE",
            id="declared charset",
        ),
        pytest.param(
            "".join(f"{c}\x00" for c in f"denied for {SECRET}").encode(),
            "text/html; charset=x-unknown",
            id="nuls between characters",
        ),
    ],
)
def test_an_error_page_in_another_encoding_is_read_and_redacted(
    page: bytes, content_type: str
) -> None:
    error = api_error(
        answer(401, page, content_type=content_type), GET, conn_id="c", secrets=(SECRET,)
    )
    assert error.portkey_message == "denied for ***"


def test_an_error_page_spelling_a_secret_with_entities_or_two_spaces_is_redacted() -> None:
    spaced = "Basic  dXNlcjpTRUNSRVQ="  # a header value with two spaces
    entities = "".join(f"&#{ord(c)};" for c in SECRET)
    page = f"<html><title>bad auth {spaced} or\n {entities}</title></html>".encode()
    error = api_error(answer(401, page), GET, conn_id="c", secrets=(SECRET, spaced))
    assert error.portkey_message == "bad auth *** or ***"


def test_error_type_code_and_provider_echoing_a_secret_are_redacted() -> None:
    body = {"error": {"message": "no", "type": SECRET, "code": SECRET}, "provider": SECRET}
    error = api_error(answer(401, body), GET, conn_id="c", secrets=(SECRET,))
    assert (error.error_type, error.code, error.provider) == ("***", "***", "***")


def test_an_error_message_of_a_megabyte_is_cut_after_its_secrets_are_redacted() -> None:
    message = "x" * 1990 + SECRET + "y" * 1_000_000
    error = api_error(
        answer(400, {"error": {"message": message}}), GET, conn_id="c", secrets=(SECRET,)
    )
    assert len(str(error)) < 2_500
    assert SECRET[:5] not in str(error) and "x***yyy" in str(error)
    assert error.portkey_message.endswith("y... (999993 more characters)")
