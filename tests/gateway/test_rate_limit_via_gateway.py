"""A provider's rate limit relayed by the real gateway: one 429 holds every wait on the loop."""

from __future__ import annotations

import asyncio

import pytest

from airflow_portkey.exceptions import PortkeyRateLimitError
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator


def test_a_relayed_429_holds_every_other_request_on_the_connection_until_retry_after(
    make_conn, emulator: PortkeyEmulator
) -> None:
    # Two requests a second: two reads take them, the third is refused (Retry-After: 1).
    emulator.set_rate_limit(2)
    first, refused, other = (emulator.add_batch()["id"] for _ in range(3))
    conn_id = make_conn("portkey_rate_gateway", max_retries=0)

    async def scenario() -> None:
        hooks = [PortkeyHook(conn_id) for _ in range(3)]
        try:
            await hooks[0].aget_batch(first)
            await hooks[0].aget_batch(first)
            with pytest.raises(PortkeyRateLimitError):
                await hooks[1].aget_batch(refused)
            # Two other waits on the loop, after the refusal: both held, then served (the
            # bucket refilled), where sent at once they would have been refused too.
            await asyncio.gather(hooks[2].aget_batch(other), hooks[0].aget_batch(first))
        finally:
            for hook in hooks:
                await hook.aclose()

    asyncio.run(scenario())
    assert emulator.counts["rate_limited"] == 1
    received = {(r.batch_id, n): r.received_at for n, r in enumerate(emulator.requests)}
    (refused_at,) = [at for (batch_id, _), at in received.items() if batch_id == refused]
    later = [at for (batch_id, n), at in received.items() if n >= 3]
    assert len(later) == 2
    # Sent no sooner than Retry-After after the 429 came back, so received at least that long
    # after the refused request was.
    assert min(later) - refused_at >= 1.0
