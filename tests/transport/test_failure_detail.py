"""What a transport says of a library's exception, as the core shows it: a key the server
echoed is never cut in two before the core redacts it."""

from __future__ import annotations

from airflow_portkey._core import plans
from airflow_portkey._core.messages import TransportFailure
from airflow_portkey._transport.common import failure_detail


def pieces(secret: str, size: int = 5) -> list[str]:
    return [secret[i : i + size] for i in range(len(secret) - size + 1)]


# F4 (medium): failure_detail keeps the first of str.splitlines(), which also splits on NEL
# (\x85), U+2028 and others; a key holding one, quoted by a library, loses its tail before
# redaction. Seen over loopback on the sync path: "malformed error (HTTP/1.1 2x0 pk-ECHOED)".
def test_a_failure_quoting_a_key_with_a_next_line_character_shows_no_piece_of_it() -> None:
    key = "pk-ECHOED\x85" + "0123456789abcdef" * 2
    detail = failure_detail(ValueError(f"HTTP/1.1 2x0 {key}"))
    shown = plans._outcome_text(TransportFailure("malformed", detail), (key,))
    assert [piece for piece in pieces(key) if piece in shown] == [], shown
