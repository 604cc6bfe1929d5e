"""Reading Portkey's answers: JSON, batches, and the typed error of an error status."""

from __future__ import annotations

import codecs
import functools
import html
import itertools
import json
import re
from typing import Any

from airflow_portkey._core.batches import Batch
from airflow_portkey._core.errors import (
    PortkeyAPIError,
    PortkeyAuthError,
    PortkeyBudgetExceededError,
    PortkeyConflictError,
    PortkeyNotFoundError,
    PortkeyRateLimitError,
    PortkeyResponseError,
    PortkeyServerError,
    PortkeyTimeoutError,
    PortkeyValidationError,
)
from airflow_portkey._core.messages import (
    ApiRequest,
    ApiResponse,
)

_STATUS_ERRORS: dict[int, type[PortkeyAPIError]] = {
    400: PortkeyValidationError,
    401: PortkeyAuthError,
    403: PortkeyAuthError,
    404: PortkeyNotFoundError,
    408: PortkeyTimeoutError,
    409: PortkeyConflictError,
    412: PortkeyBudgetExceededError,
    422: PortkeyValidationError,
    429: PortkeyRateLimitError,
}

_HINTS: dict[int, str] = {
    401: "check the API key, virtual key and provider key in Airflow connection {conn}",
    403: "the key in Airflow connection {conn} is not allowed to do this; check its permissions",
    404: "check the batch id and the base URL (host) of Airflow connection {conn}",
    412: "a Portkey budget or rate limit for this key is exhausted; raise it or wait",
    422: "Portkey refused the request's content; check the task's arguments",
}

# A tag cannot hold "<": each failed match stops at the next "<", so a page of unclosed tags
# is read in linear time ("<[^>]+>" tried every "<" to the end of the page: quadratic).
_TAGS = re.compile(r"<[^<>]*>")


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every place a secret covers in ``text`` with ``***``: all occurrences of every
    secret first, then one ``***`` for each run of places that overlap or touch (replaced one
    secret after another, the tail of one overlapping another survived). A secret is also
    found as JSON spells it (escaped quotes, backslashes, ``\\uXXXX``, ``\\/``): a JSON text
    shown as it stands, such as an error body refused as JSON, holds it so."""
    spans: list[tuple[int, int]] = []
    for spelling in _spellings(secrets):
        start = text.find(spelling)
        while start != -1:
            spans.append((start, start + len(spelling)))
            start = text.find(spelling, start + 1)
    if not spans:
        return text
    spans.sort()
    pieces: list[str] = []
    done = 0
    first, last = spans[0]
    for start, end in spans[1:]:
        if start <= last:
            last = max(last, end)
            continue
        pieces += (text[done:first], "***")
        done, (first, last) = last, (start, end)
    pieces += (text[done:first], "***", text[last:])
    return "".join(pieces)


@functools.lru_cache(maxsize=64)  # one hook's secrets
def _spellings(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Each secret, and each other way JSON writes it."""
    found: dict[str, None] = {}
    for secret in secrets:
        if not secret:
            continue
        found[secret] = None
        for ascii_only in (True, False):
            escaped = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
            found[escaped] = None
            found[escaped.replace("/", "\\/")] = None
    return tuple(found)


def redactable(secrets: tuple[str, ...], min_length: int) -> tuple[str, ...]:
    """The secrets to redact: those of ``min_length`` characters or more, Airflow's own minimum
    for masking (``[logging] min_length_masked_secret``, given by the hook). A shorter value
    (a routing header's "1") would be cut out of every id and word that holds it, and hides
    nothing: Airflow's masker leaves it in every log line too."""
    return tuple(secret for secret in secrets if len(secret) >= min_length)


# What an error shows of Portkey's answer, after redaction: a page's title (or text), and its
# message; longer ones are cut (an answer may carry a megabyte of message).
_MAX_PAGE_TEXT = 200
_MAX_MESSAGE = 2_000
_MAX_FIELD = 200  # the error's type, code and provider


def _error_fields(
    response: ApiResponse,
) -> tuple[str, str | None, str | None, str | None] | str:
    """Message, type, code and provider from Portkey's JSON error shapes; or, for anything
    else (an HTML page, plain text, the gateway's wrapped upstream page), the page's text."""
    body = response.body
    try:
        data = load_json(body.decode(json.detect_encoding(body), "surrogatepass"))
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        provider = data.get("provider") if isinstance(data.get("provider"), str) else None
        if isinstance(error, dict):
            code = error.get("code")
            return (
                _as_text(error.get("message") or "no message"),
                error.get("type") if isinstance(error.get("type"), str) else None,
                _as_text(code) if code is not None else None,
                provider,
            )
        if isinstance(error, str):
            return error, None, None, provider
        if "message" in data:
            return _as_text(data["message"]), None, None, provider
        wrapped = data.get("html-message")
        if isinstance(wrapped, str):
            # The gateway wraps an upstream's non-JSON answer (an HTML page, a fetch error).
            return wrapped
    return _page_text(body, response.headers.get("content-type"))


def _as_text(value: Any) -> str:
    """A field of an error as text: a string as it is; anything else (a list, an object, a
    number) as JSON without escapes, so a secret inside reads as itself and is redacted
    (Python's repr would escape a backslash, a quote or an invisible character in it)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CHARSET = re.compile(r"""charset=["']?([\w.:-]+)""", re.IGNORECASE)


def _page_text(body: bytes, content_type: str | None) -> str:
    """A page's text by its byte-order mark, else its declared charset, else what its first
    bytes say (UTF-16 or 32 without a mark, else UTF-8); any NUL left dropped: read as UTF-8,
    a UTF-16 page shows a key one NUL apart, which no redaction matches."""
    encoding = next((codec for bom, codec in _BOMS if body.startswith(bom)), None)
    declared = _CHARSET.search(content_type or "")
    encoding = encoding or (declared[1] if declared else json.detect_encoding(body))
    try:
        text = body.decode(encoding, "replace")
    except LookupError:  # a charset Python does not know, or not a text encoding
        text = body.decode("utf-8", "replace")
    return text.replace("\x00", "")


def _page_message(page: str, secrets: tuple[str, ...]) -> str:
    """A page's title (or its text) as one line. Redacted before each step that could hide a
    secret from a later redaction (tags, entities, whitespace folded: a value with two spaces
    no longer matches once folded), after each that could spell one, and before the cut."""
    page = redact(page, secrets)
    text = redact(html.unescape(_TAGS.sub(" ", _title(page) or page)), secrets)
    return redact(" ".join(text.split()), secrets)[:_MAX_PAGE_TEXT] or "empty body"


def _title(page: str) -> str | None:
    """What a page's first <title> element holds, found with two searches of the page (a
    lazy regex tried every "<title>" of a page of them to its end: quadratic)."""
    lowered = page.lower()
    opening = lowered.find("<title>")
    if opening == -1:
        return None
    closing = lowered.find("</title>", opening)
    return page[opening + len("<title>") : closing] if closing != -1 else None


def _shown(text: str | None, secrets: tuple[str, ...], limit: int) -> str | None:
    """``text`` redacted, then cut to ``limit`` characters saying how many more there were."""
    if text is None:
        return None
    text = redact(text, secrets)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def api_error(
    response: ApiResponse, request: ApiRequest, *, conn_id: str, secrets: tuple[str, ...]
) -> PortkeyAPIError:
    """The typed error for an error status, carrying Portkey's message (secrets redacted)."""
    status = response.status_code
    fields = _error_fields(response)
    if isinstance(fields, str):
        message, error_type, code, provider = _page_message(fields, secrets), None, None, None
    else:
        message, error_type, code, provider = fields
    error_class = _STATUS_ERRORS.get(status) or (
        PortkeyServerError if status >= 500 else PortkeyAPIError
    )
    hint = _HINTS.get(status)
    return error_class(
        _shown(message, secrets, _MAX_MESSAGE) or "no message",
        status_code=status,
        method=request.method,
        path=request.path,
        error_type=_shown(error_type, secrets, _MAX_FIELD),
        code=_shown(code, secrets, _MAX_FIELD),
        provider=_shown(provider, secrets, _MAX_FIELD),
        hint=hint.format(conn=repr(conn_id)) if hint else None,
    )


MAX_JSON_DEPTH = 64
"""Arrays and objects nested deeper than this are refused: Portkey's batch objects nest about
4 deep, and json (from ~1000 levels) and the redaction walk (from ~500) would otherwise fail
with a RecursionError instead of a typed error."""

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class _NotJson(ValueError):
    """JSON that Python's json would read but the provider refuses; says what it is."""


def _too_deep(text: str) -> bool:
    """Whether ``text``'s arrays and objects nest deeper than :data:`MAX_JSON_DEPTH` (brackets
    inside strings do not count), found without recursing."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:  # nearly every answer: two scans
        return False
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    depths = itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets))
    return max(depths, default=0) > MAX_JSON_DEPTH


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; an XCom or trigger event holding one is refused
    # later, when the batch has already completed.
    raise _NotJson(f"{name}, which is not JSON")


_STRICT_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def load_json(text: str) -> Any:
    """``json.loads``, refusing (ValueError) what json itself would fail on with another
    exception (nesting deeper than :data:`MAX_JSON_DEPTH`) or would read but not write back
    as JSON (NaN, Infinity)."""
    if _too_deep(text):
        raise _NotJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return _STRICT_DECODER.decode(text)


def parse_json(response: ApiResponse, request: ApiRequest) -> tuple[Any, str]:
    """The JSON of an answer, and its text (for :func:`redact_json`)."""
    body = response.body
    try:
        # What json.loads does with bytes, done here to keep the text.
        text = body.decode(json.detect_encoding(body), "surrogatepass")
        return load_json(text), text
    except ValueError as error:
        what = str(error) if isinstance(error, _NotJson) else "a body that is not JSON"
        raise PortkeyResponseError(
            f"Portkey answered {response.status_code} on {request.describe()} with {what} "
            f"({len(body)} bytes)"
        ) from None


def redact_json(value: Any, text: str, secrets: tuple[str, ...]) -> Any:
    """``value``, parsed from ``text``, with any secret it echoes redacted from its strings at
    any depth: a batch, a page of them or a file object goes to XComs, trigger events and
    error messages as it is."""
    if secrets and _may_hold_secret(text, secrets):
        return _redact_leaves(value, secrets, _any_secret(secrets))
    return value


def _may_hold_secret(text: str, secrets: tuple[str, ...]) -> bool:
    """False when no string parsed from ``text`` can hold a secret: without an escape ('\\'),
    every JSON string is a piece of the text as it stands, and no secret is in the text.
    Nearly every answer: one scan of its text instead of a walk of everything parsed."""
    if "\\" in text:
        return True
    for secret in secrets:  # noqa: SIM110 - a loop, not any() and a generator: every answer
        if secret and secret in text:
            return True
    return False


def is_batch_object(body: object) -> bool:
    """A real batch, as opposed to the ``{}`` or ``{"status": "success"}`` some cancels return."""
    return (
        isinstance(body, dict)
        and isinstance(body.get("id"), str)
        and "status" in body
        and ("created_at" in body or "input_file_id" in body or "endpoint" in body)
    )


@functools.lru_cache(maxsize=64)  # one hook's secrets, read on every poll
def _any_secret(secrets: tuple[str, ...]) -> re.Pattern[str]:
    """One search for all of a connection's secrets (a poll walks every string of a batch)."""
    return re.compile("|".join(re.escape(secret) for secret in secrets if secret) or "(?!)")


@functools.lru_cache(maxsize=64)
def _numeric_secret(secrets: tuple[str, ...]) -> bool:
    """Whether a secret could be echoed as a JSON number (all digits, say a header value)."""
    return any(secret.isdigit() for secret in secrets)


def _redact_leaves(value: Any, secrets: tuple[str, ...], found: re.Pattern[str]) -> Any:
    """``value`` with every secret redacted from its strings at any depth, object keys
    included (metadata may echo a credential as a key); ``value`` itself (no copy, no
    garbage) when it holds none, as nearly every answer."""
    if type(value) is str:
        return redact(value, secrets) if found.search(value) else value
    if type(value) is int or type(value) is float:  # an all-digit secret echoed as a number
        return redact(str(value), secrets) if found.search(str(value)) else value
    if type(value) is dict:
        if any(found.search(key) for key in value):
            # Rebuilt in order; two keys redacted alike keep the last one's value, as JSON does.
            return {
                redact(key, secrets): _redact_leaves(item, secrets, found)
                for key, item in value.items()
            }
        changed: dict[Any, Any] | None = None
        numeric = _numeric_secret(secrets)
        for key, item in value.items():
            if item is None or (type(item) is int and not numeric):  # most fields of a batch
                continue
            new = _redact_leaves(item, secrets, found)
            if new is not item:
                changed = dict(value) if changed is None else changed
                changed[key] = new
        return value if changed is None else changed
    if type(value) is list:
        listed = [_redact_leaves(item, secrets, found) for item in value]
        return listed if any(a is not b for a, b in zip(listed, value, strict=True)) else value
    return value


def read_batch(body: object, request: ApiRequest) -> Batch:
    """The batch in an answer, its secrets redacted (:func:`redact_json`)."""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        raise PortkeyResponseError(f"Portkey's answer to {request.describe()} is not a batch")
    return Batch.from_raw(body, copy=False)  # parsed from the answer: no one else holds it
