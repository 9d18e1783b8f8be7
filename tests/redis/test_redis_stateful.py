"""The Redis backend against the in-memory reference, by random operation sequences.

``TASKCORE_STATEFUL_EXAMPLES`` sets the number of examples (default 60, which
keeps this under ~15 s); ``TASKCORE_STATEFUL_SHRINK=1`` turns shrinking on (off by
default: against a server it can take minutes, and the unshrunk steps are printed).
The examples differ from run to run; ``--hypothesis-seed=N`` repeats a run.

The machine drives the hand-off to idle workers too (``idle_waiter``): it registers a
fake waiter, as ``RedisBackend.wait`` registers one, and reads its hand-off list. Twice
the PostgreSQL machine's examples, because only some examples reach a hand-off: with
30, mutants of the hand-off's conditions in enqueue.lua were caught in one to three
runs of three (eighth session).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from redis_helpers import delete_prefix, new_prefix

import redis as redis_sync
from taskcore.backend import Backend
from taskcore.clock import FakeClock
from taskcore.testing.stateful import HandOff, WaiterInbox, backend_state_machine
from taskcore_redis import RedisBackend
from taskcore_redis._codec import decode_message

# the fake waiter's backend id (RedisBackend's are uuid4().hex: never this)
_WAITER_ID = "f" * 32

_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("TASKCORE_STATEFUL_SHRINK"):
    _PHASES.append(Phase.shrink)


class FakeWaiter:
    """A waiter registered as ``RedisBackend.wait`` registers one (enqueue.lua), whose
    list the machine reads (taskcore.testing.stateful.IdleWaiter)."""

    async def register(
        self, backend: Backend, queue: str, worker: str, lease_seconds: float, until: float
    ) -> None:
        assert isinstance(backend, RedisBackend)
        member = f"{_WAITER_ID}{lease_seconds!r}|{worker}"
        await backend._r.zadd(backend.keys.waiters(queue), {member: until})

    async def unregister(self, backend: Backend, queue: str) -> None:
        assert isinstance(backend, RedisBackend)
        key = backend.keys.waiters(queue)
        mine = [m for m in await backend._r.zrange(key, 0, -1) if m.startswith(_WAITER_ID.encode())]
        if mine:
            await backend._r.zrem(key, *mine)

    async def take(self, backend: Backend, queue: str) -> WaiterInbox:
        assert isinstance(backend, RedisBackend)
        hand = backend.keys.hand(queue, _WAITER_ID)
        async with backend._r.pipeline(transaction=True) as pipe:
            pipe.lrange(hand, 0, -1)
            pipe.delete(hand)
            pipe.zrange(backend.keys.waiters(queue), 0, -1)
            items, _, members = await pipe.execute()
        handed = []
        markers = 0
        for item in items:
            if item[:1] != b"h":
                float(item)  # a marker is the time it was pushed
                markers += 1
                continue
            # h<token>|<attempt>|<ready>|<now>|<next due or ''>|<#id>|<id><stored message>
            token, attempt, ready, now, due, n, rest = item[1:].split(b"|", 6)
            msg = decode_message(rest[int(n) :])
            assert rest[: int(n)].decode() == msg.id, item
            handed.append(
                HandOff(
                    msg,
                    int(token),
                    int(attempt),
                    float(now),
                    float(ready),
                    float(due) if due else None,
                )
            )
        registered = any(m.startswith(_WAITER_ID.encode()) for m in members)
        return WaiterInbox(tuple(handed), markers, registered)


def test_redis_matches_memory(redis_url: str, admin: redis_sync.Redis) -> None:
    @contextlib.asynccontextmanager
    async def make(clock: FakeClock) -> AsyncIterator[RedisBackend]:
        prefix = new_prefix()
        try:
            async with RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as backend:
                yield backend
        finally:
            delete_prefix(admin, prefix)

    machine = backend_state_machine(make, idle_waiter=FakeWaiter())
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("TASKCORE_STATEFUL_EXAMPLES", "60")),
            stateful_step_count=30,
            deadline=None,
            phases=_PHASES,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
