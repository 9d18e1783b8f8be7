"""Lost connections: operations fail with BackendUnavailable or recover, and no task
is lost or duplicated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import pytest
from redis_helpers import TcpProxy, registered

import redis as redis_sync
from taskcore.backend import Outcome, OutcomeKind
from taskcore.clock import FakeClock
from taskcore.errors import BackendUnavailable
from taskcore.states import State
from taskcore.testing import make_message
from taskcore_redis import RedisBackend
from taskcore_redis.backend import _ENQUEUE_CHUNK

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(redis_url)
    p = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await p.start()
    yield p
    await p.stop()


def _ok(lease: object, clock: FakeClock) -> Outcome:
    return Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())  # type: ignore[attr-defined]


async def _count(b: RedisBackend, state: State) -> int:
    [stats] = await b.stats(["q"])
    return stats.states[state]


async def test_client_kill_between_operations(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as b:
        await b.enqueue([make_message(clock) for _ in range(30)])
        leases = await b.claim(["q"], 10, 30, "w")
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        # Dead pooled connections are replaced at checkout: even calls that are
        # never retried (settle, claim) go through.
        assert await b.settle([_ok(x, clock) for x in leases]) == [True] * 10
        admin.client_kill_filter(_type="normal", skipme=True)
        more = await b.claim(["q"], 100, 30, "w")
        admin.client_kill_filter(_type="normal", skipme=True)
        assert await b.settle([_ok(x, clock) for x in more]) == [True] * 20
        assert await _count(b, State.SUCCEEDED) == 30


async def test_waiter_survives_client_kill(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    # only this test's connections are killed (the server may be shared): client ids
    # grow, so those above the largest one now are the ones opened from here on
    before = max(int(c["id"]) for c in admin.client_list())
    async with (
        RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as idle,
        RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as producer,
    ):
        woke = anyio.Event()

        async def waiter() -> None:
            await idle.wait(["q"], 30)
            woke.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                while not any(c.get("cmd") == "blpop" for c in admin.client_list()):
                    await anyio.wait_all_tasks_blocked()
                    await anyio.lowlevel.checkpoint()  # let the BLPOP reach the server
                ours = [c["id"] for c in admin.client_list() if int(c["id"]) > before]
                assert ours, "the backends' connections are not listed"
                for client_id in ours:
                    admin.client_kill_filter(_id=client_id, skipme=True)
                await producer.enqueue([make_message(clock)])
                await woke.wait()


async def test_outage_raises_backend_unavailable_then_recovers(
    proxy: TcpProxy, prefix: str
) -> None:
    clock = FakeClock()
    async with RedisBackend.from_url(proxy.url, clock=clock, prefix=prefix, retries=2) as b:
        [res] = await b.enqueue([make_message(clock)])
        await proxy.stop()
        with pytest.raises(BackendUnavailable, match="gave up after 3 attempts") as info:
            await b.get(res.id)
        assert info.value.task_id == res.id
        with pytest.raises(BackendUnavailable, match="unavailable during claim"):
            await b.claim(["q"], 1, 30, "w")
        with pytest.raises(BackendUnavailable):
            await b.enqueue([make_message(clock)])
        await proxy.start()
        rec = await b.get(res.id)
        assert rec is not None and rec.state is State.QUEUED  # nothing lost
        [lease] = await b.claim(["q"], 10, 30, "w")
        assert await b.settle([_ok(lease, clock)]) == [True]


async def test_lost_replies_are_replayed_not_run_twice(proxy: TcpProxy, prefix: str) -> None:
    """Each state change carries a request id; sent again after a lost reply, the
    script returns the reply it kept instead of running a second time."""
    clock = FakeClock()
    async with RedisBackend.from_url(proxy.url, clock=clock, prefix=prefix) as b:
        msgs = [make_message(clock, unique_key=f"order-{i}") for i in range(50)]
        await b.enqueue(msgs[:1])
        proxy.swallow_next_reply()  # the enqueue script's (it indexes the ids too)
        assert all(r.created for r in await b.enqueue(msgs[1:13]))
        b.one_round_trip_enqueue = False  # as on a cluster: index.lua first
        proxy.swallow_next_reply()  # the index script's reply
        assert all(r.created for r in await b.enqueue(msgs[13:25]))
        proxy.swallow_next_reply(skip=1)  # the enqueue script's reply
        results = await b.enqueue(msgs[25:])
        assert [(r.id, r.created) for r in results] == [(m.id, True) for m in msgs[25:]]
        b.one_round_trip_enqueue = True

        proxy.swallow_next_reply()
        leases = await b.claim(["q"], 10, 30, "w")  # replayed: the same 10 leases
        assert [x.attempt for x in leases] == [1] * 10
        proxy.swallow_next_reply()
        assert await b.settle([_ok(x, clock) for x in leases]) == [True] * 10
        proxy.swallow_next_reply()
        assert await b.cancel([msgs[-1].id]) == [True]  # a second run would say False
        assert proxy.swallowed == 6

        assert await _count(b, State.SUCCEEDED) == 10
        assert await _count(b, State.CANCELLED) == 1
        rest = await b.claim(["q"], 100, 30, "w")
        assert len(rest) == 39 and all(x.attempt == 1 for x in rest)
        assert len({x.message.id for x in leases + rest}) == 49  # nothing lost or doubled


async def test_a_bulk_enqueue_cut_midway_runs_each_call_once(proxy: TcpProxy, prefix: str) -> None:
    """A batch of several script calls on one connection: the connection is cut after
    the first call's reply; the calls that had not answered are sent again, and the ones
    that ran return their kept replies (their unique keys would say "not created"
    had they run twice)."""
    clock = FakeClock()
    async with RedisBackend.from_url(proxy.url, clock=clock, prefix=prefix) as b:
        await b.enqueue([make_message(clock)])
        msgs = [make_message(clock, unique_key=f"u{i}") for i in range(3 * _ENQUEUE_CHUNK)]
        proxy.swallow_next_reply(skip=2)  # the kept replies' UNLINK, the first call
        results = await b.enqueue(msgs)
        assert [(r.id, r.created) for r in results] == [(m.id, True) for m in msgs]
        leases = await b.claim(["q"], len(msgs) + 1, 30, "w")
        assert proxy.swallowed == 1
        assert [x.message.id for x in leases[1:]] == [m.id for m in msgs]


async def test_silent_server_is_noticed_within_socket_timeout(proxy: TcpProxy, prefix: str) -> None:
    """A server that stops answering without closing anything (blackhole): calls fail
    after socket_timeout instead of hanging, and work again once bytes flow."""
    url = f"redis://127.0.0.1:{proxy.listen_port}/0?socket_timeout=1.5&retries=0"
    clock = FakeClock()
    async with RedisBackend.from_url(url, clock=clock, prefix=prefix) as b:
        await b.enqueue([make_message(clock) for _ in range(3)])
        proxy.blackhole()
        with anyio.fail_after(10), pytest.raises(BackendUnavailable, match="Timeout"):
            await b.stats(["q"])
        proxy.forward()
        assert proxy.swallowed_bytes > 0 and proxy.dropped == 0
        assert await _count(b, State.QUEUED) == 3


async def test_blocking_wait_longer_than_socket_timeout_is_not_a_timeout(
    redis_url: str, prefix: str
) -> None:
    """wait() blocks in BLPOP for at most LONGEST_BLOCK at a time, so a socket_timeout
    just above it never cuts a quiet wait short."""
    url = f"{redis_url.split('?')[0]}?socket_timeout=1.2&retries=0"
    async with RedisBackend.from_url(url, prefix=prefix) as b:
        started = anyio.current_time()
        await b.wait(["q"], 3.0)  # nothing comes: returns after the timeout, no error
        assert anyio.current_time() - started >= 3.0


@pytest.mark.parametrize(("queues", "into"), [(["q"], "q"), (["q", "r"], "r")])
async def test_a_hand_off_whose_reply_is_lost_is_not_lost(
    proxy: TcpProxy, redis_url: str, prefix: str, queues: list[str], into: str
) -> None:
    """A task handed to an idle waiter (the enqueue leases it to the waiter and its
    blocking BLMOVE returns it) whose reply is lost: the waiter unregisters, which
    returns the lease from its inbox; nothing is claimed twice. On several queues the
    inbox is the first queue's, and the task another's."""
    clock = FakeClock()
    async with (
        RedisBackend.from_url(proxy.url, clock=clock, prefix=prefix) as idle,
        RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as producer,
    ):
        assert await idle.claim(queues, 10, 30, "w") == []  # drained: the next wait registers

        async def waiter() -> None:
            await idle.wait(queues, 30)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await registered(producer, queue=queues[-1])
                await anyio.wait_all_tasks_blocked()  # the registration's replies are through
                proxy.swallow_next_reply()  # the BLMOVE's reply, with the hand-off
                [res] = await producer.enqueue([make_message(clock, queue=into)])
        assert proxy.swallowed == 1
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.RUNNING and rec.worker == "w"
        [lease] = await idle.claim(queues, 10, 30, "w")
        assert (lease.message.id, lease.attempt, lease.token) == (res.id, 1, 1)
        [stats] = await producer.stats([into])
        assert stats.states[State.RUNNING] == 1
        assert await idle.settle([_ok(lease, clock)]) == [True]
        for q in queues:
            assert await producer._r.zcard(producer.keys.waiters(q)) == 0
