"""HTTP/1.1 framing for the lean async client, sans I/O: requests out, one response in.

Only what talking to Portkey needs: a request with an optional body and a Content-Length,
and a response framed by Content-Length, chunked transfer coding, or the end of the
connection; 1xx answers skipped. Anything else that does not parse is a :class:`Malformed`
answer, which the client reports as a dropped connection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: [^\r\n]*)?")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?")
_NO_BODY_STATUSES = frozenset({204, 304})


class Malformed(Exception):
    """The server's answer is not HTTP/1.1 this parser can read."""


def is_token(name: str) -> bool:
    """Whether ``name`` can be a header name (an HTTP token)."""
    return _TOKEN.fullmatch(name) is not None


def check_header(name: str, value: str) -> None:
    """Refuse a header that could not be sent as given (or would split the request)."""
    if not is_token(name):
        raise ValueError(f"header name {name!r} is not a valid HTTP token")
    if any(char in value for char in "\r\n\0"):
        raise ValueError(f"header {name!r} has a line break or NUL in its value")


def request_bytes(
    method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes
) -> bytes:
    """The request as sent; ``headers`` were checked with :func:`check_header` already."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    """Lower-case names; a repeated header's values joined with ", "."""
    body: bytes
    reusable: bool
    """Whether the connection may carry another request."""


class ResponseParser:
    """Feed it what arrives (b"" once the connection is closed) until it returns a Response."""

    def __init__(self, *, method: str = "GET") -> None:
        self._method = method
        self._buffer = bytearray()
        self._closed = False
        self.started = False
        """Whether any of the answer has arrived."""

    def feed(self, data: bytes) -> Response | None:
        if data:
            self.started = True
            self._buffer += data
        else:
            self._closed = True
        return self._parse()

    def _parse(self) -> Response | None:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise Malformed("the answer's head is too large")
                if self._closed:
                    raise Malformed("the server closed the connection before answering")
                return None
            version, status, headers = _head(bytes(self._buffer[:end]))
            if 100 <= status < 200:
                if status == 101:
                    raise Malformed("the server switched protocols")
                del self._buffer[: end + 4]  # an interim answer: the real one follows
                continue
            body_start = end + 4
            break
        keep_alive = version == 1 and "close" not in _tokens(headers.get("connection", ""))
        if self._method == "HEAD" or status in _NO_BODY_STATUSES:
            return self._done(status, headers, b"", body_start, keep_alive)
        encoding = headers.get("transfer-encoding")
        if encoding is not None:
            if _tokens(encoding)[-1:] != ["chunked"]:
                raise Malformed(f"unsupported transfer coding {encoding!r}")
            return self._chunked(status, headers, body_start, keep_alive)
        length = headers.get("content-length")
        if length is not None:
            sizes = {size.strip() for size in length.split(",")}
            if len(sizes) != 1 or not next(iter(sizes)).isdigit():
                raise Malformed(f"bad Content-Length {length!r}")
            size = int(sizes.pop())
            if len(self._buffer) - body_start < size:
                if self._closed:
                    raise Malformed("the server closed the connection in the middle of the body")
                return None
            body = bytes(self._buffer[body_start : body_start + size])
            return self._done(status, headers, body, body_start + size, keep_alive)
        if not self._closed:  # the body runs until the server closes the connection
            return None
        return self._done(status, headers, bytes(self._buffer[body_start:]), None, False)

    def _chunked(
        self, status: int, headers: dict[str, str], at: int, keep_alive: bool
    ) -> Response | None:
        body = bytearray()
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n", at)
            if line_end < 0:
                self._expect_more()
                return None
            match = _CHUNK_SIZE.fullmatch(buffer, at, line_end)
            if match is None:
                raise Malformed("bad chunk size line")
            size = int(match.group(1), 16)
            at = line_end + 2
            if size == 0:
                trailers_end = buffer.find(b"\r\n", at)
                while trailers_end > at:  # skip trailer fields
                    at = trailers_end + 2
                    trailers_end = buffer.find(b"\r\n", at)
                if trailers_end < 0:
                    self._expect_more()
                    return None
                return self._done(status, headers, bytes(body), trailers_end + 2, keep_alive)
            if len(buffer) < at + size + 2:
                self._expect_more()
                return None
            if buffer[at + size : at + size + 2] != b"\r\n":
                raise Malformed("a chunk does not end where its size says")
            body += buffer[at : at + size]
            at += size + 2

    def _expect_more(self) -> None:
        if self._closed:
            raise Malformed("the server closed the connection in the middle of the body")

    def _done(
        self, status: int, headers: dict[str, str], body: bytes, end: int | None, keep: bool
    ) -> Response:
        # Bytes beyond the answer were never asked for: such a connection is not reused.
        reusable = keep and end is not None and end == len(self._buffer)
        return Response(status, headers, body, reusable)


def _head(head: bytes) -> tuple[int, int, dict[str, str]]:
    status_line, _, rest = head.partition(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise Malformed(f"bad status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest.split(b"\r\n") if rest else ():
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in b" \t":
            raise Malformed(f"bad header line {line[:80]!r}")
        key = name.decode("latin-1").lower()
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return int(match.group(1)), int(match.group(2)), headers


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",") if token.strip()]
