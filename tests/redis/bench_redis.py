"""Throughput of the Redis backend, driven directly (not a test; run it by hand).

    .venv/bin/python tests/redis/bench_redis.py [N] [BATCH]

Bulk-enqueues N messages (default 20,000) in one call, then claims and settles them
in batches of BATCH (default 200) as a worker would, and prints rates and round trips
per task. Uses a throwaway key prefix on TASKCORE_REDIS_URL (default localhost).
"""

from __future__ import annotations

import os
import sys
import time

import anyio

from taskcore.backend import Message, Outcome, OutcomeKind
from taskcore.clock import SystemClock
from taskcore.envelope import new_task_id
from taskcore.states import State
from taskcore_redis import RedisBackend
from taskcore_redis._conn import Connection

URL = os.environ.get("TASKCORE_REDIS_URL", "redis://127.0.0.1:6379/0")


async def main(n: int, batch: int) -> None:
    round_trips = 0
    original = Connection.call

    async def counting(self: Connection, *args: object, **kw: object) -> object:
        nonlocal round_trips
        round_trips += 1
        return await original(self, *args, **kw)  # type: ignore[arg-type]

    Connection.call = counting  # type: ignore[assignment,method-assign]
    clock = SystemClock()
    prefix = f"bench-{new_task_id()}"
    body = b'{"id":"x","task":"bench.noop","args":{"a":1,"b":"two"}}'
    async with RedisBackend.from_url(URL, clock=clock, prefix=prefix) as b:
        now = clock.now()
        msgs = [
            Message(new_task_id(), "bench.noop", "bench", i % 5, now, now, body) for i in range(n)
        ]
        round_trips = 0
        t0 = time.perf_counter()
        await b.enqueue(msgs)
        t1 = time.perf_counter()
        enqueue_rt = round_trips
        round_trips = 0
        done = 0
        while done < n:
            leases = await b.claim(["bench"], batch, 60, "bench-worker")
            if not leases:
                break
            t = clock.now()
            ok = await b.settle(
                [Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, t, b"null") for x in leases]
            )
            done += sum(ok)
        t2 = time.perf_counter()
        drain_rt = round_trips
        sys.stdout.write(
            f"bulk enqueue : {n} tasks in {t1 - t0:.3f} s = {n / (t1 - t0):,.0f} tasks/s, "
            f"{enqueue_rt} round trips\n"
        )
        sys.stdout.write(
            f"claim+settle : {done} tasks in {t2 - t1:.3f} s = {done / (t2 - t1):,.0f} tasks/s "
            f"(batches of {batch}), {drain_rt} round trips = {drain_rt / done:.3f} per task\n"
        )
        await b.purge("bench", [State.SUCCEEDED])
        await b._conn.redis.delete(
            f"{{{prefix}:bench}}:meta",
            f"{{{prefix}:bench}}:n",
            f"{{{prefix}:bench}}:wake",
            f"{{{prefix}}}:queues",
        )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    anyio.run(main, n, batch)
