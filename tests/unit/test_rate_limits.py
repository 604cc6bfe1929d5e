"""Rate limits on loopback: the emulator's limit, the connection's cap, and shared reads,
seen from what the emulator received."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest
import requests

from airflow_portkey._core.waits import WaitOutcome, terminal_spec
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator
from airflow_portkey.testing.__main__ import _parser

from .support import API_KEY, PROVIDER_API_KEY, MakeHook

CONN_ID = "portkey_rate"


@pytest.fixture
def limited() -> Iterator[PortkeyEmulator]:
    """An emulator of its own that refuses more than 20 requests a second per key."""
    with PortkeyEmulator(
        api_key=API_KEY,
        provider_api_key=PROVIDER_API_KEY,
        validating_s=30,
        in_progress_s=300,
        finalizing_s=30,
        cancel_delay_s=60,
        rate_limit=20,
    ) as emu:
        yield emu


def test_emulator_refuses_requests_beyond_its_rate_limit_per_key_with_retry_after() -> None:
    with PortkeyEmulator(api_key="pk-a", rate_limit=5) as emu:
        batch_id = emu.add_batch()["id"]
        url = f"{emu.base_url}/batches/{batch_id}"
        with requests.Session() as http:
            http.headers.update({"x-portkey-api-key": "pk-a", "x-portkey-provider": "@openai"})
            answers = [http.get(url) for _ in range(8)]
            other_key = http.get(url, headers={"x-portkey-api-key": "pk-b"})
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 3
    refused = answers[-1]
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert other_key.status_code == 401  # another key has a bucket of its own (and is wrong)
    assert emu.counts["rate_limited"] == 3


def test_emulator_cli_takes_a_rate_limit() -> None:
    assert _parser().parse_args(["--rate-limit", "50"]).rate_limit == 50.0
    assert _parser().parse_args([]).rate_limit is None


def _wait_all(hooks: list[PortkeyHook], batch_ids: list[str], interval: float) -> list[WaitOutcome]:
    """One wait per hook, all on one event loop, as triggers in a triggerer."""

    async def go() -> list[WaitOutcome]:
        deadline = time.time() + 60
        try:
            waits = [
                hook.await_batches([terminal_spec(b, deadline=deadline, poll_interval=interval)])
                for hook, b in zip(hooks, batch_ids, strict=True)
            ]
            return [outcome for (outcome,) in await asyncio.gather(*waits)]
        finally:
            for hook in hooks:
                await hook.aclose()

    return asyncio.run(go())


def test_waits_under_the_connections_cap_meet_no_429(
    limited: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_ids = [
        limited.add_batch(hold=False, durations={"in_progress": 1.0, "finalizing": 0.1})["id"]
        for _ in range(40)
    ]
    hooks = [
        make_hook(conn_id=CONN_ID, host=limited.base_url, max_requests_per_second=15)
        for _ in batch_ids
    ]
    outcomes = _wait_all(hooks, batch_ids, interval=0.5)
    assert [o.status for o in outcomes] == ["success"] * len(batch_ids)
    assert limited.counts.get("rate_limited", 0) == 0
    # 40 waits at 0.5 s would send 80 requests a second: the cap made them take turns.
    assert len(limited.requests_to(route="batches.get")) >= len(batch_ids)


def test_waits_on_one_batch_share_their_reads(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_id = emulator.add_batch(hold=False, durations={"in_progress": 1.5, "finalizing": 0.1})[
        "id"
    ]
    hooks = [make_hook(conn_id=CONN_ID) for _ in range(50)]
    outcomes = _wait_all(hooks, [batch_id] * len(hooks), interval=0.3)
    assert {o.status for o in outcomes} == {"success"}
    assert {o.batch.status.value for o in outcomes if o.batch} == {"completed"}
    # 50 waits polling every 0.3 s for about 1.5 s: about 6 reads shared, not about 300.
    assert len(emulator.requests_to(route="batches.get", batch_id=batch_id)) <= 12


def test_sync_calls_keep_to_the_cap_within_the_process(
    emulator: PortkeyEmulator, make_hook: MakeHook
) -> None:
    batch_id = emulator.add_batch()["id"]
    first = make_hook(conn_id=CONN_ID, max_requests_per_second=5)
    second = PortkeyHook(CONN_ID)  # another hook on the same connection shares the budget
    for hook in (first, second, first, second):
        hook.get_batch(batch_id)
    second.close()
    received = [r.received_at for r in emulator.requests_to(route="batches.get")]
    assert len(received) == 4
    # 5 a second: at least 0.2 s apart when sent (at once without the cap); a busy machine
    # may delay one send, which brings it closer to the next.
    assert all(b - a >= 0.1 for a, b in itertools.pairwise(received))


@pytest.mark.parametrize("hops", range(5))
def test_a_wait_cancelled_as_its_shared_answer_arrives_ends_cancelled(hops: int) -> None:
    """A triggerer stops a trigger by cancelling its task; a wait waiting for another wait's
    read must end even when the answer arrives in the same moment (it would poll on)."""
    from airflow_portkey._core.messages import ApiRequest, ApiResponse
    from airflow_portkey._core.pacing import RateBudget
    from airflow_portkey.hooks._pacing import LoopPace

    answer = ApiResponse(200, {}, b"{}")
    request = ApiRequest("GET", "/batches/b", share_for=5.0, deadline=time.time() + 60)

    async def go() -> bool:
        pace = LoopPace(RateBudget())
        release = asyncio.get_running_loop().create_future()

        async def transmit() -> ApiResponse:
            await release
            return answer

        leader = asyncio.create_task(pace.send(request, transmit, {}))
        await asyncio.sleep(0)
        joiner = asyncio.create_task(pace.send(request, transmit, {}))
        await asyncio.sleep(0)
        release.set_result(None)
        for _ in range(hops):
            await asyncio.sleep(0)
        running = joiner.cancel()  # False once it has its answer: nothing left to stop
        await asyncio.wait([leader, joiner], timeout=2)
        stopped = joiner.done() and (joiner.cancelled() or not running)
        leader.cancel()
        joiner.cancel()
        return stopped

    assert asyncio.run(go())
