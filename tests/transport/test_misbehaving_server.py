"""Both transports against a misbehaving server: every scenario on the sync path (requests)
and the async path (aiohttp), plain and over TLS, with the same outcome kind on both.

The server is real (loopback sockets, threads of its own); nothing in either client is
patched. Timing is never asserted on a request itself: the drip ends because of the total
limit (the server would drip for a minute), and the async path's loop is shown free by a
ticker's worst lag measured against the whole body's time.
"""

from __future__ import annotations

import gzip
import json
import logging
import select
import threading
import tracemalloc
import zlib
from pathlib import Path

import pytest

import airflow_portkey
from airflow_portkey._core.messages import ApiRequest, ApiResponse, TransportFailure
from airflow_portkey._transport.sync import SyncTransport

from .paths import GET, PATHS, exchange, kind_of, settings_for
from .server import Peer, Seen, misbehaving, response

BATCH = {"id": "batch_1", "object": "batch", "status": "in_progress"}
TLS = [pytest.param(False, id="plain"), pytest.param(True, id="tls")]
# The total time limit of the scenarios that never end by themselves; the servers send
# something every DRIP seconds, well within the per-read timeout (the same value), so only a
# limit on the whole request can end them.
LIMIT = 0.6
DRIP = 0.1


def answer(peer: Peer, seen: Seen) -> bool:
    return peer.send(response(json.dumps(BATCH).encode()))


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_answer_in_one_byte_chunks_arrives_whole_without_holding_the_loop(
    path: str, tls: bool
) -> None:
    body = json.dumps({**BATCH, "metadata": {"note": "x" * 48_000}}).encode()

    def one_byte_at_a_time(peer: Peer, seen: Seen) -> bool:
        head = response(body)[: -len(body)]
        peer.send(head)
        for index in range(len(body)):
            if not peer.send(body[index : index + 1]):
                return False
            if index % 64 == 63 and peer.stopping(0.001):  # spread over a second or more
                return False
        return True

    with misbehaving(one_byte_at_a_time, tls=tls) as server:
        result = exchange(path, settings_for(server.url, verify=server.ca_file))
    (outcome,) = result.outcomes
    assert isinstance(outcome, ApiResponse) and outcome.body == body
    if path == "async":
        # The loop kept running while the body dripped in: its worst stall is a small part
        # of the body's time (a parser restarting from byte 0 held it for all of it).
        assert result.ticks > 20
        assert result.loop_lag_max < result.elapsed / 4


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_endless_drip_ends_at_the_total_time_limit_as_a_timeout(path: str, tls: bool) -> None:
    def drip(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{")
        for _ in range(300):  # half a minute at most, then it hangs up (a "dropped" outcome)
            if not peer.send(b" ") or peer.stopping(DRIP):
                return False
        return False

    with misbehaving(drip, tls=tls) as server:
        settings = settings_for(server.url, verify=server.ca_file, request_timeout=LIMIT)
        (outcome,) = exchange(path, settings).outcomes
    assert kind_of(outcome) == "timeout"


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_endless_body_is_refused_at_the_cap_with_memory_bounded(path: str, tls: bool) -> None:
    cap = 1 << 20
    chunk = b" " * 65536

    def endless(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")  # until close
        for _ in range(1024):  # 64 MiB at most
            if not peer.send(chunk):
                break
        return False

    with misbehaving(endless, tls=tls) as server:
        settings = settings_for(server.url, verify=server.ca_file)
        tracemalloc.start()
        try:
            (outcome,) = exchange(path, settings, max_answer_bytes=cap).outcomes
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert kind_of(outcome) == "malformed"
    assert isinstance(outcome, TransportFailure) and "larger than" in outcome.detail
    assert peak < 8 * cap  # the whole body would be 64 MiB


@pytest.mark.parametrize("path", PATHS)
def test_declared_length_beyond_the_cap_is_refused_before_reading(path: str) -> None:
    def huge(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10737418240\r\n\r\n{")
        peer.stopping(60)  # sends nothing more: only the declared length can end this early
        return False

    with misbehaving(huge) as server:
        (outcome,) = exchange(path, settings_for(server.url)).outcomes
    assert kind_of(outcome) == "malformed"


MALFORMED = {
    "content-length-not-a-number": b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n{}",
    "content-length-negative": b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n{}",
    "content-length-twice-differing": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "content-length-and-transfer-encoding": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
    ),
    "not-http": b"HELLO THERE\r\n\r\n",
    "bad-gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
}


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("path", PATHS)
def test_malformed_answer_is_a_malformed_failure(path: str, raw: bytes, tls: bool) -> None:
    def malformed(peer: Peer, seen: Seen) -> bool:
        peer.send(raw)
        peer.stopping(0.5)
        return False

    with misbehaving(malformed, tls=tls) as server:
        (outcome,) = exchange(path, settings_for(server.url, verify=server.ca_file)).outcomes
    assert kind_of(outcome) == "malformed", outcome


@pytest.mark.parametrize("path", PATHS)
def test_an_invalid_content_length_is_named_in_the_failure_not_quoted(path: str) -> None:
    # A hostile server may echo a key there: no piece of it goes into the failure's detail.
    echoed = "pk-ECHOED-" + "0123456789abcdef" * 4

    def echo(peer: Peer, seen: Seen) -> bool:
        peer.send(f"HTTP/1.1 200 OK\r\nContent-Length: {echoed}\r\n\r\n".encode())
        peer.stopping(0.5)
        return False

    with misbehaving(echo) as server:
        (outcome,) = exchange(path, settings_for(server.url)).outcomes
    assert isinstance(outcome, TransportFailure) and outcome.kind == "malformed", outcome
    assert echoed[:12] not in outcome.detail, outcome.detail
    if path == "sync":  # our own framing check; aiohttp's parser refuses it first, unquoted
        assert "invalid Content-Length" in outcome.detail


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_gzip_answer_is_decoded(path: str, tls: bool) -> None:
    def gzipped(peer: Peer, seen: Seen) -> bool:
        assert "gzip" in seen.headers.get("accept-encoding", "")
        return peer.send(
            response(gzip.compress(json.dumps(BATCH).encode()), headers=("Content-Encoding: gzip",))
        )

    with misbehaving(gzipped, tls=tls) as server:
        (outcome,) = exchange(path, settings_for(server.url, verify=server.ca_file)).outcomes
    assert isinstance(outcome, ApiResponse) and json.loads(outcome.body) == BATCH


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_requests_share_one_kept_alive_connection(path: str, tls: bool) -> None:
    with misbehaving(answer, tls=tls) as server:
        settings = settings_for(server.url, verify=server.ca_file)
        outcomes = exchange(path, settings, GET, GET, GET).outcomes
    assert [kind_of(o) for o in outcomes] == ["ok 200"] * 3
    assert [seen.connection for seen in server.requests] == [1, 1, 1]


@pytest.mark.parametrize("path", PATHS)
def test_fresh_connection_request_does_not_reuse_a_kept_alive_one(path: str) -> None:
    fresh = ApiRequest("GET", "/batches/batch_1", fresh_connection=True)
    with misbehaving(answer) as server:
        outcomes = exchange(path, settings_for(server.url), GET, fresh).outcomes
    assert [kind_of(o) for o in outcomes] == ["ok 200"] * 2
    assert [seen.connection for seen in server.requests] == [1, 2]


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_silent_server_is_a_timeout(path: str, tls: bool) -> None:
    def silent(peer: Peer, seen: Seen) -> bool:
        peer.stopping(60)
        return False

    with misbehaving(silent, tls=tls) as server:
        settings = settings_for(server.url, verify=server.ca_file, request_timeout=0.5)
        (outcome,) = exchange(path, settings).outcomes
    assert kind_of(outcome) == "timeout"


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_hang_up_without_an_answer_is_dropped(path: str, tls: bool) -> None:
    with misbehaving(lambda peer, seen: False, tls=tls) as server:
        (outcome,) = exchange(path, settings_for(server.url, verify=server.ca_file)).outcomes
    assert kind_of(outcome) == "dropped"


@pytest.mark.parametrize("path", PATHS)
def test_truncated_body_is_dropped(path: str) -> None:
    def truncated(peer: Peer, seen: Seen) -> bool:
        peer.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"id": ')
        return False

    with misbehaving(truncated) as server:
        (outcome,) = exchange(path, settings_for(server.url)).outcomes
    assert kind_of(outcome) == "dropped"


@pytest.mark.parametrize("path", PATHS)
def test_refused_connection_is_a_connect_failure(path: str) -> None:
    with misbehaving(answer) as server:
        url = server.url
    (outcome,) = exchange(path, settings_for(url, connect_timeout=2)).outcomes
    assert kind_of(outcome) == "connect"


@pytest.mark.parametrize("path", PATHS)
def test_untrusted_certificate_is_a_tls_failure(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    with misbehaving(answer, tls=True) as server:
        (outcome,) = exchange(path, settings_for(server.url)).outcomes
    assert kind_of(outcome) == "tls"
    assert isinstance(outcome, TransportFailure) and "CERTIFICATE_VERIFY_FAILED" in outcome.detail
    assert server.requests == []


@pytest.mark.parametrize("path", PATHS)
def test_every_request_says_who_sends_it(path: str) -> None:
    with misbehaving(answer) as server:
        exchange(path, settings_for(server.url))
    (seen,) = server.requests
    assert seen.headers["user-agent"] == f"airflow-portkey/{airflow_portkey.__version__}"


DOWNLOAD = ApiRequest("GET", "/files/file_1/content", stream=True)


def test_download_streams_to_disk_beyond_the_answer_cap(tmp_path: Path) -> None:
    """Downloads (sync path only) are written as they arrive, with no size cap."""
    body = b'{"custom_id": "r"}\n' * 200_000  # 3.8 MB, beyond the 1 MiB cap set here

    def output(peer: Peer, seen: Seen) -> bool:
        return peer.send(response(body))

    with misbehaving(output) as server:
        sync = SyncTransport(settings_for(server.url), {}, max_answer_bytes=1 << 20)
        with (tmp_path / "out.jsonl").open("w+b") as sink:
            outcome = sync.send(DOWNLOAD, sink)
        sync.close()
    assert kind_of(outcome) == "ok 200"
    assert (tmp_path / "out.jsonl").read_bytes() == body


def test_download_that_drips_ends_at_the_time_limit(tmp_path: Path) -> None:
    def drip(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(300):
            if not peer.send(b"x") or peer.stopping(DRIP):
                return False
        return False

    with misbehaving(drip) as server:
        sync = SyncTransport(settings_for(server.url, request_timeout=LIMIT), {})
        with (tmp_path / "out.jsonl").open("w+b") as sink:
            outcome = sync.send(DOWNLOAD, sink)
        sync.close()
    assert kind_of(outcome) == "timeout"


@pytest.mark.parametrize("path", PATHS)
def test_post_without_a_body_has_no_content_type(path: str) -> None:
    """The gateway refuses a cancel that names a Content-Type without a body."""
    cancel = ApiRequest("POST", "/batches/batch_1/cancel")
    with misbehaving(answer) as server:
        exchange(path, settings_for(server.url), cancel)
    (seen,) = server.requests
    assert "content-type" not in seen.headers
    assert seen.headers["content-length"] == "0"


def client_gone(peer: Peer, seconds: float) -> bool:
    """Wait up to ``seconds`` for the client to hang up; True when it has."""
    ready, _, _ = select.select([peer.sock], [], [], seconds)
    if not ready:
        return False
    try:
        return peer.sock.recv(1) == b""
    except OSError:
        return True


def drip_until_the_client_leaves(peer: Peer, piece: bytes, client_left: threading.Event) -> bool:
    """Send ``piece`` every DRIP s until the client hangs up (then set ``client_left``), for
    half a minute at most, then hang up; the connection is never kept."""
    for _ in range(300):
        if not peer.send(piece) or client_gone(peer, DRIP):
            client_left.set()
            return False
    return False


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_headers_dripping_a_byte_at_a_time_end_at_the_total_time_limit_as_a_timeout(
    path: str, tls: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """requests' read timeout bounds each recv: a byte every DRIP s kept a request for ever.
    The timeout is the whole story in the log: no library warning about headers cut short."""
    client_left = threading.Event()

    def header_drip(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\n")
        return drip_until_the_client_leaves(peer, b"X", client_left)

    with misbehaving(header_drip, tls=tls) as server:
        settings = settings_for(server.url, verify=server.ca_file, request_timeout=LIMIT)
        (outcome,) = exchange(path, settings).outcomes
    assert kind_of(outcome) == "timeout"
    # The server's connection thread sees the hang-up on its own time: wait for it (at once
    # on an idle machine; its drip would go on for half a minute had the client stayed).
    assert client_left.wait(10)  # the client hung up in the middle of the headers
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("tls", TLS)
@pytest.mark.parametrize("path", PATHS)
def test_endless_100_continue_answers_end_at_the_total_time_limit_as_a_timeout(
    path: str, tls: bool
) -> None:
    client_left = threading.Event()

    def endless_continue(peer: Peer, seen: Seen) -> bool:
        return drip_until_the_client_leaves(peer, b"HTTP/1.1 100 Continue\r\n\r\n", client_left)

    with misbehaving(endless_continue, tls=tls) as server:
        settings = settings_for(server.url, verify=server.ca_file, request_timeout=LIMIT)
        (outcome,) = exchange(path, settings).outcomes
    assert kind_of(outcome) == "timeout"
    assert client_left.wait(10)  # the client hung up while the 100s still came (see above)


@pytest.mark.parametrize("path", PATHS)
def test_informational_answers_before_the_final_one_are_skipped(path: str) -> None:
    """103 Early Hints (with headers) after 100 Continue: the 200 after them is the answer."""

    def early_hints(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        peer.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        return peer.send(response(json.dumps(BATCH).encode()))

    with misbehaving(early_hints) as server:
        outcomes = exchange(path, settings_for(server.url), GET, GET).outcomes
    assert [kind_of(o) for o in outcomes] == ["ok 200"] * 2
    assert all(isinstance(o, ApiResponse) and json.loads(o.body) == BATCH for o in outcomes)


def test_gzip_download_dripping_small_wire_chunks_ends_at_the_time_limit(tmp_path: Path) -> None:
    """The extra time a download earns is counted on the wire: a few hundred gzip bytes that
    inflate to a MiB each do not buy a second each."""
    compressor = zlib.compressobj(wbits=31)  # gzip

    def piece() -> bytes:
        return compressor.compress(b"\n" * (1 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)

    def gzip_drip(peer: Peer, seen: Seen) -> bool:
        peer.send(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n")
        for _ in range(200):  # 20 s of 10 MiB (decoded) a second, then a whole gzip stream
            wire = piece()
            assert len(wire) < 4096  # less than 1/64 of the 256 KiB that earn a second
            if not peer.send(wire) or peer.stopping(DRIP):
                return False
        peer.send(compressor.flush())
        return False

    with misbehaving(gzip_drip) as server:
        sync = SyncTransport(settings_for(server.url, request_timeout=LIMIT), {})
        with (tmp_path / "out.jsonl").open("w+b") as sink:
            outcome = sync.send(DOWNLOAD, sink)
        sync.close()
    assert kind_of(outcome) == "timeout", outcome
