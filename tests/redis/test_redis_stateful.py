"""The Redis backend against the in-memory reference, by random operation sequences.

``TASKCORE_STATEFUL_EXAMPLES`` sets the number of examples (default 60, which
keeps this under ~15 s); ``TASKCORE_STATEFUL_SHRINK=1`` turns shrinking on (off by
default: against a server it can take minutes, and the unshrunk steps are printed).
The examples differ from run to run; ``--hypothesis-seed=N`` repeats a run.

The machine drives the hand-off to idle workers too (``idle_waiter``): it registers a
fake waiter, as ``RedisBackend.wait`` registers one (on one queue, or on both with one
list), and reads its hand-off list. Twice
the PostgreSQL machine's examples, because only some examples reach a hand-off: with
30, mutants of the hand-off's conditions in enqueue.lua were caught in one to three
runs of three (eighth session).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence

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
    list the machine reads (taskcore.testing.stateful.IdleWaiter); on several queues
    with one list, its first queue's (see ``RedisBackend._pop_handed``)."""

    @staticmethod
    def _member(
        backend: RedisBackend, queues: Sequence[str], lease_seconds: float, worker: str
    ) -> str:
        member = f"{_WAITER_ID}{lease_seconds!r}|{worker}"
        if len(queues) > 1:
            base = backend.keys.base(queues[0])
            member = f"@{len(base.encode())}@{base}{member}"
        return member

    @staticmethod
    def _mine(member: bytes) -> bool:
        return _WAITER_ID.encode() in member

    async def register(
        self,
        backend: Backend,
        queues: Sequence[str],
        worker: str,
        lease_seconds: float,
        until: float,
    ) -> None:
        assert isinstance(backend, RedisBackend)
        member = self._member(backend, queues, lease_seconds, worker)
        for q in queues:
            await backend._r.zadd(backend.keys.waiters(q), {member: until})

    async def unregister(self, backend: Backend, queues: Sequence[str]) -> None:
        assert isinstance(backend, RedisBackend)
        for q in queues:
            key = backend.keys.waiters(q)
            mine = [m for m in await backend._r.zrange(key, 0, -1) if self._mine(m)]
            if mine:
                await backend._r.zrem(key, *mine)

    async def take(self, backend: Backend, queues: Sequence[str]) -> WaiterInbox:
        assert isinstance(backend, RedisBackend)
        hand = backend.keys.hand(queues[0], _WAITER_ID)
        async with backend._r.pipeline(transaction=True) as pipe:
            pipe.lrange(hand, 0, -1)
            pipe.delete(hand)
            for q in queues:
                pipe.zrange(backend.keys.waiters(q), 0, -1)
            items, _, *members = await pipe.execute()
        handed = []
        markers = 0
        for item in items:
            if item[:1] not in (b"h", b"H"):
                float(item)  # a marker is the time it was pushed
                markers += 1
                continue
            # h<token>|<attempt>|<ready>|<now>|<next due or ''>|<#id>|<id><stored message>
            # (H<#B>|<B> instead of h: handed by one queue of several, B its key base)
            body = item[1:]
            if item[:1] == b"H":
                n_base, body = body.split(b"|", 1)
                base, body = body[: int(n_base)], body[int(n_base) :]
            token, attempt, ready, now, due, n, rest = body.split(b"|", 6)
            msg = decode_message(rest[int(n) :])
            assert rest[: int(n)].decode() == msg.id, item
            if item[:1] == b"H":
                assert base.decode() == backend.keys.base(msg.queue), item
            else:
                assert len(queues) == 1 and msg.queue == queues[0], item
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
        registered = all(any(self._mine(m) for m in ms) for ms in members)
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
