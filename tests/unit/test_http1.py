"""HTTP/1.1 framing of the lean async client (sans I/O): what is sent, and how answers are read.

Answers are fed whole and in every split, since a socket may deliver them in any pieces.
"""

from __future__ import annotations

import pytest

from airflow_portkey._transport._http1 import (
    Malformed,
    Response,
    ResponseParser,
    check_header,
    request_bytes,
)

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"id":"b1"}'


def read(raw: bytes, *, method: str = "GET", close: bool = False) -> Response:
    """Feed ``raw`` in one piece, then byte by byte: both must give the same response."""
    whole = ResponseParser(method=method).feed(raw) if not close else None
    if close:
        parser = ResponseParser(method=method)
        assert parser.feed(raw) is None
        whole = parser.feed(b"")
    assert whole is not None
    parser = ResponseParser(method=method)
    pieces = [raw[i : i + 1] for i in range(len(raw))] + ([b""] if close else [])
    results = [parser.feed(piece) for piece in pieces]
    assert results[-1] == whole and all(r is None for r in results[:-1])
    return whole


def test_request_bytes() -> None:
    sent = request_bytes("POST", "/v1/batches/b1/cancel", [("Host", "api.portkey.ai")], b"")
    assert sent == b"POST /v1/batches/b1/cancel HTTP/1.1\r\nHost: api.portkey.ai\r\n" + (
        b"Content-Length: 0\r\n\r\n"
    )
    get = request_bytes("GET", "/v1/batches?limit=2", [("Host", "h")], b"")
    assert get == b"GET /v1/batches?limit=2 HTTP/1.1\r\nHost: h\r\n\r\n"
    body = request_bytes("POST", "/v1/x", [("Host", "h")], b'{"a":1}')
    assert body.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("x-portkey-api-key", "pk\r\nX-Evil: 1", "line break"),
        ("x-portkey-config", "a\nb", "line break"),
        ("x-bad", "nul\0", "NUL"),
        ("bad name", "v", "not a valid HTTP token"),
        ("", "v", "not a valid HTTP token"),
    ],
)
def test_header_that_would_split_the_request_is_refused(
    name: str, value: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        check_header(name, value)


def test_content_length_answer() -> None:
    response = read(OK)
    assert response == Response(
        200, {"content-type": "application/json", "content-length": "11"}, b'{"id":"b1"}', True
    )


def test_chunked_answer_with_extensions_and_trailers() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"id\r\n7\r\n":"b1"}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    response = read(raw)
    assert response.body == b'{"id":"b1"}' and response.reusable


def test_repeated_headers_are_joined_and_names_lowered() -> None:
    raw = (
        b"HTTP/1.1 429 Too Many\r\nX-A: 1\r\nx-a: 2\r\n"
        b"Retry-After:  7 \r\nContent-Length: 0\r\n\r\n"
    )
    response = read(raw)
    assert response.status == 429
    assert response.headers == {"x-a": "1, 2", "retry-after": "7", "content-length": "0"}


def test_interim_answers_are_skipped() -> None:
    response = read(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert response.status == 200 and response.body == b'{"id":"b1"}'


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    response = read(f"HTTP/1.1 {status} X\r\nContent-Length: 5\r\n\r\n".encode())
    assert response.body == b"" and response.reusable


def test_body_until_close_is_read_and_the_connection_not_reused() -> None:
    response = read(b"HTTP/1.1 200 OK\r\n\r\nall of it", close=True)
    assert response.body == b"all of it" and not response.reusable


@pytest.mark.parametrize(
    "raw",
    [
        OK.replace(b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"),
        OK.replace(b"Content-Length", b"Connection: close\r\nContent-Length"),
        OK + b"HTTP/1.1 200 OK\r\n",  # bytes nobody asked for
    ],
    ids=["http/1.0", "connection-close", "extra-bytes"],
)
def test_connection_not_reused_when_the_answer_says_so(raw: bytes) -> None:
    response = ResponseParser().feed(raw)
    assert response is not None and response.body == b'{"id":"b1"}'
    assert not response.reusable


def test_reason_phrase_is_optional() -> None:
    assert read(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status == 200


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "closed the connection before answering"),
        (b"HTTP/1.1 200 OK\r\nContent-Len", "closed the connection before answering"),
        (OK[:-3], "in the middle of the body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "middle of the body"),
    ],
)
def test_connection_closed_early(raw: bytes, problem: str) -> None:
    parser = ResponseParser()
    if raw:
        assert parser.feed(raw) is None
    with pytest.raises(Malformed, match=problem):
        parser.feed(b"")  # the connection closes
    assert parser.started is bool(raw)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"SMTP ready\r\n\r\n", "bad status line"),
        (b"HTTP/2 200\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "does not end"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "switched protocols"),
    ],
)
def test_malformed_answers_are_refused(raw: bytes, problem: str) -> None:
    with pytest.raises(Malformed, match=problem):
        ResponseParser().feed(raw)


def test_oversized_head_is_refused() -> None:
    parser = ResponseParser()
    with pytest.raises(Malformed, match="too large"):
        parser.feed(b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 70_000)


def test_head_request_has_no_body() -> None:
    response = read(OK[: OK.index(b"\r\n\r\n") + 4], method="HEAD")
    assert response.body == b"" and response.reusable
