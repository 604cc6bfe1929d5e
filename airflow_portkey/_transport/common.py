"""What both transports share: how a library's exception is described in a failure."""

from __future__ import annotations

import ssl


def failure_detail(error: BaseException) -> str:
    """What a transport says of an exception in a TransportFailure: its first line, bounded."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def ssl_error_in(error: BaseException) -> ssl.SSLError | None:
    """The TLS error behind a library's connection error, if that is what it was.

    requests and httpx wrap it (in urllib3 and httpcore errors); the wrapped text names the
    certificate problem, which the outer text may bury behind a long URL.
    """
    seen: set[int] = set()
    queue: list[object] = [error]
    while queue:
        item = queue.pop(0)
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLError):
            return item
        queue += [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
    return None
