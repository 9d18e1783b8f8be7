"""Redis specifics of workflow follow-ups: the outbox that a settle writes in its own
script, delivered by the settling client or, after a crash, by the reaper."""

from __future__ import annotations

import math

import anyio
import anyio.lowlevel
import pytest
from redis.crc import key_slot

import redis as redis_sync
from taskcore import App, chain
from taskcore.backend import FollowUp, Outcome, OutcomeKind
from taskcore.clock import FakeClock
from taskcore.errors import BackendUnavailable
from taskcore.states import State
from taskcore.testing import make_message, settle_half_a_chord
from taskcore.workflow import follow_ups
from taskcore_redis import RedisBackend

pytestmark = pytest.mark.anyio


async def test_follow_ups_survive_a_client_dying_before_delivery(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as backend:
        parents = [make_message(clock), make_message(clock, queue="q2")]
        await backend.enqueue(parents)
        [a] = await backend.claim(["q"], 1, 30, "w")
        [b] = await backend.claim(["q2"], 1, 30, "w")
        nxt = make_message(clock, queue="q3")
        cb = make_message(clock, queue="q3")
        then_a = (FollowUp(nxt), FollowUp(cb, after=2))

        async def dies(entries: object) -> None:
            raise BackendUnavailable("connection lost after the settle script ran")

        deliver = backend._deliver
        backend._deliver = dies  # type: ignore[method-assign]
        ok = Outcome(a.message.id, a.token, OutcomeKind.SUCCEEDED, clock.now(), then=then_a)
        with pytest.raises(BackendUnavailable):
            await backend.settle([ok])
        backend._deliver = deliver  # type: ignore[method-assign]
        # the success is recorded, its follow-ups wait in the queue's outbox
        rec = await backend.get(a.message.id)
        assert rec is not None and rec.state is State.SUCCEEDED
        assert await backend.get(nxt.id) is None
        outbox = backend.keys.outbox("q")
        assert admin.hkeys(outbox) == [a.message.id.encode()]
        assert key_slot(outbox.encode()) == key_slot(backend.keys.meta("q").encode())
        # the worker's retry of the settle is refused as stale: nothing twice
        assert await backend.settle([ok]) == [False]
        await backend.reap()  # any worker's maintenance delivers it
        rec = await backend.get(nxt.id)
        assert rec is not None and rec.state is State.QUEUED
        assert admin.hlen(outbox) == 0
        assert await backend.get(cb.id) is None  # the join has one parent of two
        # delivering again (a client and a reaper both did) changes nothing
        await backend._deliver([("q", a.message.id, math.inf, then_a)])
        assert await backend.get(cb.id) is None
        ok_b = Outcome(
            b.message.id, b.token, OutcomeKind.SUCCEEDED, clock.now(), then=(FollowUp(cb, 2),)
        )
        assert await backend.settle([ok_b]) == [True]
        rec = await backend.get(cb.id)
        assert rec is not None and rec.state is State.QUEUED
        await backend._deliver([("q2", b.message.id, math.inf, (FollowUp(cb, 2),))])
        [stats] = await backend.stats(["q3"])
        assert stats.states[State.QUEUED] == 2


async def test_an_incomplete_join_leaves_no_keys_once_its_parents_results_expire(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as backend:
        cb, a = await settle_half_a_chord(backend, clock)  # a chord whose other member died
        join, expiries = f"{backend.keys.base('q3')}:j:{cb.id}", f"{backend.keys.base('q3')}:jx"
        assert admin.smembers(join) == {a.message.id.encode()}
        assert admin.zscore(expiries, cb.id) == clock.now() + 100
        clock.advance(99)
        await backend.reap()
        assert admin.exists(join) == 1
        clock.advance(1)
        await backend.reap()
        assert admin.exists(join) == 0 and admin.exists(expiries) == 0
        assert await backend.get(cb.id) is None


async def test_workflow_result_looks_for_an_undelivered_step_on_the_apps_clock(
    redis_url: str, prefix: str
) -> None:
    """The next step appears once the outbox is delivered (here by reap, after the
    settling client died); the handle looks again on the app's clock, not by sleeping."""
    clock = FakeClock()
    backend = RedisBackend.from_url(redis_url, clock=clock, prefix=prefix)
    app = App(backend=backend)

    @app.task
    async def first(x: int) -> int:
        return x + 1

    @app.task
    async def second(x: int) -> int:
        return x * 10

    async with app:
        h = await chain(first.s(1), second.s()).enqueue()
        [lease] = await backend.claim(["default"], 1, 30, "w")
        env = app.codec.decode_envelope(lease.message.body)
        ok = Outcome(
            lease.message.id,
            lease.token,
            OutcomeKind.SUCCEEDED,
            clock.now(),
            result=app.codec.encode(2),
            result_ttl=3600.0,
            then=follow_ups(env, clock.now(), app.codec),
        )

        async def dies(entries: object) -> None:
            raise BackendUnavailable("connection lost after the settle script ran")

        deliver = backend._deliver
        backend._deliver = dies  # type: ignore[method-assign]
        with pytest.raises(BackendUnavailable):
            await backend.settle([ok])
        backend._deliver = deliver  # type: ignore[method-assign]
        results: list[int] = []
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def wait() -> None:
                    results.append(await h.result(timeout=10))

                tg.start_soon(wait)
                while clock.sleepers < 1:  # the handle looks again on the FakeClock
                    await anyio.lowlevel.checkpoint()
                assert await backend.get(h.ids[1]) is None
                await backend.reap()  # delivers the outbox
                clock.advance(1)
                [nxt] = await backend.claim(["default"], 1, 30, "w")
                assert nxt.message.id == h.ids[1]
                done = Outcome(
                    nxt.message.id,
                    nxt.token,
                    OutcomeKind.SUCCEEDED,
                    clock.now(),
                    result=app.codec.encode(20),
                )
                assert await backend.settle([done]) == [True]
        assert results == [20]
