"""The Redis backend: broker, results and admin on Redis (coordination in
:mod:`taskcore_redis._coordination`).

Every state change is one Lua script per queue (several queues: one pipeline of
scripts, one round trip). Time always comes from the client's clock as an argument.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import math
import os
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import anyio
import attrs
from redis.exceptions import ResponseError

from taskcore.backend import (
    EnqueueResult,
    ExtendStatus,
    FollowUp,
    Lease,
    Message,
    Outcome,
    OutcomeKind,
    QueueSpec,
    QueueStats,
    TaskFilter,
    TaskRecord,
)
from taskcore.clock import Clock, SystemClock
from taskcore.errors import BackendError
from taskcore.scheduling import DEFAULT_POLICY, SchedulingPolicy
from taskcore.states import TERMINAL, State

from ._codec import (
    decode_message,
    decode_outbox,
    decode_record,
    encode_error,
    encode_message,
    encode_outbox,
    opt,
    pack,
    raw_str,
)
from ._config import DEFAULT_URL, RedisConfig
from ._conn import Connection
from ._coordination import Coordination
from ._journal import Journal
from ._keys import INDEX_PIN, INDEX_PIN_VALUE, Keys
from ._scripts import Call

__all__ = ["RedisBackend"]

# Messages per script call. A bigger batch is several calls on one connection, each
# sent as soon as it is built, so the client packs one while the server runs another.
_ENQUEUE_CHUNK = 250
# A stored message at least this long goes to enqueue.lua as an argument of its own,
# not inside the packed items: Redis 7 hashes every byte of each string that enters a
# script, and one inside the items would enter twice (the argument, then its unpacked
# copy): about 1 ms per MB each time (docs/redis.md, "Large messages").
_BODY_ARG_MIN = 16 * 1024
_FIRST_BODY_ARG = 5  # ARGV: now, key base, items, queue name (or ''), bodies
_REAP_CHUNK = 2000
_PURGE_CHUNK = 2000
_WHERE_MAX = 100_000
_POLL = 1.0  # longest a waiter blocks before it looks for due scheduled work
_REGISTERED = 0.5  # a waiter's registration outlives its block by this much (clock skew)
_STATE = {s.value.encode(): s for s in State}  # a script's state -> State, fast
_LATER = frozenset({OutcomeKind.RETRY, OutcomeKind.DEFER})  # outcomes that schedule work


# Request ids: a random prefix per process (drawn again in a forked child), then a
# counter. (A uuid4() per call cost a getrandom() system call each time.)
_REQUEST_PREFIX = [uuid.uuid4().hex[:20]]
_REQUESTS = itertools.count()


def _new_request_prefix() -> None:
    _REQUEST_PREFIX[0] = uuid.uuid4().hex[:20]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_request_prefix)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


@attrs.frozen
class _Claimer:
    """The arguments of the last claim that emptied its queues, less what it got: a
    wait() on one of them claims in the round trip that wakes it (see wait())."""

    queues: tuple[str, ...]
    due: float | None  # the first scheduled task's due time, if any
    limit: int  # slots the caller had left after that claim
    lease_seconds: float
    worker: str
    max_priority: int


@attrs.frozen
class _Taken:
    """Leases a wait() took for the next claim() with the same arguments."""

    claimer: _Claimer
    leases: list[Lease]
    dry: bool  # the claim that took them emptied the queue again
    due: float | None


def _keep_until(o: Outcome) -> float:
    """Until when an incomplete join that ``o`` counts in is kept: as long as ``o``'s
    result (see join.lua)."""
    return math.inf if o.result_ttl is None else o.at + o.result_ttl


class RedisBackend(Coordination, Journal):
    """Tasks in Redis; ``redis://`` and ``rediss://`` (TLS) in a URL.

    The driver is redis-py's asyncio client (with hiredis), so this backend runs
    under asyncio only, not trio. Use it as an async context manager: entering
    connects and loads the Lua scripts, leaving closes the pool.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://...``; query
            parameters ``prefix``, ``max_connections`` (pool size, default 64),
            ``socket_timeout``, ``socket_connect_timeout``, ``retries`` (attempts for
            idempotent calls after the first, default 3), ``pool_timeout``
            (seconds to wait for a free pooled connection, default 20) and
            redis-py's TLS options (``ssl_cert_reqs``, ``ssl_ca_certs``...).
        clock: time source; every time the backend stores comes from it.
        prefix: key prefix (default ``"taskcore"``); overrides ``?prefix=``.
        **options: redis-py connection options; they override the URL's.

    Raises:
        ConfigurationError: the URL or an option is invalid.
    """

    one_round_trip_enqueue = True
    """``enqueue`` indexes the ids in the queue's own script (one round trip) instead
    of running index.lua first (two). That script then touches two cluster slots
    (``{P}:idx`` and ``{P:Q}``): fine on the single-node client this class uses; a
    Redis Cluster client must set this to False."""
    wait_claims = True
    """After a claim that ran dry, :meth:`wait` claims in the round trip that blocks
    (see ``_wait``), so a worker waits then instead of claiming again."""
    claim_across_queues = True
    """A claim over several queues is one round trip: each queue's script counts what
    the scripts before it leased (their kept replies, other cluster slots) against its
    limit. A Redis Cluster client must set this to False (one round trip per queue, in
    order, until the limit is reached)."""
    hand_off_across_queues = True
    """A worker on several queues registers for hand-offs on each of them, with one
    hand-off list and inbox in its first queue's keys, which the other queues' scripts
    push to (another cluster slot): fine on the single-node client this class uses; a
    Redis Cluster client must set this to False (such a worker then waits for markers
    and claims, one round trip more)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        clock: Clock | None = None,
        prefix: str | None = None,
        **options: Any,
    ) -> None:
        if prefix is not None:
            options["prefix"] = prefix
        config = RedisConfig.parse(url, **options)
        self.clock: Clock = clock or SystemClock()
        self.keys = Keys(config.prefix)
        self.prefix = config.prefix
        self._conn = Connection(config)
        self._r = self._conn.redis
        self._scripts = self._conn.scripts
        # Which queue holds a task this backend leased (saves an index lookup on
        # settle/extend); ids never move between queues, so it is never wrong.
        self._where: dict[str, str] = {}
        self._local_wake: anyio.Event | None = None
        # Queues this backend has seen in the registry (saves a SADD per enqueue).
        self._registered: set[str] = set()
        # Set by a claim that emptied the ready sets of all its queues: those queues,
        # the due time of their next scheduled task and the claim's arguments. The
        # next wait() on the same queues blocks at once instead of looking first, and
        # claims in the round trip that wakes it (see wait()).
        self._drained: _Claimer | None = None
        self._taken: _Taken | None = None  # what that claim took, for the next claim()
        self._inbox_id = uuid.uuid4().hex  # names this backend's waiter lists (see wait())
        self._inboxes: set[str] = set()  # its inboxes and hand-off lists, for aclose()
        # (queues, member) of its registration as an idle waiter, until a claim with its
        # inbox unregisters it (or a hand-off on one queue does, which leaves
        # ``_read_inbox`` set: the inbox holds what the blocking call returned, deleted
        # at the next one; a worker on several queues stays registered on the others)
        self._waiting: tuple[tuple[str, ...], str, _Claimer] | None = None
        self._read_inbox: str | None = None
        self._handed: tuple[str, int] | None = None  # the last task handed to it
        subscribe = getattr(self.clock, "subscribe", None)
        if subscribe is not None:  # a fake clock: wake local waiters when it moves
            subscribe(self._on_clock)

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None, **options: Any) -> RedisBackend:
        return cls(url, clock=clock, **options)

    @property
    def config(self) -> RedisConfig:
        return self._conn.config

    async def __aenter__(self) -> RedisBackend:
        await self._conn.open()
        await self._conn.call(
            "pin the id index", lambda: self._r.hsetnx(self.keys.index, INDEX_PIN, INDEX_PIN_VALUE)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._on_clock()
        taken, self._taken = self._taken, None
        with contextlib.suppress(BackendError):
            if taken is not None:  # a wait() claimed, nobody asked for the leases
                await self._release(taken.leases)
            if self._waiting is not None:  # unregister; a task handed meanwhile goes back
                await self._release(await self._unregister())
            leftovers = list(self._inboxes)
            if leftovers:
                await self._conn.call("close", lambda: self._unlink_each(leftovers))
        await self._conn.close()

    async def _unlink_each(self, keys: Sequence[str]) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            for key in keys:  # one key per command: they may be in different slots
                pipe.unlink(key)
            await pipe.execute()

    # -- internals ------------------------------------------------------------
    @staticmethod
    def _request() -> str:
        """A new request id: names the reply a state-changing call keeps."""
        return f"{_REQUEST_PREFIX[0]}-{next(_REQUESTS):x}"

    def _on_clock(self) -> None:
        if self._local_wake is not None:
            self._local_wake.set()
            self._local_wake = None

    def _call(
        self,
        name: str,
        queue: str,
        args: Sequence[Any],
        request: str | None = None,
        extra: Sequence[str] = (),
    ) -> Call:
        """A per-queue script call: KEYS[1] is the queue's meta key (cluster routing).

        ``request`` names the call so it can be sent again after a lost reply: the
        script keeps its reply under that name and does not run twice. ``extra``:
        further keys of the queue (after the reply key; needs ``request``).
        """
        now = self.clock.now()
        keys = [self.keys.meta(queue)]
        if request is not None:
            keys.append(self.keys.reply(queue, request))
        keys += extra
        return (self._scripts[name], keys, [repr(now), self.keys.base(queue), *args])

    async def _locate(self, ids: Iterable[str]) -> dict[str, str]:
        """Map task ids to their queues (unknown ids are left out)."""
        found: dict[str, str] = {}
        missing: list[str] = []
        for task_id in ids:
            q = self._where.get(task_id)
            if q is None:
                missing.append(task_id)
            else:
                found[task_id] = q
        if missing:
            missing = list(dict.fromkeys(missing))
            qs: list[Any] = await self._conn.call(
                "task lookup",
                lambda: self._r.hmget(self.keys.index, missing),
                task_id=missing[0] if len(missing) == 1 else None,
            )
            for task_id, name in zip(missing, qs, strict=True):
                if name is not None:
                    found[task_id] = name.decode()
        return found

    def _remember(self, task_id: str, queue: str) -> None:
        if len(self._where) >= _WHERE_MAX:
            self._where.clear()
        self._where[task_id] = queue

    async def _by_queue(
        self,
        what: str,
        script: str,
        ids: Sequence[str],
        item_of: Any,
        *,
        replayable: bool,
        lead: Sequence[Any] = (),
    ) -> list[Any]:
        """Run a per-task batch script grouped by queue; replies in the order of
        ``ids`` (None for unknown tasks). ``replayable``: the calls change state, so
        they carry a request id that makes sending them again safe."""
        request = self._request() if replayable else None
        calls, groups = await self._grouped(script, ids, item_of, request, lead)
        replies = await self._conn.run(what, calls, task_id=ids[0] if len(ids) == 1 else None)
        return _spread(len(ids), groups, replies)

    async def _grouped(
        self,
        script: str,
        ids: Sequence[str],
        item_of: Any,
        request: str | None,
        lead: Sequence[Any] = (),
    ) -> tuple[list[Call], list[list[int]]]:
        """The calls of :meth:`_by_queue`, one per queue, and the positions in ``ids``
        that each call's reply answers."""
        where = await self._locate(ids)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, task_id in enumerate(ids):
            q = where.get(task_id)
            if q is not None:
                groups[q].append(i)
        calls = []
        for q, positions in groups.items():
            items = pack([item_of(i) for i in positions])
            calls.append(self._call(script, q, [*lead, items], request))
        return calls, list(groups.values())

    async def _fetch(self, located: Sequence[tuple[str, str]]) -> list[TaskRecord | None]:
        """Records of ``(queue, task_id)`` pairs, in one round trip."""

        async def go() -> list[Any]:
            async with self._r.pipeline(transaction=False) as pipe:
                for q, task_id in located:
                    pipe.hgetall(self.keys.task(q, task_id))
                return list(await pipe.execute())

        if not located:
            return []
        rows = await self._conn.call("get", go)
        return [decode_record(h) if h else None for h in rows]

    async def _queue_names(self) -> list[str]:
        names: set[Any] = await self._conn.call(
            "queue list", lambda: self._r.smembers(self.keys.queues)
        )
        return sorted(n.decode() for n in names)

    # -- broker ---------------------------------------------------------------
    async def declare(self, specs: Sequence[QueueSpec]) -> None:
        async def go() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                for spec in specs:
                    pipe.hset(
                        self.keys.meta(spec.name), "policy", json.dumps(spec.policy.to_dict())
                    )
                    pipe.sadd(self.keys.queues, spec.name)
                await pipe.execute()

        if specs:
            await self._conn.call("declare", go)

    async def enqueue(self, messages: Sequence[Message]) -> list[EnqueueResult]:
        if not messages:
            return []
        now = self.clock.now()
        if any(m.eligible_at > now for m in messages):
            self._drained = None  # scheduled work the drained hint does not know about
        groups: dict[str, list[int]] = defaultdict(list)
        for i, m in enumerate(messages):
            groups[m.queue].append(i)
        # One round trip: each queue's script indexes its ids. Not when one id goes to
        # two queues in this batch: the first in the batch must win, as with the index
        # written first (the queues' scripts run queue by queue).
        one_trip = self.one_round_trip_enqueue and (
            len(groups) == 1 or len({m.id for m in messages}) == len(messages)
        )
        known: dict[int, str] = {}
        if not one_trip:
            index_args = [pack([(m.id, m.queue) for m in messages])]
            indexed = await self._conn.run(
                "enqueue", [(self._scripts["index"], [self.keys.index], index_args)]
            )
            flat = indexed[0]
            for j in range(0, len(flat), 2):
                known[int(flat[j]) - 1] = flat[j + 1].decode()
        request = self._request()
        chunks = [
            positions[c : c + _ENQUEUE_CHUNK]
            for positions in groups.values()
            for c in range(0, len(positions), _ENQUEUE_CHUNK)
        ]

        def build(n: int, chunk: list[int]) -> Call:
            q = messages[chunk[0]].queue
            items = []
            bodies: list[bytes] = []  # the long ones, as arguments of their own
            for i in chunk:
                m = messages[i]
                foreign = known.get(i, m.queue) != m.queue  # id names another task
                # Times as strings: repr is cheaper here than %.17g in the script.
                eligible = repr(float(m.eligible_at))
                # None: the same as eligible_at (most tasks), fewer bytes to send.
                enqueued = None
                if m.enqueued_at != m.eligible_at:
                    enqueued = repr(float(m.enqueued_at))
                body = b"" if foreign else encode_message(m)
                stored: object = raw_str(body)
                if len(body) >= _BODY_ARG_MIN:
                    stored = _FIRST_BODY_ARG + len(bodies)  # its argument's position
                    bodies.append(body)
                items.append(
                    (
                        m.id,
                        stored,
                        m.priority,
                        eligible,
                        enqueued,
                        None if m.deadline is None else float(m.deadline),
                        m.unique_key,
                        m.fairness_key,
                        m.task,
                        float(m.eligible_at),
                    )
                )
            request_id = f"{request}.{n}"
            args = [pack(items), q if one_trip else "", *bodies]
            if one_trip:  # the script indexes the ids itself
                return self._call("enqueue", q, args, request_id, [self.keys.index])
            return self._call("enqueue", q, args, request_id)

        out: list[EnqueueResult | None] = [None] * len(messages)
        orphans: list[str] = []
        elsewhere: list[tuple[int, str]] = []

        def take(n: int, reply: list[Any]) -> None:
            for i, item in zip(chunks[n], reply, strict=True):
                if isinstance(item, bytes):  # created
                    out[i] = EnqueueResult(messages[i].id, True, _STATE[item])
                    continue
                tid, state = item
                task_id = tid.decode()
                if (
                    task_id != messages[i].id
                    and i not in known
                    and not one_trip  # the script unindexed it
                ):
                    orphans.append(messages[i].id)  # deduped by unique key: unindex
                if not state:  # the task this id names lives in another queue
                    elsewhere.append((i, task_id))
                    continue
                out[i] = EnqueueResult(task_id, False, _STATE[state])

        if len(chunks) == 1:
            [reply] = await self._conn.run("enqueue", [build(0, chunks[0])])
            take(0, reply)
        else:  # chunk k+1 is built, and reply k read, while the server stores chunk k+1
            await self._conn.run_streamed(
                "enqueue", (build(n, chunk) for n, chunk in enumerate(chunks)), take
            )
        if elsewhere:
            where = await self._locate(task_id for _, task_id in elsewhere)
            records = await self._fetch(
                [(where.get(task_id, ""), task_id) for _, task_id in elsewhere]
            )
            for (i, task_id), rec in zip(elsewhere, records, strict=True):
                state = State.QUEUED if rec is None else rec.state
                out[i] = EnqueueResult(task_id, False, state)
        fresh = {
            messages[i].queue
            for i, r in enumerate(out)
            if r is not None and r.created and messages[i].queue not in self._registered
        }
        if orphans or fresh:
            await self._conn.call("enqueue", lambda: self._after_enqueue(orphans, fresh))
            self._registered |= fresh
        return [r for r in out if r is not None]

    async def _after_enqueue(self, orphans: list[str], queues: set[str]) -> None:
        async with self._r.pipeline(transaction=False) as pipe:
            if orphans:
                pipe.hdel(self.keys.index, *orphans)
            if queues:
                pipe.sadd(self.keys.queues, *queues)
            await pipe.execute()

    async def claim(
        self,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        worker: str,
        max_priority: int = 4,
        settle: Sequence[Outcome] = (),
    ) -> list[Lease]:
        leases: list[Lease] = []
        self._drained = None
        taken, self._taken = self._taken, None
        if settle and (taken is not None or limit <= 0 or not queues):
            await self.settle(settle)  # no claim round trip to ride on
            settle = ()
        if taken is not None:
            c = taken.claimer
            if limit > 0 and (c.queues, c.lease_seconds, c.worker, c.max_priority) == (
                tuple(queues),
                lease_seconds,
                worker,
                max_priority,
            ):
                # the wait() that just returned claimed for this call
                leases, extra = taken.leases[:limit], taken.leases[limit:]
                if extra:  # fewer slots than when it claimed: no prefetch
                    await self._release(extra)
                elif taken.dry:  # (not attrs.evolve: this is on the wake-up path)
                    self._drained = _Claimer(
                        c.queues,
                        taken.due,
                        limit - len(leases),
                        c.lease_seconds,
                        c.worker,
                        c.max_priority,
                    )
                return leases
            await self._release(taken.leases)
        if limit <= 0:
            return leases
        if len(queues) > 1 and self.claim_across_queues:
            return await self._claim_across(
                queues, limit, lease_seconds, worker, max_priority, settle
            )
        dues: list[float] = []
        for q in queues:
            args: list[Any] = [limit - len(leases), worker, max_priority, repr(lease_seconds)]
            call = self._call("claim", q, args, self._request(), self._waiter_keys(q, args))
            # registered on other queues too: unregistered there in the same round trip
            claims = [call] if len(call[1]) <= 2 else [call, *self._unregister_calls([q])]
            replies = await self._run_claims(claims, settle)
            settle = ()
            rows, due, now = replies[0]
            took = self._leases(rows, float(now), lease_seconds, worker)
            if len(call[1]) > 2:  # it unregistered us and emptied our inbox
                self._waiting = self._read_inbox = None
                for rows_, _, now_ in replies[1:]:  # (what those claims found handed)
                    took += self._leases(rows_, float(now_), lease_seconds, worker)
                took = self._fresh(took)
            if due:
                dues.append(float(due))
            leases += took
            if len(leases) >= limit:
                break
        else:
            if max_priority >= 4:  # every queue ran dry (the script says so then)
                self._drained = _Claimer(
                    tuple(queues),
                    min(dues, default=None),
                    limit - len(leases),
                    lease_seconds,
                    worker,
                    max_priority,
                )
        return leases

    async def _claim_across(
        self,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        worker: str,
        max_priority: int,
        settle: Sequence[Outcome],
    ) -> list[Lease]:
        """A claim over several queues in one round trip (see ``claim_across_queues``):
        the scripts run in the queues' order, each leasing up to what the ones before
        it left of ``limit``; each unregisters this backend there if it waits."""
        calls: list[Call] = []
        for q in queues:
            args: list[Any] = [limit, worker, max_priority, repr(lease_seconds)]
            extra = self._waiter_keys(q, args)
            if not extra:
                args.append("")  # (no registration: ARGV[7])
            args += [c[1][1] for c in calls]  # the reply keys of the claims before it
            calls.append(self._call("claim", q, args, self._request(), extra))
        registered = any(len(c[1]) > 2 for c in calls)
        others = self._unregister_calls(queues) if registered else []
        replies = await self._run_claims([*calls, *others], settle)
        leases: list[Lease] = []
        dues: list[float] = []
        for rows, due, now in replies:
            leases += self._leases(rows, float(now), lease_seconds, worker)
            if due:
                dues.append(float(due))
        if registered:  # it unregistered us and emptied our inbox
            self._waiting = self._read_inbox = None
            leases = self._fresh(leases)
        if len(leases) < limit and max_priority >= 4:  # every queue ran dry
            self._drained = _Claimer(
                tuple(queues), min(dues, default=None), limit - len(leases),
                lease_seconds, worker, max_priority,
            )  # fmt: skip
        return leases

    async def _run_claims(self, claims: list[Call], settle: Sequence[Outcome]) -> list[Any]:
        """Run claim script calls in one round trip, the scripts that settle ``settle``
        first (their follow-ups delivered after); the claims' replies."""
        if not settle:
            return await self._conn.run("claim", claims)
        calls, groups = await self._settle_calls(settle)
        replies = await self._conn.run("claim", [*calls, *claims])
        accepted = self._settled(settle, groups, replies[: len(calls)])
        await self._deliver_settled(settle, accepted, calls, groups)
        return replies[len(calls) :]

    def _waiter_keys(self, queue: str, args: list[Any]) -> list[str]:
        """For a claim in ``queue``: if this backend is registered there as an idle
        waiter, its inbox and hand-off list (its first queue's, see ``_pop_handed``;
        ``args`` gets the registration), so the claim unregisters it and takes what
        was handed to it (see claim.lua)."""
        if self._waiting is None or queue not in self._waiting[0]:
            return []
        args.append(self._waiting[1])
        home = self._waiting[0][0]
        return [self.keys.inbox(home, self._inbox_id), self.keys.hand(home, self._inbox_id)]

    def _unregister_calls(self, skip: Sequence[str] = ()) -> list[Call]:
        """Claims of nothing that unregister this backend from its registered queues
        (but those in ``skip``); the first to run takes what was handed to it."""
        assert self._waiting is not None
        queues, _, c = self._waiting
        calls = []
        for q in queues:
            if q not in skip:
                args: list[Any] = [0, c.worker, 4, repr(c.lease_seconds)]
                calls.append(
                    self._call("claim", q, args, self._request(), self._waiter_keys(q, args))
                )
        return calls

    async def _unregister(self) -> list[Lease]:
        """Unregister as an idle waiter; the leases of tasks handed to us meanwhile."""
        assert self._waiting is not None
        c = self._waiting[2]
        replies = await self._conn.run("wait", self._unregister_calls())
        self._waiting = None
        leases: list[Lease] = []
        for rows, _, now in replies:
            leases += self._leases(rows, float(now), c.lease_seconds, c.worker)
        return self._fresh(leases)

    def _fresh(self, leases: list[Lease]) -> list[Lease]:
        """``leases`` without the hand-off this backend already returned (a claim with
        its inbox may find it there again if the round trip that deletes it was lost)."""
        if self._handed is None:
            return leases
        return [x for x in leases if (x.message.id, x.token) != self._handed]

    def _leases(
        self, rows: list[Any], now: float, lease_seconds: float, worker: str
    ) -> list[Lease]:
        expires = now + lease_seconds
        out = []
        for blob, token, attempt, ready in rows:
            msg = decode_message(blob)
            # (its own queue: a claim returns what another queue handed, see claim.lua)
            self._remember(msg.id, msg.queue)
            out.append(Lease(msg, int(token), int(attempt), worker, expires, now, float(ready)))
        return out

    async def _release(self, leases: Sequence[Lease]) -> None:
        """Hand leases back to their queues (attempt not spent)."""
        if leases:
            now = self.clock.now()
            await self.settle(
                [Outcome(x.message.id, x.token, OutcomeKind.RELEASED, now) for x in leases]
            )

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        calls, groups = await self._settle_calls(outcomes)
        task_id = outcomes[0].task_id if len(outcomes) == 1 else None
        replies = await self._conn.run("settle", calls, task_id=task_id)
        accepted = self._settled(outcomes, groups, replies)
        await self._deliver_settled(outcomes, accepted, calls, groups)
        return accepted

    async def _deliver_settled(
        self,
        outcomes: Sequence[Outcome],
        accepted: list[bool],
        calls: Sequence[Call],
        groups: Sequence[Sequence[int]],
    ) -> None:
        """Deliver the follow-ups that the settle calls just put in outboxes, in the
        order of the outcomes (the calls go queue by queue)."""
        queue_of: dict[int, str] = {}
        for call, positions in zip(calls, groups, strict=True):
            queue = self.keys.queue_of(call[2][1])
            queue_of.update((i, queue) for i in positions if outcomes[i].then)
        entries = [
            (queue_of[i], o.task_id, _keep_until(o), o.then)
            for i, o in enumerate(outcomes)
            if i in queue_of and accepted[i] and o.kind is OutcomeKind.SUCCEEDED
        ]
        if entries:
            await self._deliver(entries)

    async def _deliver(self, entries: Sequence[tuple[str, str, float, Sequence[FollowUp]]]) -> None:
        """Deliver outbox entries ``(parent's queue, parent id, keep until, follow-ups)``:
        note the joins (join.lua, in the follow-up's queue; an incomplete join is kept
        until the latest "keep until" of its parents, see join.lua), enqueue what is
        ready (an id that exists already is not stored again), then delete the entries.
        Each step is idempotent, so an entry delivered twice (a client and the reaper,
        or a retry after an error) has the effect of one delivery."""
        joins: dict[str, list[tuple[FollowUp, str, float]]] = defaultdict(list)
        # the follow-ups in outcome order, a join at each parent's place (its queue and
        # position in that queue's join call): what becomes ready is enqueued in this
        # order (arrival order, the tie-break), a join where its parent completed it
        order: list[Message | tuple[str, int]] = []
        for _, parent, keep, then in entries:
            for f in then:
                if f.after <= 1:
                    order.append(f.message)
                else:
                    order.append((f.message.queue, len(joins[f.message.queue])))
                    joins[f.message.queue].append((f, parent, keep))
        complete: set[tuple[str, int]] = set()
        if joins:
            request = self._request()
            calls = [
                self._call(
                    "join",
                    q,
                    [pack([(f.message.id, parent, f.after, keep) for f, parent, keep in items])],
                    f"{request}.{n}",
                )
                for n, (q, items) in enumerate(joins.items())
            ]
            replies = await self._conn.run("join", calls)
            for q, reply in zip(joins, replies, strict=True):
                complete.update((q, j) for j, done in enumerate(reply) if done)
        ready = [
            item if isinstance(item, Message) else joins[item[0]][item[1]][0].message
            for item in order
            if isinstance(item, Message) or item in complete
        ]
        if ready:  # a join counted twice is enqueued once, at its first place
            await self.enqueue(list({m.id: m for m in ready}.values()))

        async def ack() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                if joins:  # reap visits the known queues: it must find these joins
                    pipe.sadd(self.keys.queues, *joins)
                for queue, parent, _, _ in entries:
                    pipe.hdel(self.keys.outbox(queue), parent)
                await pipe.execute()

        await self._conn.call("deliver", ack)

    async def _settle_calls(
        self, outcomes: Sequence[Outcome]
    ) -> tuple[list[Call], list[list[int]]]:
        """The settle script calls (replayable: they carry a request id)."""

        def item_of(i: int) -> tuple[Any, ...]:
            o = outcomes[i]
            item = (
                o.task_id,
                o.token,
                o.kind.value,
                o.late,
                None if o.error is None else raw_str(encode_error(o.error)),
                None if o.result is None else raw_str(o.result),
                None if o.retry_at is None else float(o.retry_at),
                None if o.result_ttl is None else float(o.result_ttl),
            )
            if o.then:  # a workflow step: its follow-ups go to the outbox
                return (*item, raw_str(encode_outbox(_keep_until(o), o.then)))
            return item

        if any(o.kind in _LATER for o in outcomes):
            self._drained = None  # scheduled work the drained hint does not know about
        ids = [o.task_id for o in outcomes]
        return await self._grouped("settle", ids, item_of, self._request())

    def _settled(
        self, outcomes: Sequence[Outcome], groups: list[list[int]], replies: Sequence[Any]
    ) -> list[bool]:
        out = [bool(r) for r in _spread(len(outcomes), groups, replies)]
        for o, ok in zip(outcomes, out, strict=True):
            if ok:
                self._where.pop(o.task_id, None)
        return out

    async def extend(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float
    ) -> list[ExtendStatus]:
        if not leases:
            return []
        expires = repr(self.clock.now() + lease_seconds)
        ids = [task_id for task_id, _ in leases]
        replies = await self._by_queue(
            "extend",
            "extend",
            ids,
            lambda i: (leases[i][0], leases[i][1]),
            replayable=False,  # extending twice is harmless
            lead=[expires],
        )
        return [ExtendStatus.LOST if r is None else ExtendStatus(_s(r)) for r in replies]

    async def reap(self) -> list[str]:
        requeued: list[str] = []
        pending = await self._queue_names()
        while pending:
            request = self._request()
            calls = [self._call("reap", q, [_REAP_CHUNK], request) for q in pending]
            replies = await self._conn.run("reap", calls)
            forgotten: list[str] = []
            more: list[str] = []
            undelivered: list[tuple[str, str, float, Sequence[FollowUp]]] = []
            for q, (back, gone, again, outbox) in zip(pending, replies, strict=True):
                requeued += (t.decode() for t in back)
                forgotten += (t.decode() for t in gone)
                if again:
                    more.append(q)
                undelivered += (
                    (q, outbox[j].decode(), *decode_outbox(outbox[j + 1]))
                    for j in range(0, len(outbox), 2)
                )
            if forgotten:
                await self._unindex(forgotten)
            if undelivered:  # a settling client died before it delivered them
                await self._deliver(undelivered)
            pending = more
        await self._reap_coordination()
        return requeued

    async def _unindex(self, ids: Sequence[str]) -> None:
        script, pin = self._scripts["unindex"], [INDEX_PIN, INDEX_PIN_VALUE]
        calls: list[Call] = [
            (script, [self.keys.index], [*pin, *ids[c : c + 1000]])
            for c in range(0, len(ids), 1000)
        ]
        for task_id in ids:
            self._where.pop(task_id, None)
        await self._conn.run("unindex", calls)

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        if not queues:
            await anyio.sleep(max(0.0, timeout))
            return
        try:
            await self._wait(queues, timeout)
        except BaseException:
            # cancelled (the worker stops) after claiming: nobody will take the leases
            taken, self._taken = self._taken, None
            if taken is not None and taken.leases:
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    try:
                        await self._release(taken.leases)
                    except BackendError:  # their leases expire and reap() requeues them
                        pass
            raise

    async def _wait(self, queues: Sequence[str], timeout: float) -> None:
        deadline = anyio.current_time() + timeout
        wake_keys = [self.keys.wake(q) for q in queues]
        fake = hasattr(self.clock, "subscribe")
        # The last call was a claim that emptied these queues (and dropped their stale
        # markers): work that came since pushed a marker, so the first look is skipped
        # and only the next scheduled task's due time is needed (the claim returned
        # it). Scheduled work enqueued since is seen at the next look, within _POLL.
        drained, self._drained = self._drained, None
        skip_look = drained is not None and drained.queues == tuple(queues)
        # Then it registers for hand-offs as it blocks (see _pop_handed): on several
        # queues only if their scripts may push to another queue's keys.
        claimer = None
        if (
            skip_look
            and drained is not None
            and drained.limit > 0
            and (len(queues) == 1 or self.hand_off_across_queues)
        ):
            claimer = drained
        while True:
            # Armed before looking, so a fake clock moving meanwhile is not missed.
            local = self._arm_local() if fake else None
            now = self.clock.now()
            if skip_look and drained is not None:
                skip_look = False
                dues = [] if drained.due is None else [drained.due]
                if dues and dues[0] <= now:
                    return
            else:
                replies = await self._conn.run("wait", [self._call("peek", q, []) for q in queues])
                if any(ready for ready, _ in replies):
                    return
                dues = [float(due) for _, due in replies if due]
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return
            block = max(min(remaining, _POLL), 0.01)
            if dues and not fake:  # real time: wake when the next scheduled task is due
                block = max(min(block, min(dues) - now), 0.01)
            # Woken by a marker (or the fake clock): return, and let the caller's claim
            # look; a marker may be stale (another worker took the work), the next
            # wait then looks again. Paused queues get no markers. Not woken: look
            # again (scheduled work may have come due).
            if claimer is None:
                pop = self._pop(wake_keys, block)
            else:
                pop = self._pop_handed(claimer, block)
            if await self._block(pop, local):
                return
            if anyio.current_time() >= deadline:  # the caller's claim looks; no peek first
                return

    def _arm_local(self) -> anyio.Event:
        if self._local_wake is None:
            self._local_wake = anyio.Event()
        return self._local_wake

    def _pop(self, keys: list[str], seconds: float) -> Callable[[], Awaitable[bool]]:
        """BLPOP a marker from ``keys`` for up to ``seconds``; True if woken."""

        async def pop() -> bool:
            [popped] = await self._conn.call(
                "wait", lambda: self._conn.execute([("BLPOP", *keys, seconds)]), checked=True
            )
            if isinstance(popped, ResponseError):
                raise BackendError(f"Redis refused wait: {popped}") from popped
            return popped is not None

        return pop

    def _pop_handed(self, c: _Claimer, seconds: float) -> Callable[[], Awaitable[bool]]:
        """Register as an idle waiter of ``c``'s queues and block for up to ``seconds``
        on this backend's hand-off list (a ``BLMOVE`` into its inbox), in one round
        trip. An enqueue of one task that is ready now, with nothing else queued,
        leases that task to us and pushes it there (enqueue.lua): the lease is in the
        reply, with no claim on the way, and waits in ``_taken`` for the next claim().
        Other wake-ups push a marker there (or to the queue's marker list, moved here
        first); after one, the next claim() unregisters us and claims. True if woken.

        On several queues the list and inbox are the first queue's, and the
        registration names them ("@<n>@<key base>" first, see _lib.lua); it stays on
        the other queues after a hand-off, whose scripts see that list or inbox
        holding something and drop it (enqueue.lua)."""
        home = c.queues[0]
        inbox = self.keys.inbox(home, self._inbox_id)
        hand = self.keys.hand(home, self._inbox_id)
        self._inboxes.update((inbox, hand))
        member = f"{self._inbox_id}{c.lease_seconds!r}|{c.worker}"
        if len(c.queues) > 1:
            base = self.keys.base(home)
            member = f"@{len(base.encode())}@{base}{member}"

        async def go() -> Any:
            commands: list[tuple[Any, ...]] = []
            if self._read_inbox is not None:  # what the last one returned, read
                commands.append(("UNLINK", self._read_inbox))
            until = repr(self.clock.now() + seconds + _REGISTERED)
            commands += [("ZADD", self.keys.waiters(q), until, member) for q in c.queues]
            # a marker pushed before we registered would not reach the hand-off list
            commands += [("LMOVE", self.keys.wake(q), hand, "LEFT", "RIGHT") for q in c.queues]
            commands.append(("BLMOVE", hand, inbox, "LEFT", "RIGHT", seconds))
            commands.append(("PEXPIRE", inbox, 60000))  # if we die before the next one
            replies = await self._conn.execute(commands)
            self._read_inbox = None  # (kept on a failure: a later claim may read it)
            return replies[-2]

        async def pop() -> bool:
            self._waiting = (c.queues, member, c)  # before the call: a lost reply leaves it
            try:
                item = await self._conn.call("wait", go, idempotent=False, checked=True)
                if isinstance(item, ResponseError):
                    raise BackendError(f"Redis refused wait: {item}") from item
            except BaseException as exc:
                # Cancelled, or the reply was lost: a task may have been handed to us.
                # Unregister, which returns it; the caller's claim() takes it (or the
                # cancelled wait() hands it back).
                unregistered = False
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    with contextlib.suppress(BackendError):
                        leases = await self._unregister()  # (it empties the inbox)
                        self._read_inbox = None
                        if leases:
                            self._taken = _Taken(c, leases, False, None)
                        unregistered = True
                if not unregistered or isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                return True  # the caller's claim() looks
            if item is None:  # timed out, still registered
                return False
            self._read_inbox = inbox
            if item[:1] not in (b"h", b"H"):  # a marker: the next claim() unregisters
                return True  # us and claims
            if len(c.queues) == 1:
                self._waiting = None  # the enqueue unregistered us
            lease, due = self._handed_lease(c, item)
            self._taken = _Taken(c, [lease], True, due)
            return True

        return pop

    def _handed_lease(self, c: _Claimer, item: bytes) -> tuple[Lease, float | None]:
        """The lease in a hand-off (enqueue.lua: ``h<token>|<attempt>|<ready>|<now>|
        <next due>|<#id>|<id><stored message>``, after ``H<#B>|<B>`` instead of ``h``
        when handed by one of several queues) and the next due time of ``c``'s queues."""
        if item[:1] == b"H":
            n_base, body = item[1:].split(b"|", 1)
            body = body[int(n_base) :]
        else:
            body = item[1:]
        token, attempt, ready, now, due, n, rest = body.split(b"|", 6)
        row = (rest[int(n) :], token, attempt, ready)
        [lease] = self._leases([row], float(now), c.lease_seconds, c.worker)
        self._handed = (lease.message.id, lease.token)
        # the other queues' next due time: the one the draining claim saw
        dues = [float(due)] if due else []
        if len(c.queues) > 1 and c.due is not None:
            dues.append(c.due)
        return lease, min(dues, default=None)

    async def _block(self, pop: Callable[[], Awaitable[bool]], local: anyio.Event | None) -> bool:
        """Block in ``pop``; True if woken (by a marker, or by the fake clock moving:
        ``local`` is set)."""
        if local is None:
            return await pop()
        if local.is_set():
            return True
        woke = False

        async def by_marker(scope: anyio.CancelScope) -> None:
            nonlocal woke
            woke = await pop()
            scope.cancel()

        async def by_clock(scope: anyio.CancelScope) -> None:
            nonlocal woke
            await local.wait()
            woke = True
            scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(by_marker, tg.cancel_scope)
            tg.start_soon(by_clock, tg.cancel_scope)
        return woke

    # -- results --------------------------------------------------------------
    async def get(self, task_id: str) -> TaskRecord | None:
        where = await self._locate([task_id])
        q = where.get(task_id)
        if q is None:
            return None
        [rec] = await self._fetch([(q, task_id)])
        return rec

    async def wait_done(self, task_id: str, timeout: float) -> TaskRecord | None:
        q = (await self._locate([task_id])).get(task_id)
        if q is None:
            return None
        [code] = await self._conn.run(
            "wait_done", [self._call("watch", q, [task_id])], task_id=task_id
        )
        if code == 0:
            return None
        deadline = anyio.current_time() + timeout
        done_key = self.keys.done(q, task_id)
        while code == 2:
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            seconds = max(min(remaining, _POLL), 0.01)
            popped = await self._conn.call(
                "wait_done",
                lambda s=seconds: self._r.blpop([done_key], timeout=s),  # type: ignore[misc]
                task_id=task_id,
            )
            if popped is not None:
                break
            [rec] = await self._fetch([(q, task_id)])
            if rec is None or rec.state in TERMINAL:
                return rec
        [rec] = await self._fetch([(q, task_id)])
        return rec

    # -- admin ----------------------------------------------------------------
    async def stats(
        self, queues: Sequence[str] | None = None, *, finished: bool = True
    ) -> list[QueueStats]:
        # per-state counters: finished counts cost nothing here
        if queues is None:
            names = await self._queue_names()
        else:
            names = list(queues)
            if names:
                await self._conn.call("stats", lambda: self._r.sadd(self.keys.queues, *names))
        replies = await self._conn.run("stats", [self._call("stats", q, []) for q in names])
        out = []
        policies: dict[bytes, SchedulingPolicy] = {}
        for name, (paused, policy_json, counters, depth) in zip(names, replies, strict=True):
            states = dict.fromkeys(State, 0)
            late = dict.fromkeys(range(5), 0)
            for j in range(0, len(counters), 2):
                field, value = counters[j].decode(), int(counters[j + 1])
                if field.startswith("late:"):
                    late[int(field[5:])] = value
                else:
                    states[State(field)] = value
            if policy_json:
                policy = policies.get(policy_json)
                if policy is None:
                    policy = SchedulingPolicy.from_dict(json.loads(policy_json))
                    policies[policy_json] = policy
            else:
                policy = DEFAULT_POLICY
            out.append(
                QueueStats(
                    queue=name,
                    paused=bool(paused),
                    states=states,
                    depth_by_priority={p: int(d) for p, d in enumerate(depth)},
                    late_by_priority=late,
                    policy=policy,
                )
            )
        return out

    async def list_tasks(self, filter: TaskFilter) -> list[TaskRecord]:
        if filter.limit <= 0:
            return []
        if filter.queue is not None:
            names = [filter.queue]
        else:
            names = await self._queue_names()
        need = filter.offset + filter.limit
        state = None if filter.state is None else filter.state.value
        args = [need, opt(state), opt(filter.task), opt(filter.text)]
        replies = await self._conn.run("list_tasks", [self._call("list", q, args) for q in names])
        per_queue = [
            [(float(flat[j + 1]), flat[j].decode(), q) for j in range(0, len(flat), 2)]
            for q, flat in zip(names, replies, strict=True)
        ]
        merged = list(heapq.merge(*per_queue))[filter.offset : need]
        records = await self._fetch([(q, task_id) for _, task_id, q in merged])
        return [r for r in records if r is not None]

    async def cancel(self, task_ids: Sequence[str]) -> list[bool]:
        if not task_ids:
            return []
        replies = await self._by_queue(
            "cancel", "cancel", task_ids, lambda i: task_ids[i], replayable=True
        )
        return [bool(r) for r in replies]

    async def retry(self, task_ids: Sequence[str]) -> list[bool]:
        if not task_ids:
            return []
        replies = await self._by_queue(
            "retry", "retry", task_ids, lambda i: task_ids[i], replayable=True
        )
        return [bool(r) for r in replies]

    async def purge(self, queue: str, states: Sequence[State]) -> int:
        wanted = [s.value for s in states]
        if not wanted:
            return 0
        start = deleted = 0
        while True:
            call = self._call("purge", queue, [start, _PURGE_CHUNK, *wanted], self._request())
            [(gone, scanned)] = await self._conn.run("purge", [call])
            ids = [t.decode() for t in gone]
            if ids:
                await self._unindex(ids)
            deleted += len(ids)
            if scanned < _PURGE_CHUNK:
                return deleted
            start += scanned - len(ids)

    async def pause(self, queue: str) -> None:
        async def go() -> None:
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.meta(queue), "paused", "1")
                pipe.sadd(self.keys.queues, queue)
                pipe.delete(self.keys.wake(queue))  # its markers would wake for nothing
                await pipe.execute()

        await self._conn.call("pause", go)

    async def resume(self, queue: str) -> None:
        async def go() -> None:
            await self._r.sadd(self.keys.queues, queue)

        await self._conn.call("resume", go)
        await self._conn.run("resume", [self._call("resume", queue, [])])


def _spread(n: int, groups: list[list[int]], replies: Sequence[Any]) -> list[Any]:
    """Per-queue replies back in the order of the ``n`` ids (None: unknown task)."""
    out: list[Any] = [None] * n
    for positions, reply in zip(groups, replies, strict=True):
        for i, r in zip(positions, reply, strict=True):
            out[i] = r
    return out
