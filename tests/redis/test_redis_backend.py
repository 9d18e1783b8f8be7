"""Redis-specific behaviour: configuration, script cache, key layout, blocking waits."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot
from redis_helpers import prefix_keys, registered, woken_by

import redis as redis_sync
from taskcore.backend import Outcome, OutcomeKind, QueueSpec, TaskFilter
from taskcore.clock import FakeClock, SystemClock
from taskcore.errors import ConfigurationError
from taskcore.scheduling import SchedulingPolicy
from taskcore.states import State
from taskcore.testing import make_message
from taskcore_redis import RedisBackend
from taskcore_redis._config import LONGEST_BLOCK
from taskcore_redis._keys import INDEX_PIN
from taskcore_redis.backend import _BODY_ARG_MIN, _ENQUEUE_CHUNK, _POLL

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def _backend(url: str, prefix: str, clock: object = None) -> AsyncIterator[RedisBackend]:
    async with RedisBackend.from_url(url, clock=clock or FakeClock(), prefix=prefix) as b:  # type: ignore[arg-type]
        yield b


@contextlib.asynccontextmanager
async def _pair(
    url: str, prefix: str, clock: object
) -> AsyncIterator[tuple[RedisBackend, RedisBackend]]:
    """An idle worker's backend and a producer's, on one clock."""
    async with _backend(url, prefix, clock) as idle, _backend(url, prefix, clock) as producer:
        yield idle, producer


# -- configuration -------------------------------------------------------------------
def test_url_options() -> None:
    b = RedisBackend.from_url(
        "redis://:secret@cache.internal:6380/3?prefix=shop&max_connections=7"
        "&socket_timeout=5&retries=1&pool_timeout=2"
    )
    c = b.config
    assert b.prefix == "shop" and b.keys.base("q") == "{shop:q}"
    assert (c.max_connections, c.retries, c.pool_timeout) == (7, 1, 2.0)
    assert c.connection["host"] == "cache.internal" and c.connection["port"] == 6380
    assert c.connection["db"] == 3 and c.connection["socket_timeout"] == 5.0
    assert "secret" not in repr(c)  # the password stays out of logs


def test_defaults_and_keyword_overrides() -> None:
    b = RedisBackend.from_url("redis://localhost", prefix="p2", max_connections=3)
    assert b.prefix == "p2" and b.config.max_connections == 3
    assert RedisBackend().prefix == "taskcore"
    assert RedisBackend().config.max_connections == 64


def test_rediss_uses_tls() -> None:
    b = RedisBackend.from_url("rediss://h:6390/0?ssl_cert_reqs=none")
    assert b.config.connection["connection_class"] is SSLConnection


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "redis://h/0?prefix=a{b}", "redis://h/0?max_connections=0"],
)
def test_bad_urls_say_what_is_wrong(url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisBackend.from_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://:hunter2@localhost:6379",
        "redis://:hunter2@h/0?max_connections=0",
        "redis://user:hunter2@h/0?retries=x",
        "redis://:hunter2@h/0?socket_timeout=soon",
        "redis://h/0?password=hunter2&socket_timeout=0.5",
    ],
)
def test_url_errors_do_not_show_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisBackend.from_url(url)
    message = str(info.value)
    assert "hunter2" not in message and "***" in message, message


def test_dead_peer_defaults() -> None:
    """Without them redis-py < 8 waits forever on a peer that vanished silently."""
    c = RedisBackend.from_url("redis://h/0").config.connection
    assert c["socket_timeout"] == 10.0 and c["socket_connect_timeout"] == 5.0
    assert c["socket_keepalive"] is True and c["health_check_interval"] == 15
    assert c["socket_keepalive_options"]  # probes after 15 s idle where the OS allows
    c = RedisBackend.from_url(
        "redis://h/0?socket_timeout=3&socket_keepalive=false&health_check_interval=0"
    ).config.connection
    assert (c["socket_timeout"], c["socket_keepalive"], c["health_check_interval"]) == (3, 0, 0)
    assert "socket_keepalive_options" not in c
    c = RedisBackend.from_url("unix:///tmp/redis.sock", socket_timeout=None).config.connection
    assert c["socket_timeout"] is None and "socket_keepalive" not in c  # no TCP, no keepalive


def test_socket_timeout_must_outlast_the_blocking_wait() -> None:
    # redis-py applies socket_timeout to BLPOP too (redis/redis-py#2807)
    assert _POLL <= LONGEST_BLOCK
    with pytest.raises(
        ConfigurationError, match=r"socket_timeout=1\.0 must be longer than the 1 s"
    ):
        RedisBackend.from_url("redis://h/0?socket_timeout=1")


# -- connections -----------------------------------------------------------------------
def test_commands_are_packed_as_redis_py_packs_them() -> None:
    from redis.asyncio.connection import Connection as RedisConnection

    conn = RedisConnection()
    backend = RedisBackend.from_url("redis://h/0")
    commands = [
        ("EVALSHA", "ab" * 20, 2, "k:{q}", "k:{q}:r:1", "1764356412.123456", "q"),
        ("SET", "clé", "välue", b"\x00\xff\r\n", 0.1, 1e-07, -3, 2**70),
        ("UNLINK", "k"),
    ]
    assert backend._conn._pack(conn, commands) == b"".join(conn.pack_commands(commands))


async def test_kept_connections_stay_within_the_pool_and_close_with_it(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()

    def connections() -> int:
        return sum(c.get("name") == prefix for c in admin.client_list())

    async with RedisBackend.from_url(
        redis_url, clock=clock, prefix=prefix, max_connections=8, client_name=prefix
    ) as b:
        async with anyio.create_task_group() as tg:  # more callers than connections
            for _ in range(40):
                tg.start_soon(b.enqueue, [make_message(clock)])
        assert 1 <= connections() <= 8
        assert len(await b.claim(["q"], 100, 30, "w")) == 40
    assert connections() == 0


def flush_scripts(url: str) -> None:
    """SCRIPT FLUSH on the server at ``url`` (the tests' private one: see conftest)."""
    with contextlib.closing(redis_sync.Redis.from_url(url)) as client:
        client.script_flush()


# -- script cache ----------------------------------------------------------------------
async def test_scripts_reload_after_script_flush(private_redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _backend(private_redis_url, prefix, clock) as b:
        await b.enqueue([make_message(clock, queue=q) for q in ("a", "b")])
        flush_scripts(private_redis_url)
        # one script call, then a pipeline of several (reap runs one per queue)
        leases = await b.claim(["a", "b"], 10, 30, "w")
        assert len(leases) == 2
        flush_scripts(private_redis_url)
        clock.advance(31)
        assert sorted(await b.reap()) == sorted(lease.message.id for lease in leases)
        flush_scripts(private_redis_url)
        settled = await b.settle(
            [Outcome(lease.message.id, lease.token, OutcomeKind.SUCCEEDED, 0.0) for lease in leases]
        )
        assert settled == [False, False]  # reaped: the old tokens are fenced out


# -- key layout --------------------------------------------------------------------------
async def test_every_key_of_a_queue_is_in_one_cluster_slot(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.declare([QueueSpec("fair", SchedulingPolicy.weighted_fair())])
        for q in ("fair", "mail", "x:y"):
            await b.enqueue(
                [make_message(clock, queue=q, unique_key=f"u{p}", priority=p) for p in range(5)]
                + [make_message(clock, queue=q, delay=100, fairness_key="k")]
            )
        leases = await b.claim(["fair", "mail", "x:y"], 10, 30, "w")
        tid = leases[0].message.id
        async with anyio.create_task_group() as tg:
            tg.start_soon(b.wait_done, tid, 5)
            await b.settle([Outcome(tid, leases[0].token, OutcomeKind.DEAD, clock.now())])
        await b.settle(
            [Outcome(x.message.id, x.token, OutcomeKind.RETRY, clock.now()) for x in leases[1:3]]
        )
        await b.cancel([leases[3].message.id])
        await b.pause("mail")
        await b.take_tokens("api", 1, 1)
        await b.once("tick", 60)
        await b.kv_set("cfg", b"1", ttl=60)
        await b.record_runtimes([("t", 1.0)])
        keys = [k.decode() for k in prefix_keys(admin, prefix)]
        by_tag: dict[str, set[int]] = {}
        for key in keys:
            tag = key[1 : key.index("}")]
            by_tag.setdefault(tag, set()).add(key_slot(key.encode()))
        assert set(by_tag) == {prefix, f"{prefix}:fair", f"{prefix}:mail", f"{prefix}:x:y"}
        assert all(len(slots) == 1 for slots in by_tag.values()), by_tag
        assert sum(k.startswith(f"{{{prefix}:fair}}:t:") for k in keys) == 6


async def test_purge_and_ttl_leave_only_fixed_keys(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.enqueue([make_message(clock, unique_key=f"u{i}") for i in range(20)])
        leases = await b.claim(["q"], 10, 30, "w")
        await b.settle(
            [
                Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, clock.now(), result_ttl=5)
                for x in leases
            ]
        )
        assert await b.purge("q", [State.QUEUED]) == 10
        clock.advance(6)
        await b.reap()
        assert await b.list_tasks(TaskFilter()) == []
        keys = {k.decode() for k in prefix_keys(admin, prefix)}
        base = f"{{{prefix}:q}}"
        fixed = {f"{base}:meta", f"{base}:n", f"{base}:wake", f"{base}:run", f"{{{prefix}}}:queues"}
        assert keys <= fixed | {b.keys.index}, keys
        # the id index and the running set keep their pins (see below), no task's id
        assert admin.hkeys(b.keys.index) == [INDEX_PIN.encode()]
        assert [m[:1] for m in admin.zrange(f"{base}:run", 0, -1)] == [b"\x00"]


# -- blocking waits -------------------------------------------------------------------------
async def test_wait_wakes_on_enqueue_from_another_client(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        await woken_by(
            idle, lambda: producer.enqueue([make_message(clock, queue="other")]), ["q", "other"]
        )


async def test_wait_skips_paused_queues_and_times_out(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.enqueue([make_message(clock)])
        await b.pause("q")
        start = anyio.current_time()
        await b.wait(["q"], 0.2)
        assert anyio.current_time() - start >= 0.2
        await b.resume("q")
        with anyio.fail_after(1):
            await b.wait(["q"], 30)


async def test_enqueue_into_a_paused_queue_wakes_nobody(redis_url: str, prefix: str) -> None:
    # A woken waiter returns without looking (its claim looks), so a paused queue
    # must not leave markers behind: enqueues into it push none.
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.pause("q")
        await b.enqueue([make_message(clock)])
        start = anyio.current_time()
        await b.wait(["q"], 0.2)
        assert anyio.current_time() - start >= 0.2
        assert await b.claim(["q"], 1, 30, "w") == []


async def test_wait_wakes_when_fake_clock_makes_work_due(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.enqueue([make_message(clock, delay=60)])
        await woken_by(b, lambda: clock.advance(60))


# drained: after a claim that emptied the queue, the wait knows the next due time
@pytest.mark.parametrize("drained", [False, True], ids=["fresh", "after-draining-claim"])
async def test_wait_wakes_for_scheduled_work_on_the_real_clock(
    redis_url: str, prefix: str, drained: bool
) -> None:
    clock = SystemClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.enqueue([make_message(FakeClock(clock.now()), delay=0.3)])
        if drained:
            assert await b.claim(["q"], 10, 30, "w") == []  # next due in 0.3 s
        start = anyio.current_time()
        with anyio.fail_after(2):
            await b.wait(["q"], 30)
        assert anyio.current_time() - start >= 0.25
        assert len(await b.claim(["q"], 1, 30, "w")) == 1


# After a claim that emptied the queue, wait() blocks without looking first (the
# claim dropped the queue's stale markers and returned the next due time).
async def test_wait_after_draining_claim_ignores_markers_for_taken_work(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.enqueue([make_message(clock) for _ in range(3)])  # three markers
        assert len(await b.claim(["q"], 10, 30, "w")) == 3
        start = anyio.current_time()
        await b.wait(["q"], 0.2)
        assert anyio.current_time() - start >= 0.2


async def test_wait_after_draining_claim_wakes_on_new_work(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        assert await idle.claim(["q"], 10, 30, "w") == []
        await woken_by(idle, lambda: producer.enqueue([make_message(clock)]))
        assert len(await idle.claim(["q"], 10, 30, "w")) == 1


async def test_wait_after_draining_claim_sees_the_fake_clock_move(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        await b.enqueue([make_message(clock, delay=60)])
        assert await b.claim(["q"], 10, 30, "w") == []
        clock.advance(60)  # between the claim and the wait: the task is due now
        with anyio.fail_after(0.5):  # no marker comes; the wait must not block
            await b.wait(["q"], 30)
        assert len(await b.claim(["q"], 1, 30, "w")) == 1


# After a draining claim, a wait() on one queue registers as an idle waiter and blocks
# on its own hand-off list: an enqueue of one task leases it to the waiter and pushes
# the lease there (enqueue.lua), so the wait's reply carries it and the next claim()
# returns it without a round trip; other wake-ups are markers, and the claim claims.
async def _wake_claim(
    idle: RedisBackend,
    producer: RedisBackend,
    clock: object,
    n: int = 1,
    limit: int = 10,
    body: bytes | None = None,
) -> list[str]:
    assert await idle.claim(["q"], limit, 30, "w") == []  # drained: the hint is set
    ids: list[str] = []

    async def waiter() -> None:
        await idle.wait(["q"], 30)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await registered(producer)
            res = await producer.enqueue([make_message(clock, body=body) for _ in range(n)])  # type: ignore[arg-type]
            ids += [r.id for r in res]
    return ids


def _dead_waiter(worker: str = "gone") -> str:
    """The registration of a waiter that never reads its list (a worker that died
    blocked): its backend id, lease seconds and worker name (see enqueue.lua)."""
    return f"{'d' * 32}30.0|{worker}"


async def _add_waiter(producer: RedisBackend, clock: FakeClock, member: str) -> None:
    await producer._r.zadd(producer.keys.waiters("q"), {member: clock.now() + 3})


async def test_a_waiters_claim_drops_registrations_that_ended_a_minute_ago(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        waiters = producer.keys.waiters("q")
        await _add_waiter(producer, clock, _dead_waiter("gone-long-ago"))  # until now + 3
        clock.advance(70)  # it ended 67 s ago
        await producer._r.zadd(waiters, {_dead_waiter("gone-just-now"): clock.now() - 30})
        assert await idle.claim(["q"], 10, 30, "w") == []
        await idle.wait(["q"], 0.01)  # registers, times out
        assert await idle.claim(["q"], 10, 30, "w") == []  # unregisters, drops the old one
        assert await producer._r.zrange(waiters, 0, -1) == [_dead_waiter("gone-just-now").encode()]


async def test_a_task_handed_to_a_dead_waiter_comes_back_when_its_lease_lapses(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        await _add_waiter(producer, clock, _dead_waiter())
        [res] = await producer.enqueue([make_message(clock)])
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.RUNNING and rec.worker == "gone"
        assert rec.attempt == 1
        assert await producer.claim(["q"], 10, 30, "w2") == []  # leased to the dead one
        clock.advance(31)  # its lease (30 s) lapsed
        assert await producer.reap() == [res.id]
        [lease] = await producer.claim(["q"], 10, 30, "w2")
        assert lease.message.id == res.id


@pytest.mark.parametrize("before", ["queued", "due"])
async def test_no_hand_off_past_work_that_a_claim_takes_first(
    redis_url: str, prefix: str, before: str
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        if before == "queued":
            [first] = await producer.enqueue([make_message(clock)])
        else:
            [first] = await producer.enqueue([make_message(clock, delay=5)])
            clock.advance(10)  # due (before the next one), not yet promoted
        member = _dead_waiter()
        await _add_waiter(producer, clock, member)
        [second] = await producer.enqueue([make_message(clock)])
        rec = await producer.get(second.id)
        assert rec is not None and rec.state is State.QUEUED  # not handed
        # the waiter was woken with a marker instead, and unregistered
        assert await producer._r.lrange(producer.keys.hand("q", "d" * 32), 0, -1) == [
            repr(clock.now()).encode()
        ]
        assert await producer._r.zcard(producer.keys.waiters("q")) == 0
        leases = await producer.claim(["q"], 10, 30, "w2")
        assert [x.message.id for x in leases] == [first.id, second.id]


async def test_no_hand_off_on_a_weighted_fair_or_paused_queue(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        await producer.declare([QueueSpec("q", SchedulingPolicy.weighted_fair())])
        await _add_waiter(producer, clock, _dead_waiter())
        [res] = await producer.enqueue([make_message(clock)])
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.QUEUED
        [lease] = await producer.claim(["q"], 10, 30, "w2")
        await producer.settle([Outcome(res.id, lease.token, OutcomeKind.SUCCEEDED, clock.now())])
        await producer.declare([QueueSpec("q", SchedulingPolicy.strict_priority())])
        await producer.pause("q")
        await _add_waiter(producer, clock, _dead_waiter())
        [res] = await producer.enqueue([make_message(clock)])
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.QUEUED


async def test_a_cancelled_wait_loses_no_handed_task(redis_url: str, prefix: str) -> None:
    # Cancelled right as the hand-off arrives: whether or not the reply was read, the
    # task goes back to the queue with its attempt unspent.
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        async with _backend(redis_url, prefix, clock) as idle:
            assert await idle.claim(["q"], 10, 30, "w") == []
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(idle.wait, ["q"], 30)
                    await registered(producer)
                    [res] = await producer.enqueue([make_message(clock)])
                    tg.cancel_scope.cancel()
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.QUEUED
        [lease] = await producer.claim(["q"], 10, 30, "w2")
        assert (lease.message.id, lease.attempt) == (res.id, 1)
        assert await producer._r.zcard(producer.keys.waiters("q")) == 0


async def test_closing_unregisters_and_hands_back_what_came_meanwhile(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        async with _backend(redis_url, prefix, clock) as idle:
            assert await idle.claim(["q"], 10, 30, "w") == []
            await idle.wait(["q"], 0.01)  # times out, still registered
            [res] = await producer.enqueue([make_message(clock)])  # handed, never read
            rec = await producer.get(res.id)
            assert rec is not None and rec.state is State.RUNNING
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.QUEUED
        assert await producer._r.zcard(producer.keys.waiters("q")) == 0
        admin = redis_sync.Redis.from_url(redis_url)
        assert not [k for k in prefix_keys(admin, prefix) if b":h:" in k or b":in:" in k]


async def test_resume_wakes_a_registered_waiter(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        await producer.pause("q")
        [res] = await producer.enqueue([make_message(clock)])
        assert await idle.claim(["q"], 10, 30, "w") == []  # paused

        async def resume() -> None:
            await registered(producer)
            await producer.resume("q")

        await woken_by(idle, resume)
        [lease] = await idle.claim(["q"], 10, 30, "w")
        assert lease.message.id == res.id


async def test_an_enqueue_hands_the_task_to_the_idle_waiter(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        [tid] = await _wake_claim(idle, producer, clock)
        rec = await producer.get(tid)  # before claim() is called: leased to the waiter
        assert rec is not None and rec.state is State.RUNNING and rec.worker == "w"
        [stats] = await producer.stats(["q"])
        assert (stats.states[State.RUNNING], stats.states[State.QUEUED]) == (1, 0)
        assert await producer._r.zcard(producer.keys.waiters("q")) == 0  # unregistered
        [lease] = await idle.claim(["q"], 10, 30, "w")
        assert (lease.message.id, lease.worker, lease.attempt) == (tid, "w", 1)
        assert lease.expires_at == lease.claimed_at + 30
        assert await idle.settle(
            [Outcome(tid, lease.token, OutcomeKind.SUCCEEDED, clock.now())]
        ) == [True]
        # the inbox holds the reply until the next blocking round trip deletes it
        admin = redis_sync.Redis.from_url(redis_url)
        [inbox] = [k for k in prefix_keys(admin, prefix) if b":in:" in k]
        assert 0 < admin.pttl(inbox) <= 60000  # and expires if that never comes
        assert await idle.claim(["q"], 10, 30, "w") == []
        await idle.wait(["q"], 0.05)
        assert not [k for k in prefix_keys(admin, prefix) if b":in:" in k]


async def test_long_messages_go_as_arguments_of_their_own(redis_url: str, prefix: str) -> None:
    """A stored message of _BODY_ARG_MIN bytes or more goes to enqueue.lua as an argument
    of its own (Redis 7 hashes every byte of a string that enters a script: inside the
    packed items it would be hashed twice). Handed off, claimed from a batch among short
    ones, read back, or sent for an id of another queue: each arrives whole, in order."""
    clock = FakeClock()
    long_body, longer = b"L" * _BODY_ARG_MIN, b"M" * (3 * _BODY_ARG_MIN + 7)
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        [tid] = await _wake_claim(idle, producer, clock, body=longer)
        [lease] = await idle.claim(["q"], 10, 30, "w")
        assert (lease.message.id, lease.message.body) == (tid, longer)

        bodies = [b"s1", long_body, b"s" * (_BODY_ARG_MIN - 1), longer, b"s2"]
        msgs = [make_message(clock, body=b) for b in bodies]
        assert [r.created for r in await producer.enqueue(msgs)] == [True] * 5
        leases = await idle.claim(["q"], 10, 30, "w")
        assert [(x.message.id, x.message.body) for x in leases] == [(m.id, m.body) for m in msgs]
        rec = await producer.get(msgs[3].id)
        assert rec is not None and rec.body == longer

        # an id of q's task, sent for q2 with a long message: q's task is its answer
        other = make_message(clock, queue="q2", body=longer, task_id=msgs[1].id)
        [res] = await producer.enqueue([other])
        assert (res.id, res.created) == (msgs[1].id, False)
        [stats] = await producer.stats(["q2"])
        assert sum(stats.states.values()) == 0


async def test_a_marker_woken_claim_after_script_flush_claims(
    private_redis_url: str, prefix: str
) -> None:
    # The task came before the worker registered: its marker is moved to the worker's
    # hand-off list as it blocks; the claim that follows finds its script flushed.
    clock = FakeClock()
    async with _pair(private_redis_url, prefix, clock) as (idle, producer):
        assert await idle.claim(["q"], 10, 30, "w") == []
        [res] = await producer.enqueue([make_message(clock)])  # its marker waits
        flush_scripts(private_redis_url)
        with anyio.fail_after(5):
            await idle.wait(["q"], 30)
        [lease] = await idle.claim(["q"], 10, 30, "w")
        assert (lease.message.id, lease.attempt) == (res.id, 1)


async def test_a_woken_claim_never_starts_before_the_enqueue(redis_url: str, prefix: str) -> None:
    # The claim's "now" was read when the wait started blocking; the marker's time
    # (the enqueuer's clock) is later, and the claim takes the latest.
    clock = SystemClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        [tid] = await _wake_claim(idle, producer, clock)
        [lease] = await idle.claim(["q"], 10, 30, "w")
        rec = await producer.get(tid)
        assert rec is not None and rec.started_at is not None
        assert rec.started_at >= rec.enqueued_at
        assert lease.claimed_at >= lease.message.enqueued_at
        assert lease.expires_at == lease.claimed_at + 30


async def test_a_woken_claim_takes_no_more_than_the_free_slots(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        # five at once: not handed, a marker wakes the worker and its claim takes three
        await _wake_claim(idle, producer, clock, n=5, limit=3)
        [stats] = await producer.stats(["q"])
        assert stats.states[State.QUEUED] == 5
        assert len(await idle.claim(["q"], 3, 30, "w")) == 3
        [stats] = await producer.stats(["q"])
        assert stats.states[State.RUNNING] == 3 and stats.states[State.QUEUED] == 2
        again = await producer.claim(["q"], 10, 30, "w2")
        assert len(again) == 2 and {x.attempt for x in again} == {1}


async def test_a_handed_task_goes_back_when_the_worker_has_no_slot_left(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        [tid] = await _wake_claim(idle, producer, clock)
        assert await idle.claim(["q"], 0, 30, "w") == []  # no slot left by now
        rec = await producer.get(tid)
        assert rec is not None and rec.state is State.QUEUED
        [lease] = await producer.claim(["q"], 10, 30, "w2")
        assert (lease.message.id, lease.attempt) == (tid, 1)


async def test_leases_a_wait_took_for_another_claimer_go_back(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        [tid] = await _wake_claim(idle, producer, clock)
        [lease] = await idle.claim(["q"], 10, 30, "other-worker")
        assert (lease.message.id, lease.worker, lease.attempt) == (tid, "other-worker", 1)


async def test_closing_hands_back_leases_a_wait_took(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        async with _backend(redis_url, prefix, clock) as idle:
            [tid] = await _wake_claim(idle, producer, clock)
        rec = await producer.get(tid)
        assert rec is not None and rec.state is State.QUEUED
        [lease] = await producer.claim(["q"], 1, 30, "w2")
        assert lease.attempt == 1


# A worker on several queues registers on each, with one hand-off list and inbox (its
# first queue's): any of them hands it a task; the others then see it busy.
_QR = ["q", "r"]


async def _wait_handed(
    idle: RedisBackend, producer: RedisBackend, clock: FakeClock, into: str
) -> str:
    """A drained idle worker on q and r waits; one task enqueued into ``into`` comes
    to it in the wait's reply. Returns the task's id."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(idle.wait, _QR, 30)
        await registered(producer, queue="r")  # (registered on q before r)
        [res] = await producer.enqueue([make_message(clock, queue=into)])
    return res.id


@pytest.mark.parametrize("into", _QR)
async def test_a_worker_on_several_queues_is_handed_tasks_from_each(
    redis_url: str, prefix: str, into: str
) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        assert await idle.claim(_QR, 10, 30, "w") == []  # drained: the next wait registers
        with anyio.fail_after(5):
            tid = await _wait_handed(idle, producer, clock, into)
        rec = await producer.get(tid)  # before claim() is called: leased to the waiter
        assert rec is not None and rec.state is State.RUNNING and rec.worker == "w"
        assert await producer._r.zcard(producer.keys.waiters(into)) == 0
        [lease] = await idle.claim(_QR, 10, 30, "w")
        assert (lease.message.id, lease.message.queue, lease.attempt) == (tid, into, 1)
        ok = Outcome(tid, lease.token, OutcomeKind.SUCCEEDED, clock.now())
        assert await idle.settle([ok]) == [True]  # in its own queue
        [stats] = await producer.stats([into])
        assert (stats.states[State.SUCCEEDED], stats.states[State.RUNNING]) == (1, 0)
        # the next wait blocks again on both (the hint the hand-off left holds)
        with anyio.fail_after(5):
            other = "r" if into == "q" else "q"
            tid = await _wait_handed(idle, producer, clock, other)
        [lease] = await idle.claim(_QR, 10, 30, "w")
        assert (lease.message.id, lease.message.queue) == (tid, other)


async def test_a_worker_handed_a_task_by_one_queue_is_not_handed_another_by_the_next(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        assert await idle.claim(_QR, 1, 30, "w") == []  # one slot
        with anyio.fail_after(5):
            first = await _wait_handed(idle, producer, clock, "q")
        assert len(await idle.claim(_QR, 1, 30, "w")) == 1  # busy, still registered on r
        assert await producer._r.zcard(producer.keys.waiters("r")) == 1
        [second] = await producer.enqueue([make_message(clock, queue="r")])
        rec = await producer.get(second.id)
        assert rec is not None and rec.state is State.QUEUED  # not handed: it is busy
        assert await producer._r.zcard(producer.keys.waiters("r")) == 0  # and dropped
        [lease] = await producer.claim(["r"], 10, 30, "w2")
        assert (lease.message.id, lease.attempt) == (second.id, 1)
        rec = await producer.get(first)
        assert rec is not None and rec.state is State.RUNNING and rec.worker == "w"


@pytest.mark.parametrize("into", _QR)
async def test_a_worker_on_several_queues_woken_by_a_marker_claims_and_unregisters(
    redis_url: str, prefix: str, into: str
) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        assert await idle.claim(_QR, 10, 30, "w") == []

        async def two() -> None:  # two at once: not handed, a marker wakes it
            await registered(producer, queue="r")
            await producer.enqueue([make_message(clock, queue=into) for _ in range(2)])

        await woken_by(idle, two, _QR)
        leases = await idle.claim(_QR, 10, 30, "w")
        assert [x.message.queue for x in leases] == [into, into]
        for q in _QR:  # unregistered on both, in the claim's round trip
            assert await producer._r.zcard(producer.keys.waiters(q)) == 0


async def test_without_hand_offs_across_queues_a_worker_on_several_waits_for_a_marker(
    redis_url: str, prefix: str
) -> None:
    # a Redis Cluster client's setting: no registration, BLPOP on the marker lists
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        idle.hand_off_across_queues = False
        assert await idle.claim(_QR, 10, 30, "w") == []
        ids: list[str] = []

        async def one() -> None:
            await anyio.wait_all_tasks_blocked()
            ids.extend(r.id for r in await producer.enqueue([make_message(clock, queue="r")]))

        await woken_by(idle, one, _QR)
        for q in _QR:
            assert await producer._r.zcard(producer.keys.waiters(q)) == 0
        rec = await producer.get(ids[0])
        assert rec is not None and rec.state is State.QUEUED  # not handed: claimed now
        [lease] = await idle.claim(_QR, 10, 30, "w")
        assert lease.message.id == ids[0]


async def test_a_hand_off_keeps_the_other_queues_next_due_time(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        [later] = await producer.enqueue([make_message(clock, delay=60)])  # due in q
        assert await idle.claim(_QR, 10, 30, "w") == []  # drained; q's next is due at +60
        with anyio.fail_after(5):
            await _wait_handed(idle, producer, clock, "r")
        assert len(await idle.claim(_QR, 10, 30, "w")) == 1
        clock.advance(61)
        with anyio.fail_after(0.5):  # due: the wait returns at once (not after a poll)
            await idle.wait(_QR, 30)
        [lease] = await idle.claim(_QR, 10, 30, "w")
        assert lease.message.id == later.id


@pytest.mark.parametrize("into", _QR)
async def test_a_cancelled_wait_on_several_queues_loses_no_handed_task(
    redis_url: str, prefix: str, into: str
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        async with _backend(redis_url, prefix, clock) as idle:
            assert await idle.claim(_QR, 10, 30, "w") == []
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(idle.wait, _QR, 30)
                    await registered(producer, queue="r")
                    [res] = await producer.enqueue([make_message(clock, queue=into)])
                    tg.cancel_scope.cancel()
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.QUEUED
        [lease] = await producer.claim([into], 10, 30, "w2")
        assert (lease.message.id, lease.attempt) == (res.id, 1)
        for q in _QR:
            assert await producer._r.zcard(producer.keys.waiters(q)) == 0


async def test_closing_a_worker_on_several_queues_unregisters_it_from_each(
    redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as producer:
        async with _backend(redis_url, prefix, clock) as idle:
            assert await idle.claim(_QR, 10, 30, "w") == []
            await idle.wait(_QR, 0.01)  # times out, still registered on both
            [res] = await producer.enqueue([make_message(clock, queue="r")])  # never read
            rec = await producer.get(res.id)
            assert rec is not None and rec.state is State.RUNNING
        rec = await producer.get(res.id)
        assert rec is not None and rec.state is State.QUEUED
        for q in _QR:
            assert await producer._r.zcard(producer.keys.waiters(q)) == 0
        admin = redis_sync.Redis.from_url(redis_url)
        assert not [k for k in prefix_keys(admin, prefix) if b":h:" in k or b":in:" in k]


async def test_a_claim_sent_again_returns_a_task_another_queue_handed(
    redis_url: str, prefix: str
) -> None:
    # The claim that unregisters a worker from q and r finds r's hand-off in the inbox
    # (its reply was lost, say): it returns it, and so does the same call sent again.
    clock = FakeClock()
    async with _pair(redis_url, prefix, clock) as (idle, producer):
        assert await idle.claim(_QR, 10, 30, "w") == []
        await idle.wait(_QR, 0.01)  # times out, still registered on both
        [res] = await producer.enqueue([make_message(clock, queue="r")])
        clock.advance(5)  # the claim dates the lease anew, in r's lease set
        assert idle._waiting is not None
        args: list[object] = [10, "w", 4, repr(30.0)]
        call = idle._call("claim", "q", args, idle._request(), idle._waiter_keys("q", args))
        [(rows, _, _)] = await idle._conn.run("claim", [call])
        [(again, _, _)] = await idle._conn.run("claim", [call], again=True)
        assert rows == again and len(rows) == 1
        [lease] = idle._leases(rows, clock.now(), 30, "w")
        assert (lease.message.id, lease.message.queue, lease.token) == (res.id, "r", 1)
        assert (
            await producer._r.zscore(producer.keys.base("r") + ":run", res.id) == clock.now() + 30
        )


@pytest.mark.parametrize("across", [True, False])
async def test_a_claim_over_several_queues_is_one_round_trip(
    redis_url: str, prefix: str, across: bool
) -> None:
    # (False: a Redis Cluster client's setting, one round trip per queue until the
    # limit is reached)
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        b.claim_across_queues = across
        a_ids = [r.id for r in await b.enqueue([make_message(clock, queue="a") for _ in range(2)])]
        b_ids = [r.id for r in await b.enqueue([make_message(clock, queue="b") for _ in range(2)])]
        trips: list[int] = []
        run = b._conn.run

        async def counted(what: str, calls: Any, **kw: Any) -> Any:
            trips.append(len(calls))
            return await run(what, calls, **kw)

        b._conn.run = counted  # type: ignore[method-assign]
        got = await b.claim(["empty", "a", "b"], 3, 30, "w")
        assert [x.message.id for x in got] == [*a_ids, b_ids[0]]
        assert trips == ([3] if across else [1, 1, 1])
        trips.clear()
        assert [x.message.id for x in await b.claim(["a", "b"], 5, 30, "w")] == b_ids[1:]
        assert trips == ([2] if across else [1, 1])
        assert b._drained is not None and b._drained.limit == 4  # both ran dry


async def test_a_claim_filled_by_the_first_queues_leaves_the_next_as_it_is(
    redis_url: str, prefix: str
) -> None:
    # as the reference (memory) does: its claim stops at the limit, so a due task of
    # a queue after that is not promoted by it
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        [first] = await b.enqueue([make_message(clock, queue="a")])
        [later] = await b.enqueue([make_message(clock, queue="b", delay=5)])
        clock.advance(10)  # due
        [lease] = await b.claim(["a", "b"], 1, 30, "w")
        assert lease.message.id == first.id
        rec = await b.get(later.id)
        assert rec is not None and rec.state is State.SCHEDULED
        [lease] = await b.claim(["a", "b"], 1, 30, "w")
        assert lease.message.id == later.id


async def test_wait_done_across_clients(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as a, _backend(redis_url, prefix, clock) as w:
        [res] = await a.enqueue([make_message(clock)])
        [lease] = await w.claim(["q"], 1, 30, "w")
        got = []

        async def waiter() -> None:
            got.append(await a.wait_done(res.id, 10))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                tg.start_soon(waiter)
                await w.settle(
                    [Outcome(res.id, lease.token, OutcomeKind.SUCCEEDED, clock.now(), result=b"7")]
                )
        assert [r.result for r in got if r is not None] == [b"7", b"7"]
        assert await a.wait_done("unknown", 1) is None


# -- enqueue and the id index ---------------------------------------------------------------
# One round trip (enqueue.lua indexes the ids itself, single-node Redis) or two (index.lua
# first, as on a cluster): the same answers either way.
@pytest.mark.parametrize("one_round_trip", [True, False], ids=["one-trip", "index-first"])
async def test_an_id_of_another_queues_task_creates_nothing(
    redis_url: str, prefix: str, one_round_trip: bool
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        b.one_round_trip_enqueue = one_round_trip
        msg = make_message(clock)
        [first] = await b.enqueue([msg])
        elsewhere = make_message(clock, queue="q2", task_id=msg.id)
        twice = make_message(clock, queue="q3", task_id="fresh-id")
        res = await b.enqueue(
            [elsewhere, twice, make_message(clock, queue="q2", task_id="fresh-id")]
        )
        assert first.created and (res[0].id, res[0].created) == (msg.id, False)
        assert res[0].state is State.QUEUED
        assert [r.created for r in res[1:]] == [True, False]
        assert res[2].id == "fresh-id" and res[2].state is State.QUEUED
        rec = await b.get(msg.id)
        assert rec is not None and rec.queue == "q"
        assert await b.claim(["q2"], 10, 30, "w") == []
        [lease] = await b.claim(["q3"], 10, 30, "w")
        assert lease.message.id == "fresh-id"


@pytest.mark.parametrize("one_round_trip", [True, False], ids=["one-trip", "index-first"])
async def test_an_id_deduplicated_by_unique_key_is_not_indexed(
    redis_url: str, prefix: str, one_round_trip: bool
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        b.one_round_trip_enqueue = one_round_trip
        a, dup = make_message(clock, unique_key="k"), make_message(clock, unique_key="k")
        [ra] = await b.enqueue([a])
        [rd] = await b.enqueue([dup])
        assert ra.created and not rd.created and rd.id == a.id
        assert await b.get(dup.id) is None
        admin = redis_sync.Redis.from_url(redis_url)
        assert admin.hexists(b.keys.index, a.id) and not admin.hexists(b.keys.index, dup.id)
        # the same id again, in the same queue: the existing task, still indexed
        [ra2] = await b.enqueue([a])
        assert (ra2.id, ra2.created) == (a.id, False)
        assert admin.hget(b.keys.index, a.id) == b"q"


# -- the id index stays a hash table ---------------------------------------------------------
# Under hash-max-listpack-entries (512) fields Redis keeps a hash as a listpack, where every
# HSETNX / HGET / HDEL scans all of it: with a few hundred ids, a fifth of a single
# enqueue's server instructions (callgrind, docs/benchmarks.md). The backend pins the index
# as a hash table when it opens; the pin is no task id.
async def _forget(b: RedisBackend, task_id: str) -> None:
    """Cancel a queued task of "q" and purge it: its record and index entry are gone."""
    assert await b.cancel([task_id]) == [True]
    assert await b.purge("q", [State.CANCELLED]) == 1


async def test_the_id_index_is_a_hash_table_from_the_first_task(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        m = make_message(clock)
        [r] = await b.enqueue([m])
        assert r.created
        assert admin.object("encoding", b.keys.index) == b"hashtable"
        assert await b.get(INDEX_PIN) is None
        # the task gone and forgotten, the pin keeps the index (a new one would be a listpack)
        await _forget(b, m.id)
        assert admin.hkeys(b.keys.index) == [INDEX_PIN.encode()]
        [r2] = await b.enqueue([make_message(clock)])
        assert r2.created
        assert admin.object("encoding", b.keys.index) == b"hashtable"


async def test_an_index_that_lost_its_pin_keeps_its_ids_and_is_pinned_once_empty(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        a, c = make_message(clock), make_message(clock)
        await b.enqueue([a, c])
        admin.hdel(b.keys.index, INDEX_PIN)  # e.g. deleted by hand
        await _forget(b, c.id)
        assert admin.hgetall(b.keys.index) == {a.id.encode(): b"q"}
        await _forget(b, a.id)
        assert admin.hkeys(b.keys.index) == [INDEX_PIN.encode()]
        assert admin.object("encoding", b.keys.index) == b"hashtable"


# Below zset-max-listpack-entries (128) members a sorted set is a listpack, where each
# insert walks the list parsing every score; a claim inserts a batch of leases into :run
# (callgrind: 40 % of a claim and settle of 100 tasks). claim.lua pins it as a skiplist
# with a member at +inf, which no reap finds expired.
async def test_the_running_set_is_a_skiplist_and_its_pin_never_expires(
    redis_url: str, prefix: str, admin: redis_sync.Redis
) -> None:
    clock = FakeClock()
    async with _backend(redis_url, prefix, clock) as b:
        msgs = [make_message(clock) for _ in range(3)]
        await b.enqueue(msgs)
        leases = await b.claim(["q"], 10, 30, "w")
        assert len(leases) == 3
        run = b.keys.base("q") + ":run"
        assert admin.object("encoding", run) == b"skiplist"
        clock.advance(31)
        assert sorted(await b.reap()) == sorted(m.id for m in msgs)
        [pin] = admin.zrange(run, 0, -1, withscores=True)
        assert pin[0].startswith(b"\x00") and pin[1] == float("inf")
        assert await b.reap() == []


# -- bulk enqueue in several script calls ----------------------------------------------------
# A batch bigger than one script call's chunk is sent call by call on one connection
# (RedisBackend.enqueue); across the chunk boundaries it answers as one call would.
async def test_a_batch_of_several_script_calls_answers_as_one(redis_url: str, prefix: str) -> None:
    clock = FakeClock()
    n = 2 * _ENQUEUE_CHUNK + 7
    msgs = [make_message(clock, queue=("q", "q2")[i % 2]) for i in range(n)]
    # the same unique key in the first and the last chunk; the same id twice
    msgs[3] = make_message(clock, unique_key="k")
    msgs[-1] = make_message(clock, unique_key="k")
    msgs[-2] = make_message(clock, task_id=msgs[5].id, queue=msgs[5].queue)
    async with _backend(redis_url, prefix, clock) as b:
        results = await b.enqueue(msgs)
        assert [(r.id, r.created) for r in results[:-2]] == [(m.id, True) for m in msgs[:-2]]
        assert [(r.id, r.created) for r in results[-2:]] == [
            (msgs[5].id, False),
            (msgs[3].id, False),
        ]
        for q in ("q", "q2"):  # arrival order kept across the calls
            leases = await b.claim([q], n, 30, "w")
            assert [x.message.id for x in leases] == [m.id for m in msgs[:-2] if m.queue == q]


async def test_a_batch_of_several_script_calls_survives_script_flush(
    private_redis_url: str, prefix: str
) -> None:
    clock = FakeClock()
    msgs = [make_message(clock) for _ in range(2 * _ENQUEUE_CHUNK + 1)]
    async with _backend(private_redis_url, prefix, clock) as b:
        await b.enqueue(msgs[:1])
        flush_scripts(private_redis_url)  # every call of the batch is refused, then sent again
        results = await b.enqueue(msgs[1:])
        assert all(r.created for r in results)
        leases = await b.claim(["q"], len(msgs), 30, "w")
        assert [x.message.id for x in leases] == [m.id for m in msgs]
