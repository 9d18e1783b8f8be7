"""Nothing grows without bound: 100,000 tasks through the backend, then the memory
its keys take is back where it started once their results expired and reap ran.

Only this test's own keys are measured (SCAN of its prefix, MEMORY USAGE of each),
so other clients writing to the same server cannot disturb the figure.
"""

from __future__ import annotations

import pytest
from redis_helpers import prefix_keys

import redis as redis_sync
from taskcore.backend import Message, Outcome, OutcomeKind
from taskcore.clock import FakeClock
from taskcore.states import State
from taskcore_redis import RedisBackend

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

N = 100_000
BATCH = 5_000
TTL = 1.0
BODY = b'{"args":[1,2,3],"kwargs":{"user":"someone@example.com"}}'


def own_keys(admin: redis_sync.Redis, prefix: str) -> list[bytes]:
    """The keys under ``prefix``, less the wake-up marker list: that one holds at most
    16 markers and expires 5 s (real time) after the last enqueue, whatever the load."""
    return [k for k in prefix_keys(admin, prefix) if not k.endswith(b":wake")]


def footprint(admin: redis_sync.Redis, prefix: str) -> tuple[int, int]:
    """(number of keys, bytes by MEMORY USAGE) of every key under ``prefix``."""
    keys = own_keys(admin, prefix)
    total = 0
    for i in range(0, len(keys), 5_000):
        with admin.pipeline(transaction=False) as pipe:
            for key in keys[i : i + 5_000]:
                pipe.memory_usage(key, samples=0)  # samples=0: every element counted
            total += sum(n or 0 for n in pipe.execute())  # None: deleted meanwhile
    return len(keys), total


async def run_tasks(b: RedisBackend, clock: FakeClock, start: int, n: int) -> None:
    """Enqueue, claim and settle ``n`` tasks whose results live ``TTL`` seconds."""
    for first in range(start, start + n, BATCH):
        now = clock.now()
        msgs = [
            Message(f"t{i:08d}", "app.work", "q", i % 5, now, now, BODY, unique_key=f"k{i}")
            for i in range(first, min(first + BATCH, start + n))
        ]
        results = await b.enqueue(msgs)
        assert all(r.created for r in results)
        leases = await b.claim(["q"], len(msgs), 60, "w")
        assert len(leases) == len(msgs)
        outcomes = [
            Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, now, b"1", result_ttl=TTL)
            for x in leases
        ]
        assert all(await b.settle(outcomes))


async def expire_and_reap(b: RedisBackend, clock: FakeClock) -> None:
    """Let the results' TTL pass, then one reaper pass (as the worker runs it)."""
    clock.advance(TTL + 1)
    await b.reap()
    await b.stats(["q"])  # one more round trip: drops the last kept replies


async def test_100k_tasks_leave_no_residue(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as b:
        # A few tasks first, so that the queue's fixed keys (meta, counters, queue
        # registry) exist in the starting level as they will at the end.
        await run_tasks(b, clock, N, 10)
        await expire_and_reap(b, clock)
        keys_before, before = footprint(admin, prefix)

        await run_tasks(b, clock, 0, N)
        [stats] = await b.stats(["q"])
        assert stats.states[State.SUCCEEDED] == N
        keys_peak, peak = footprint(admin, prefix)
        assert keys_peak >= N  # every record is stored...
        assert peak - before > 10_000_000

        await expire_and_reap(b, clock)
        [stats] = await b.stats(["q"])
        assert stats.states[State.SUCCEEDED] == 0 and stats.depth == 0
        assert await b.get("t00000000") is None
        keys_after, after = footprint(admin, prefix)
        assert keys_after == keys_before <= 6, own_keys(admin, prefix)  # ...and is gone
        # The counters' values may gain a few digits (the arrival sequence): a few bytes.
        assert after - before < 1024, f"{after - before} bytes left after {N} tasks"
