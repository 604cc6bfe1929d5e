"""Benchmark 3, cancel fan-out: PortkeyCancelBatchOperator on 1,000 running batches.

``PortkeyCancelBatchOperator(batch_id=[1,000 ids], max_concurrency=16).execute({})`` against
the emulator (its own process), timed from the call to its return. Baselines in the same run,
each on 1,000 fresh running batches, rounds interleaved:

* raw: the least code that does the same on raw aiohttp: one shared ClientSession
  (``trust_env=False``, one connection pool, as the triggerer benchmark's floor), 16 requests
  in flight, POST /batches/{id}/cancel and parse the answer (asyncio.run included, as in the
  operator);
* one by one: ``PortkeyHook.cancel_batch`` for each id in turn (what a plain loop in a
  task does).

After every run the emulator must hold no batch that is not cancelling or cancelled, and must
have counted exactly one cancel request per batch (reads are reported). Each run also records
the CPU time the worker process (the client) and the emulator process spent on it, per batch:
on loopback the wall time is mostly the client's CPU, and on a shared two-core machine the CPU
figures tell a slower method from a busier machine.
Goals: within 1.2x of raw, and at least 5x faster than one by one.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

CONCURRENCY = 16
METHODS = ("operator", "raw", "one_by_one")


def cancel_operator(ids: list[str]) -> int:
    from airflow_portkey.operators.batch import PortkeyCancelBatchOperator

    operator = PortkeyCancelBatchOperator(
        task_id="cancel", batch_id=ids, max_concurrency=CONCURRENCY
    )
    started = time.perf_counter()
    result = operator.execute({})
    elapsed = time.perf_counter() - started
    assert isinstance(result, list) and len(result) == len(ids), "one batch per id"
    return int(elapsed * 1e9)


def cancel_raw(ids: list[str], base_url: str) -> int:
    import aiohttp

    async def cancel_all() -> list[Any]:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONCURRENCY),
            headers={"Accept": "application/json", **c.bench_headers()},
            timeout=aiohttp.ClientTimeout(total=60, sock_connect=10),
            trust_env=False,
        ) as session:
            slots = asyncio.Semaphore(CONCURRENCY)

            async def cancel(batch_id: str) -> Any:
                async with slots, session.post(f"{base_url}/batches/{batch_id}/cancel") as response:
                    response.raise_for_status()
                    return json.loads(await response.read())

            return await asyncio.gather(*map(cancel, ids))

    started = time.perf_counter()
    result = asyncio.run(cancel_all())
    elapsed = time.perf_counter() - started
    assert len(result) == len(ids)
    return int(elapsed * 1e9)


def cancel_one_by_one(ids: list[str]) -> int:
    from airflow_portkey.hooks.portkey import PortkeyHook

    started = time.perf_counter()
    hook = PortkeyHook()
    for batch_id in ids:
        hook.cancel_batch(batch_id)
    hook.close()
    return int((time.perf_counter() - started) * 1e9)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    n, rounds, latency = spec["n"], spec["rounds"], spec["latency"]
    control = c.Control(spec["host"], spec["port"])

    def fresh(count: int) -> list[str]:
        control.reset()
        if latency:
            control.call(
                "POST",
                "faults",
                {"kind": "slow", "times": None, "route": "batches.cancel", "delay": latency},
            )
        return control.seed(count)

    # Warm up every path (imports, logging, connection lookup) on a few batches.
    for method in METHODS:
        run_method(method, fresh(3), spec["base_url"])
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    reads: dict[str, list[int]] = {m: [] for m in METHODS}
    client_cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    server_cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    emulator_pid = spec["emulator_pid"]
    for round_no in range(rounds):
        order = METHODS[round_no % 3 :] + METHODS[: round_no % 3]
        for method in order:
            if method == "one_by_one" and round_no >= spec["serial_rounds"]:
                continue
            ids = fresh(n)
            server_started = c.process_cpu_seconds(emulator_pid)
            client_started = time.process_time()
            elapsed_ns = run_method(method, ids, spec["base_url"])
            client_s = time.process_time() - client_started
            server_s = c.process_cpu_seconds(emulator_pid) - server_started
            counts = control.counts()
            if counts.get("batches.cancel") != n:
                raise AssertionError(f"{method}: {n} batches but {counts} requests")
            statuses = list_statuses(spec["host"], spec["port"])
            left = [b for b in ids if statuses.get(b) not in ("cancelling", "cancelled")]
            if left or len(statuses) != n:
                raise AssertionError(f"{method}: {len(left)} batches not cancelled: {left[:3]}")
            times[method].append(elapsed_ns / 1e9)
            reads[method].append(sum(v for k, v in counts.items() if k != "batches.cancel"))
            client_cpu[method].append(client_s)
            server_cpu[method].append(server_s)
    control.close()
    return {
        "n": n,
        "latency": latency,
        "times": times,
        "other_requests": reads,
        "client_cpu_s": client_cpu,
        "emulator_cpu_s": server_cpu,
    }


def list_statuses(host: str, port: int) -> dict[str, str]:
    """Every batch the emulator holds and its status, through the list API (100 a page)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    statuses: dict[str, str] = {}
    after = ""
    while True:
        conn.request("GET", f"/v1/batches?limit=100{after}", headers=c.bench_headers())
        page = json.loads(conn.getresponse().read())
        statuses.update((b["id"], b["status"]) for b in page["data"])
        if not page.get("has_more") or not page["data"]:
            conn.close()
            return statuses
        after = f"&after={page['data'][-1]['id']}"


def run_method(method: str, ids: list[str], base_url: str) -> int:
    if method == "operator":
        return cancel_operator(ids)
    if method == "raw":
        return cancel_raw(ids, base_url)
    return cancel_one_by_one(ids)


def worker(spec_path: str) -> None:
    spec = c.load_spec(spec_path)
    c.use_airflow_env(spec["base_url"])
    results = [measure({**spec, **scenario}) for scenario in spec["scenarios"]]
    c.finish_worker(spec, {"scenarios": results})


def run(smoke: bool) -> dict[str, Any]:
    n = 30 if smoke else 1000
    # Loopback answers at once, so there nothing but CPU limits either way; a real API takes
    # tens to hundreds of milliseconds per call, which is what concurrency is for. The second
    # scenario has the emulator answer every cancel after 20 ms (other connections go on).
    # Runs are cheap but the machine is shared: five rounds on loopback, three with latency
    # (one of them one by one, which takes ~25 s there).
    scenarios = [(0.0, 1, 1), (0.02, 1, 1)] if smoke else [(0.0, 5, 5), (0.02, 3, 1)]
    with tempfile.TemporaryDirectory(prefix="bench-cancel-") as tmp, c.Emulator() as emu:
        spec = {
            "kind": "cancel",
            "base_url": emu.base_url,
            "host": emu.host,
            "port": emu.port,
            "emulator_pid": emu.proc.pid if emu.proc is not None else 0,
            "n": n,
            "scenarios": [
                {"latency": latency, "rounds": rounds, "serial_rounds": serial_rounds}
                for latency, rounds, serial_rounds in scenarios
            ],
        }
        env = {"BENCH_AIRFLOW_HOME": tmp}
        log = Path(tmp) / "worker.log"
        results = c.run_worker(Path(__file__), spec, env=env, timeout=900, log=log)["scenarios"]
    goals = []
    rows = []
    for result in results:
        goals += report(result)
        med = result["median_s"]
        where = f"{1000 * result['latency']:.0f} ms" if result["latency"] else "none (loopback)"
        cpu = result["median_cpu_ms_per_batch"]
        for m in METHODS:
            rows.append(
                (
                    where,
                    m,
                    f"{med[m]:.3f}",
                    f"{1e3 * med[m] / n:.2f}",
                    f"{cpu[m][0]:.2f} + {cpu[m][1]:.2f}",
                    f"{c.ratio(med[m], med['operator']):.2f}",
                    len(result["times"][m]),
                    f"{n} + {max(result['other_requests'][m])}",
                )
            )
    for g in goals:
        c.say(c.goal_line(g["name"], g["met"], g["detail"]))
    if smoke:
        c.say("(smoke: 30 batches, 1 round)")
    markdown = "\n\n".join(
        [
            f"{n} running batches, {CONCURRENCY} requests in flight; median wall time of the "
            "runs. After each run every batch was cancelling or cancelled and the emulator had "
            f"counted exactly {n} cancel requests.",
            c.md_table(
                (
                    "added server latency",
                    "method",
                    "wall s",
                    "ms / batch",
                    "CPU ms / batch (client + emulator)",
                    "x operator",
                    "runs",
                    "requests (cancels + others)",
                ),
                rows,
            ),
            c.md_goals(goals),
        ]
    )
    c.say("BENCH cancel done")
    return {"scenarios": results, "goals": goals, "markdown": markdown}


def report(result: dict[str, Any]) -> list[dict[str, Any]]:
    n, latency = result["n"], result["latency"]
    med = result["median_s"] = {m: c.median(result["times"][m]) for m in METHODS}
    cpu = result["median_cpu_ms_per_batch"] = {
        m: (
            1e3 * c.median(result["client_cpu_s"][m]) / n,
            1e3 * c.median(result["emulator_cpu_s"][m]) / n,
        )
        for m in METHODS
    }
    vs_raw = c.ratio(med["operator"], med["raw"])
    vs_serial = c.ratio(med["one_by_one"], med["operator"])
    where = f"{1000 * latency:.0f} ms per cancel" if latency else "loopback, no added latency"
    c.say(f"cancel {n} running batches, {CONCURRENCY} in flight ({where}), median of runs:")
    for m in METHODS:
        runs = ", ".join(f"{t:.2f}" for t in result["times"][m])
        c.say(
            f"  {m:11} {med[m]:7.3f} s  ({1e3 * med[m] / n:.2f} ms/batch; runs {runs}; "
            f"CPU ms/batch client {cpu[m][0]:.2f}, emulator {cpu[m][1]:.2f}; "
            f"{n} cancels + {max(result['other_requests'][m])} other requests)"
        )
    c.say(f"  operator/raw = {vs_raw:.2f}x; one-by-one/operator = {vs_serial:.2f}x")
    c.say(f"  checked: every batch cancelling or cancelled, exactly {n} cancel requests per run")
    tag = f"{1000 * latency:.0f} ms latency" if latency else "loopback"
    return [
        {
            "name": f"cancel fan-out within 1.2x raw aiohttp ({tag})",
            "met": vs_raw <= 1.2,
            "detail": f"{vs_raw:.2f}x",
        },
        {
            "name": f"cancel fan-out >=5x faster than one by one ({tag})",
            "met": vs_serial >= 5,
            "detail": f"{vs_serial:.2f}x",
        },
    ]


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return 0
    args = c.parser(__doc__.splitlines()[0]).parse_args()
    c.say("Benchmark 3: cancel fan-out")
    c.write_json(args.json, run(args.smoke))
    return 0


if __name__ == "__main__":
    sys.exit(main())
