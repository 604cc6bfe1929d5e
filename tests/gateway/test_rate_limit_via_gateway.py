"""A provider's rate limit relayed by the real gateway: one 429 holds every wait on the loop."""

from __future__ import annotations

import asyncio
import time

from airflow_portkey._core.waits import terminal_spec
from airflow_portkey.hooks.portkey import PortkeyHook
from airflow_portkey.testing import PortkeyEmulator


def test_a_relayed_429_holds_every_wait_on_the_connection_until_retry_after(
    make_conn, emulator: PortkeyEmulator
) -> None:
    # Three requests a second: six waits that start together meet the limit at once.
    emulator.set_rate_limit(3)
    batch_ids = [
        emulator.add_batch(hold=False, durations={"in_progress": 1.0, "finalizing": 0.1})["id"]
        for _ in range(6)
    ]
    conn_id = make_conn("portkey_rate_gateway")

    async def wait_all() -> list[str]:
        hooks = [PortkeyHook(conn_id) for _ in batch_ids]
        deadline = time.time() + 60
        try:
            waits = [
                hook.await_batches([terminal_spec(b, deadline=deadline, poll_interval=0.2)])
                for hook, b in zip(hooks, batch_ids, strict=True)
            ]
            return [outcome.status for (outcome,) in await asyncio.gather(*waits)]
        finally:
            for hook in hooks:
                await hook.aclose()

    assert asyncio.run(wait_all()) == ["success"] * len(batch_ids)
    assert emulator.counts["rate_limited"] >= 3
    received = sorted(r.received_at for r in emulator.requests_to(route="batches.get"))
    # The first six left together; three were refused with Retry-After: 1 (through the
    # gateway). Alone, the three others would have polled again 0.2 s later; held, none did.
    first_burst, after = received[:6], received[6:]
    assert after and after[0] - first_burst[0] >= 0.9
