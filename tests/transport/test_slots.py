"""The async transport's request slots (max_connections): handed out in the order asked for,
and never lost to a request cancelled while it waits for one. Pure asyncio, no sockets."""

from __future__ import annotations

import asyncio

from airflow_portkey._transport.aio import Slots


async def take(slots: Slots) -> None:
    """As AsyncTransport.send takes a slot."""
    if slots.free and not slots.waiters:
        slots.free -= 1
    else:
        await slots.wait()


def test_slots_bound_what_is_in_flight_and_go_in_the_order_asked() -> None:
    async def go() -> tuple[int, list[int]]:
        slots = Slots(2)
        in_flight, most, entered = 0, 0, []

        async def request(number: int) -> None:
            nonlocal in_flight, most
            await take(slots)
            try:
                entered.append(number)
                in_flight += 1
                most = max(most, in_flight)
                for _ in range(3):
                    await asyncio.sleep(0)
                in_flight -= 1
            finally:
                slots.release()

        await asyncio.gather(*(request(n) for n in range(7)))
        assert slots.free == 2 and not slots.waiters
        return most, entered

    assert asyncio.run(go()) == (2, list(range(7)))


def test_a_request_cancelled_while_waiting_leaves_no_slot_behind() -> None:
    async def go() -> tuple[int, bool]:
        slots = Slots(1)
        await take(slots)
        first = asyncio.create_task(take(slots))
        second = asyncio.create_task(take(slots))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        slots.release()  # the holder is done: the slot goes to the second
        await second
        slots.release()
        return slots.free, first.cancelled()

    assert asyncio.run(go()) == (1, True)


def test_a_request_cancelled_as_its_slot_is_handed_over_passes_it_on() -> None:
    async def go() -> tuple[int, bool]:
        slots = Slots(1)
        await take(slots)
        first = asyncio.create_task(take(slots))
        second = asyncio.create_task(take(slots))
        await asyncio.sleep(0)
        slots.release()  # handed to the first, which is cancelled before it runs again
        first.cancel()
        await asyncio.wait_for(second, timeout=5)
        slots.release()
        return slots.free, first.cancelled()

    assert asyncio.run(go()) == (1, True)
