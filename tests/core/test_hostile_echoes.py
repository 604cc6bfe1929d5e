"""Answers and failures a hostile server crafts to get a connection's secret shown, or to hold
the reader: each test failed before its fix (found by an adversarial review)."""

from __future__ import annotations

import json

import pytest

from airflow_portkey._core import endpoints, plans
from airflow_portkey._core.answers import api_error, parse_json, redact_json
from airflow_portkey._core.messages import ApiResponse
from airflow_portkey._core.settings import settings_from_connection
from airflow_portkey.exceptions import PortkeyConfigError

from .script import CONN_ID, answer

GET = endpoints.get_batch_request("batch_1")


def pieces(secret: str, size: int = 5) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


def shown_pieces(text: str, *secrets: str) -> list[str]:
    return [piece for secret in secrets for piece in pieces(secret) if piece in text]


# F1 (high): quadratic regexes on an error page; a 32 MiB page blocks a worker or the
# triggerer's event loop for days (64 KiB: 2.4 s, 256 KiB: 38 s). Fails by pytest's timeout.
@pytest.mark.parametrize("flood", [b"<title>", b"<"], ids=["unclosed-titles", "unclosed-tags"])
def test_an_error_page_of_two_mebibytes_of_unclosed_tags_is_read(flood: bytes) -> None:
    body = flood * ((2 << 20) // len(flood))
    error = api_error(answer(502, body), GET, conn_id=CONN_ID, secrets=("sk-secret-1234",))
    assert error.status_code == 502


# F2 (medium): a message or code that is a JSON array/object is shown as Python's repr, which
# escapes a backslash, a quote beside the other quote, or a non-printable character.
@pytest.mark.parametrize(
    "secret",
    ["sk-abcdefg\\hijklmn", "sk-abc'defg\"hijklmn", "sk-abcdefg\u200bhijklmn"],
    ids=["backslash", "both-quotes", "zero-width-space"],
)
@pytest.mark.parametrize(
    "body",
    [
        lambda s: {"error": {"message": [s]}},
        lambda s: {"error": {"message": "m", "code": {"k": s}}},
        lambda s: {"message": {"detail": s}},
    ],
    ids=["message-list", "code-object", "top-message-object"],
)
def test_an_error_field_that_is_json_never_shows_a_secret_escaped(secret, body) -> None:
    error = api_error(answer(500, body(secret)), GET, conn_id=CONN_ID, secrets=(secret,))
    assert shown_pieces(f"{error} {error.code}", secret) == []


# F3 (medium): an error body that looks like JSON but is refused (NaN, trailing bytes, too
# deep) is shown as raw text, where a secret is spelled with JSON escapes and not redacted.
@pytest.mark.parametrize("tail", [',"x":NaN}', "} trailing", ',"d":' + "[" * 70 + "]" * 70 + "}"])
def test_a_refused_json_error_body_never_shows_a_secret_in_json_escapes(tail: str) -> None:
    secret = "pk-s\u00e9cret-0123456789"  # non-ASCII: JSON writers escape it as \u00e9
    text = '{"error":{"message":"key ' + json.dumps(secret)[1:-1] + '"}' + tail
    error = api_error(ApiResponse(500, {}, text.encode()), GET, conn_id=CONN_ID, secrets=(secret,))
    assert "cret-0123456789" not in str(error)


# F5 (low): numbers are not redacted; an all-digit header value echoed as a JSON number
# reaches the batch (and its XCom) in clear.
def test_a_batch_echoing_an_all_digit_secret_as_a_number_is_redacted() -> None:
    secret = "1234567890"
    body = {
        "id": "batch_1",
        "status": "in_progress",
        "created_at": 1,
        "metadata": {"n": 1234567890},
    }
    value, text = parse_json(answer(200, body), GET)
    assert secret not in json.dumps(redact_json(value, text, (secret,)))


# F6 (low): overlapping secrets are replaced one after the other: the first consumes the
# overlap and the rest of the second survives.
def test_overlapping_secrets_leave_no_piece_of_either() -> None:
    first, second = "aaaaa11111", "11111bbbbbbbbb"
    body = {"error": {"message": "x aaaaa11111bbbbbbbbb"}}
    error = api_error(answer(500, body), GET, conn_id=CONN_ID, secrets=(first, second))
    assert shown_pieces(str(error), first, second) == []


# F7 (low): bad hosts that crash with a library ValueError instead of a PortkeyConfigError
# naming the field; the last one quotes what sits before the '@'.
@pytest.mark.parametrize("host", ["http://[::1", "http://user\uff20host", "http://[pw123456@::1]"])
def test_a_malformed_host_is_a_config_error_naming_the_field(host: str) -> None:
    with pytest.raises(PortkeyConfigError, match="host"):
        settings_from_connection(
            CONN_ID, host=host, password="pk-1234567", extra={"provider": "openai"}
        )


# F2b (medium): a batch answered for another id is named with repr() before redaction, so an
# id echoing a key with a backslash shows the key (after retries, in the error and warnings).
def test_an_answer_about_another_batch_never_shows_a_secret_in_its_id() -> None:
    from .script import batch, context, drive

    secret = "sk-abcdefg\\hijklmn"
    ctx = context(secrets=(secret,))
    run = drive(
        plans.get_batch(ctx, "batch_1"),
        [batch(f"batch_{secret}")] * (ctx.policy.max_retries + 1),
        raises=True,
    )
    shown = str(run.error) + " ".join(wait.reason for wait in run.waits)
    assert run.error is not None and shown_pieces(shown, secret) == [], shown
