"""Nothing grows without bound: 100,000 tasks through the backend, then the server's
memory is back near where it started once their results expired and reap ran."""

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


def _used(admin: redis_sync.Redis) -> int:
    return int(admin.info("memory")["used_memory"])


async def test_100k_tasks_leave_no_residue(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    body = b'{"args":[1,2,3],"kwargs":{"user":"someone@example.com"}}'
    async with RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as b:
        before = _used(admin)
        for start in range(0, N, BATCH):
            now = clock.now()
            msgs = [
                Message(f"t{i:08d}", "app.work", "q", i % 5, now, now, body, unique_key=f"k{i}")
                for i in range(start, start + BATCH)
            ]
            results = await b.enqueue(msgs)
            assert all(r.created for r in results)
            leases = await b.claim(["q"], BATCH, 60, "w")
            assert len(leases) == BATCH
            outcomes = [
                Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, now, b"1", result_ttl=1.0)
                for x in leases
            ]
            assert all(await b.settle(outcomes))
        peak = _used(admin)
        [stats] = await b.stats(["q"])
        assert stats.states[State.SUCCEEDED] == N
        clock.advance(2)
        await b.reap()
        await b.stats(["q"])  # one more round trip: drops the last kept replies
        after = _used(admin)
        [stats] = await b.stats(["q"])
        assert stats.states[State.SUCCEEDED] == 0 and stats.depth == 0
        assert await b.get("t00000000") is None
        keys = prefix_keys(admin, prefix)
        assert len(keys) <= 6, keys
        grown = after - before
        assert peak - before > 10_000_000  # the tasks were really stored...
        assert grown < 256 * 1024, f"{grown} bytes left after {N} tasks"  # ...and are gone
