"""Cost of one Postgres claim round trip that carries the previous claim's outcomes.

``python -m benchmarks.pg_carry [N] [LIMIT]``: preload N no-op tasks (20,000) in a scratch
schema, then loop ``claim(limit=LIMIT, settle=<the previous claim's successes>)`` (10)
on ONE pooled connection without LISTEN until the queue is empty, and print per round
trip: the client's CPU time, the CPU time of all PostgreSQL processes (from
``/proc/<pid>/stat``: the server must run on this machine, with no other clients) and
the wall time. CPU times depend far less on the machine's load than wall times do.
Also prints how often PostgreSQL planned each prepared statement (``pg_prepared_statements``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from taskcore.backend import Outcome, OutcomeKind
from taskcore.clock import FakeClock
from taskcore.testing import make_message
from taskcore_pg import PostgresBackend

from ._common import drop_scratch, scratch_url
from ._proc import process_cpu


async def _one_value(backend: Any, query: str) -> Any:
    async def op(conn: Any) -> Any:
        cur = await conn.execute(query)
        return await cur.fetchall()

    return await backend._run(op)


async def carry(n: int, limit: int) -> dict[str, Any]:
    url = scratch_url("postgres")
    clock = FakeClock()
    try:
        backend = PostgresBackend.from_url(url, clock=clock, min_size=1, max_size=1, listen=False)
        async with backend:
            for start in range(0, n, 5000):
                batch = min(5000, n - start)
                await backend.enqueue([make_message(clock) for _ in range(batch)])
            leases = await backend.claim(["q"], limit, 30, "bench")
            server0, client0, wall0 = (
                process_cpu("postgres"),
                time.process_time(),
                time.perf_counter(),
            )
            trips = 0
            while leases:
                done = [
                    Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, clock.now())
                    for x in leases
                ]
                leases = await backend.claim(["q"], limit, 30, "bench", settle=done)
                trips += 1
            server1, client1, wall1 = (
                process_cpu("postgres"),
                time.process_time(),
                time.perf_counter(),
            )
            plans = await _one_value(
                backend,
                "SELECT left(regexp_replace(statement, '\\s+', ' ', 'g'), 50),"
                " generic_plans, custom_plans FROM pg_prepared_statements",
            )
        return {
            "round_trips": trips,
            "client_cpu_us": (client1 - client0) / trips * 1e6,
            "server_cpu_us": (server1 - server0) / trips * 1e6,
            "wall_us": (wall1 - wall0) / trips * 1e6,
            "load": os.getloadavg()[0],
            "plans": [list(row) for row in plans],
        }
    finally:
        await drop_scratch(url)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    result = asyncio.run(carry(n, limit))
    sys.stdout.write(
        f"{result['round_trips']} round trips of {limit}: client CPU "
        f"{result['client_cpu_us']:.0f} us, server CPU {result['server_cpu_us']:.0f} us, "
        f"wall {result['wall_us']:.0f} us per round trip (load {result['load']:.2f})\n"
    )
    for statement, generic, custom in result["plans"]:
        sys.stdout.write(f"  {generic:>6} generic {custom:>6} custom plans: {statement}\n")


if __name__ == "__main__":
    main()
