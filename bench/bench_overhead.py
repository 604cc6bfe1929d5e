"""Benchmark 5, per-call overhead: the hook against the least code that makes the same call.

Sync: ``PortkeyHook.get_batch`` against ``requests.Session().get`` of the same URL with the
same headers and timeouts, then ``.json()``. Async: ``PortkeyHook.aget_batch`` against
``aiohttp.ClientSession.get`` the same way (one shared session, ``trust_env=False``, as the
triggerer benchmark's floor). One emulator in its own process answers all of them.
Calls run in interleaved rounds (hook, raw, raw, hook, ...) so that a slow moment of the
machine falls on both; the figure is the median wall time of a single call, with this
process's CPU time per call beside it. Goal: the hook within 1.15x of raw, on both paths.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common as c

GOAL = 1.15


def timed_rounds(
    pair: dict[str, Callable[[], Any]], rounds: int, per_round: int
) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in pair}
    names = list(pair)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            call = pair[name]
            walls = out[name]["wall"]
            cpu0 = time.process_time()
            for _ in range(per_round):
                started = time.perf_counter()
                call()
                walls.append(time.perf_counter() - started)
            out[name]["cpu"].append((time.process_time() - cpu0) / per_round)
    return out


async def atimed_rounds(
    pair: dict[str, Callable[[], Awaitable[Any]]], rounds: int, per_round: int
) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": []} for k in pair}
    names = list(pair)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            call = pair[name]
            walls = out[name]["wall"]
            cpu0 = time.process_time()
            for _ in range(per_round):
                started = time.perf_counter()
                await call()
                walls.append(time.perf_counter() - started)
            out[name]["cpu"].append((time.process_time() - cpu0) / per_round)
    return out


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp
    import requests

    from airflow_portkey.hooks.portkey import PortkeyHook

    rounds, per_round = spec["rounds"], spec["per_round"]
    control = c.Control(spec["host"], spec["port"])
    (batch_id,) = control.seed(1)
    control.close()
    url = f"{spec['base_url']}/batches/{batch_id}"
    timeout = (10.0, 60.0)

    from airflow_portkey._transport.common import USER_AGENT

    hook = PortkeyHook()
    session = requests.Session()
    # The same headers as the hook's, its User-Agent included.
    session.headers.update(
        {"Accept": "application/json", "User-Agent": USER_AGENT, **c.bench_headers()}
    )
    same = {k.lower(): v for k, v in session.headers.items()}
    theirs = {k.lower(): v for k, v in hook.get_conn().headers.items()}
    if same != theirs:
        raise AssertionError(f"raw headers {same} differ from the hook's {theirs}")
    assert hook.get_batch(batch_id).id == session.get(url, timeout=timeout).json()["id"]

    sync = timed_rounds(
        {
            "hook.get_batch": lambda: hook.get_batch(batch_id),
            "requests.Session.get": lambda: session.get(url, timeout=timeout).json(),
        },
        rounds,
        per_round,
    )
    hook.close()
    session.close()

    async def async_part() -> dict[str, dict[str, list[float]]]:
        ahook = PortkeyHook()
        client = aiohttp.ClientSession(
            headers={"Accept": "application/json", **c.bench_headers()},
            timeout=aiohttp.ClientTimeout(total=timeout[1], sock_connect=timeout[0]),
            trust_env=False,
        )

        async def raw() -> Any:
            async with client.get(url) as response:
                return json.loads(await response.read())

        assert (await ahook.aget_batch(batch_id)).id == (await raw())["id"]
        try:
            return await atimed_rounds(
                {
                    "hook.aget_batch": lambda: ahook.aget_batch(batch_id),
                    "aiohttp.ClientSession.get": raw,
                },
                rounds,
                per_round,
            )
        finally:
            await ahook.aclose()
            await client.close()

    return {"sync": sync, "async": asyncio.run(async_part())}


def worker(spec_path: str) -> None:
    spec = c.load_spec(spec_path)
    c.use_airflow_env(spec["base_url"])
    c.finish_worker(spec, measure(spec))


def run(smoke: bool) -> dict[str, Any]:
    rounds, per_round = (2, 25) if smoke else (16, 125)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp, c.Emulator() as emu:
        spec = {
            "kind": "overhead",
            "base_url": emu.base_url,
            "host": emu.host,
            "port": emu.port,
            "rounds": rounds,
            "per_round": per_round,
        }
        env = {"BENCH_AIRFLOW_HOME": tmp}
        log = Path(tmp) / "worker.log"
        result = c.run_worker(Path(__file__), spec, env=env, timeout=600, log=log)
    figures: dict[str, Any] = {}
    goals = []
    c.say(f"per call, median of {rounds * per_round} calls each ({rounds} interleaved rounds):")
    for path, (ours, raw) in (
        ("sync", ("hook.get_batch", "requests.Session.get")),
        ("async", ("hook.aget_batch", "aiohttp.ClientSession.get")),
    ):
        data = result[path]
        wall = {k: 1e6 * c.median(v["wall"]) for k, v in data.items()}
        cpu = {k: 1e6 * c.median(v["cpu"]) for k, v in data.items()}
        for name in (ours, raw):
            c.say(f"  {name:26} {wall[name]:8.0f} us wall  {cpu[name]:8.0f} us CPU")
        by_wall, by_cpu = c.ratio(wall[ours], wall[raw]), c.ratio(cpu[ours], cpu[raw])
        c.say(f"  {path}: hook/raw = {by_wall:.3f}x wall, {by_cpu:.3f}x CPU")
        figures[path] = {"wall_us": wall, "cpu_us": cpu, "ratio_wall": by_wall, "ratio_cpu": by_cpu}
        goals.append(
            {
                "name": f"per-call overhead within 1.15x ({path})",
                "met": by_wall <= GOAL,
                "detail": f"{by_wall:.3f}x wall, {by_cpu:.3f}x CPU",
            }
        )
    for g in goals:
        c.say(c.goal_line(g["name"], g["met"], g["detail"]))
    if smoke:
        c.say("(smoke: 50 calls each)")
    rows = []
    for path, f in figures.items():
        for name in f["wall_us"]:
            rows.append((path, name, f"{f['wall_us'][name]:.0f}", f"{f['cpu_us'][name]:.0f}"))
    markdown = "\n\n".join(
        [
            f"{rounds * per_round} calls each, {rounds} interleaved rounds; median wall time "
            "of one call, and this process's CPU time per call (median over rounds).",
            c.md_table(("path", "call", "wall us", "CPU us"), rows),
            c.md_goals(goals),
        ]
    )
    c.say("BENCH overhead done")
    return {"figures": figures, "goals": goals, "calls": rounds * per_round, "markdown": markdown}


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return 0
    args = c.parser(__doc__.splitlines()[0]).parse_args()
    c.say("Benchmark 5: per-call overhead")
    c.write_json(args.json, run(args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
