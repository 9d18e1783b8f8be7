"""The PostgreSQL backend: :class:`PostgresBackend`.

psycopg's async API runs on asyncio only, so this backend does too (the core's trio
support does not extend to it). Every state change is one SQL statement (claim,
settle, reap and friends live in ``sql/queries``); times come from the backend's
clock as parameters, never from ``now()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow, tuple_row
from psycopg_pool import AsyncConnectionPool

from taskcore.backend import (
    EnqueueResult,
    ExtendStatus,
    FollowUp,
    JournalEntry,
    Lease,
    Message,
    Outcome,
    OutcomeKind,
    QueueSpec,
    QueueStats,
    RuntimeStats,
    TaskFilter,
    TaskRecord,
    WorkerInfo,
)
from taskcore.clock import Clock, SystemClock
from taskcore.errors import BackendError, BackendUnavailable, ConfigurationError
from taskcore.scheduling import DEFAULT_POLICY, SchedulingPolicy
from taskcore.states import TERMINAL, State

from . import _rows
from ._config import UNREACHABLE_HINT, Settings, libpq_defaults, split_url
from ._notify import Channels, Listener, Waiters
from ._sql import Statements
from .migrations import check_async, migrate_async

__all__ = ["PostgresBackend"]

log = logging.getLogger("taskcore_pg")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[TupleRow]

# The two variants of enqueue.sql (see there).
_ARBITER = {"conflict": "ON CONFLICT DO NOTHING", "stored": "true"}
_PLAIN = {"conflict": "", "stored": "q.kind IS DISTINCT FROM 'fair'"}

# How long an idle waiter's registration (register_waiter.sql) outlives the block it
# was made for: the enqueuers judge it by their own clocks (skew), as on Redis.
_WAITER_SLACK = 0.5
# PostgreSQL's text cannot hold it: a lookup by a string holding one finds nothing
_NUL = "\x00"

# The two variants of settle_final.sql: with the late counts' upsert, or without (no
# outcome of the batch is late, the usual case).
_COUNT_LATE = {
    "count_late": "INSERT INTO @schema@.late_counts AS c (queue, priority, n)"
    " SELECT s.queue, s.priority, count(*) FROM settled s WHERE s.late"
    " GROUP BY s.queue, s.priority ORDER BY 1, 2"
    " ON CONFLICT (queue, priority) DO UPDATE SET n = c.n + EXCLUDED.n"
}
_PUNCTUAL = {"count_late": "SELECT"}

# Outcomes that end a task: a batch of only these takes settle_final.sql.
_FINAL = frozenset(
    {OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.DEAD, OutcomeKind.CANCELLED}
)

# How long a registration as a result waiter (done_waiters) lasts; renewed by the next
# wait_done once half of it has passed, forgotten by the reaper once it has run out.
DONE_TTL = 300.0

_RECORD_COLUMNS = (
    "id, task, queue, priority, state, attempt, enqueued_at, eligible_at, updated_at, body, "
    "deadline, unique_key, fairness_key, worker, result, errors, cancel_requested, "
    "started_at, finished_at"
)


def _in_release_order(
    order: Sequence[Message | tuple[str, str]],
    joins: Mapping[str, FollowUp],
    counts: Mapping[str, int],
    done: Collection[str],
) -> list[Message]:
    """The messages that become ready, in ``order`` (plain follow-ups, and joins as
    ``(join id, parent)``): a complete join (``done``; ``counts``: its parents after
    this settle) at the place of the parent that completed it, where the parents
    counted before this settle plus this settle's so far reach its ``after`` (the
    memory backend's order). Going through this settle's parents, the count before
    each runs in steps of one from at most ``after - 1`` (the join was not complete
    before) to ``counts[jid] - 1 >= after - 1``: exactly one parent completes it, so
    every complete join is in the result once."""
    batch: dict[str, set[str]] = {}
    for item in order:
        if not isinstance(item, Message):
            batch.setdefault(item[0], set()).add(item[1])
    seen: dict[str, set[str]] = {}
    out: list[Message] = []
    for item in order:
        if isinstance(item, Message):
            out.append(item)
            continue
        jid, parent = item
        so_far = seen.setdefault(jid, set())
        if jid not in done or parent in so_far:
            continue
        before = counts[jid] - len(batch[jid]) + len(so_far)
        so_far.add(parent)
        if before < joins[jid].after <= before + 1:
            out.append(joins[jid].message)
    return out


def _follows(outcomes: Sequence[Outcome]) -> bool:
    """Does any outcome carry follow-ups (a workflow step)?"""
    for o in outcomes:
        if o.then:
            return True
    return False


def _rounds(keys: Sequence[object]) -> list[list[int]]:
    """Split positions into rounds in which no key repeats, keeping order, so that a
    batch naming one task twice behaves as the same calls made one after another."""
    rounds: list[list[int]] = []
    seen: list[set[object]] = []
    last_round: dict[object, int] = {}
    for pos, key in enumerate(keys):
        r = last_round.get(key, -1) + 1
        if r == len(rounds):
            rounds.append([])
            seen.append(set())
        rounds[r].append(pos)
        seen[r].add(key)
        last_round[key] = r
    return rounds


class _Pool(AsyncConnectionPool[Conn]):
    """The connection pool, whose :meth:`check` of idle connections gives up on one
    after ``check_timeout`` seconds: the check of a connection whose peer vanished
    without a FIN or RST would otherwise wait for an answer forever."""

    def __init__(self, check_timeout: float, *args: Any, **kwargs: Any) -> None:
        self.check_timeout = check_timeout
        super().__init__(*args, **kwargs)

    async def check_connection(self, conn: Conn) -> None:  # type: ignore[override]
        # a timeout is an Exception: check() discards the connection and adds another
        with anyio.fail_after(self.check_timeout):
            await AsyncConnectionPool.check_connection(conn)


async def _guard_plans(conn: Conn) -> None:
    """Pool sessions plan without bitmap scans (``Settings.plan_guard``)."""
    await conn.execute("SET enable_bitmapscan = off")


def _pin_plans(pin_query: str) -> Callable[[Conn], Awaitable[None]]:
    """The claim sessions' set-up: the plan guard, and the claim's generic plan pinned
    to index reads for the whole session (``claim_plan.sql``)."""

    async def configure(conn: Conn) -> None:
        await _guard_plans(conn)
        await conn.execute(pin_query)

    return configure


class PostgresBackend:
    """Tasks in PostgreSQL tables; ``postgresql://`` in a URL.

    Runs on asyncio only (psycopg's async driver). Use it as an async context manager:
    entering opens the connection pool, applies pending migrations (unless
    ``migrate_on_start`` is off) and starts the LISTEN connection.

    Args:
        dsn: libpq connection string or URL, e.g. ``postgresql://user@host/db``.
        clock: time source; all times stored are read from it.
        schema: schema holding the tables (default ``taskcore``).
        min_size: smallest connection pool size.
        max_size: largest connection pool size.
        migrate_on_start: apply pending migrations on entry.
        listen: use LISTEN/NOTIFY wake-ups (turn off behind transaction-mode poolers).
        poll_interval: poll fallback for ``wait``/``wait_done``, at most 1 s.
        **settings: further :class:`~taskcore_pg._config.Settings` fields.

    Raises:
        ConfigurationError: a setting is invalid.
    """

    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock | None = None,
        schema: str = "taskcore",
        min_size: int = 1,
        max_size: int = 10,
        migrate_on_start: bool = True,
        listen: bool = True,
        poll_interval: float = 1.0,
        **settings: Any,
    ) -> None:
        try:
            self.settings = Settings(
                schema=schema,
                min_size=min_size,
                max_size=max_size,
                migrate_on_start=migrate_on_start,
                listen=listen,
                poll_interval=poll_interval,
                **settings,
            )
        except TypeError as exc:
            raise ConfigurationError(f"PostgresBackend: {exc}") from None
        self.clock: Clock = clock or SystemClock()
        self._dsn = dsn
        self._sql = Statements(self.settings.schema)
        uid = uuid.uuid4().hex[:12]
        self._channels = Channels(self.settings.schema, uid)
        self._waiters = Waiters()
        self._waiters.on_unheard(self._pass_on)
        self._registered: set[str] = set()  # ids in ready_waiters (see wait)
        # a listening wait's look: ready.sql in register_waiter.sql (built once)
        self._register_look = self._sql.variant("register_waiter", look=self._sql["ready"])
        self._passing: set[asyncio.Task[None]] = set()  # wake-ups passed on (_pass_on)
        self._pool: AsyncConnectionPool[Conn] | None = None
        # claims run on sessions of their own when their plan is pinned (see claim)
        self._claims: AsyncConnectionPool[Conn] | None = None
        self._listener: Listener | None = None
        # this backend's registration as a result waiter (see _want_done)
        self._done_id = f"{socket.gethostname()}/{os.getpid()}/{uid}"
        self._done_until = -float("inf")  # backend clock
        self._done_since = -float("inf")  # time.monotonic() of the latest fresh registration
        self._done_generation = 0
        self._done_lock: anyio.Lock | None = None
        self._done_refused = False  # the server refused the registration: poll
        subscribe = getattr(self.clock, "subscribe", None)
        if subscribe is not None:
            subscribe(self._waiters.wake_all)

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None, **settings: Any) -> PostgresBackend:
        """Build from ``postgresql://user@host:port/db?schema=app&listen=0``.

        taskcore's own query parameters (``schema``, ``min_size``, ``max_size``,
        ``migrate``, ``listen``, ``poll_interval``, ``application_name``, ``timeout``,
        ``operation_timeout``) are
        stripped before the DSN reaches psycopg; keyword arguments override them.
        """
        dsn, from_query = split_url(url)
        return cls(dsn, clock=clock, **{**from_query, **settings})

    @property
    def schema(self) -> str:
        return self.settings.schema

    def _where(self) -> str:
        parts = urlsplit(self._dsn) if "://" in self._dsn else None
        host = parts.hostname if parts is not None else None
        try:
            port = parts.port if parts is not None else None
        except ValueError:
            port = None
        at = f"{host}:{port}" if host and port else host
        return f"PostgreSQL at {at or 'the configured host'} (schema {self.schema!r})"

    def _libpq(self) -> dict[str, Any]:
        """The dead-peer defaults (``LIBPQ_DEFAULTS``) the DSN does not set itself."""
        return libpq_defaults(self._dsn)

    async def _reach(self, libpq: dict[str, Any]) -> None:
        """Connect once before the pool does: the pool only says that it timed out,
        this says why (refused, unknown host, bad password...)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self._dsn, **libpq)
        except psycopg.OperationalError as exc:
            cause = " ".join(str(exc).split())  # libpq's message spans lines
            raise BackendUnavailable(
                f"cannot open {self._where()}: {cause}; {UNREACHABLE_HINT}"
            ) from exc
        await conn.close()

    # -- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> PostgresBackend:
        s = self.settings
        libpq = self._libpq()
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": s.application_name,
            "prepare_threshold": s.prepare_threshold,
            **libpq,
        }
        pool: _Pool = _Pool(
            s.operation_timeout,
            self._dsn,
            kwargs=kwargs,
            min_size=s.min_size,
            max_size=s.max_size,
            timeout=s.timeout,
            name=f"taskcore_pg.{s.schema}",
            open=False,
            configure=_guard_plans if s.plan_guard else None,
        )
        self._pool = pool
        if s.plan_guard and s.prepare_threshold is not None:
            # opened lazily: a process that never claims (a producer) never connects
            self._claims = _Pool(
                s.operation_timeout,
                self._dsn,
                kwargs=kwargs,
                min_size=0,
                max_size=s.max_size,
                timeout=s.timeout,
                name=f"taskcore_pg.{s.schema}.claims",
                open=False,
                configure=_pin_plans(self._sql["claim_plan"]),
            )
        try:
            await self._reach(libpq)
            await pool.open(wait=True, timeout=s.timeout)
            if self._claims is not None:
                await self._claims.open(wait=True, timeout=s.timeout)
            if s.migrate_on_start:
                # (unbounded: upgrading a populated schema may wait for locks)
                await self._run(lambda conn: migrate_async(conn, s.schema), bounded=False)
            elif not await self._run(lambda conn: check_async(conn, s.schema)):
                raise ConfigurationError(
                    f"schema {s.schema!r} is missing or out of date and migrate_on_start "
                    "is off: run `taskcore pg migrate` first"
                )
            if s.listen:
                self._listener = Listener(
                    self._dsn,
                    {"application_name": s.application_name, **libpq},
                    self._channels,
                    self._waiters,
                    check_every=s.operation_timeout,
                    timeout=s.operation_timeout,
                )  # it connects when something first waits (see Listener)
        except psycopg.OperationalError as exc:
            await self.aclose()
            raise BackendUnavailable(
                f"cannot open {self._where()}: {exc}; {UNREACHABLE_HINT}"
            ) from exc
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and close the pool; idempotent."""
        self._waiters.wake_all()
        if self._done_until > -float("inf") and self._pool is not None:
            # no longer waiting for results: the settles may stop notifying (else the
            # reaper forgets the registration once it expires)
            # (best effort and brief, shielded: a close in a cancelled scope still closes
            # the pool below, and a server that is gone does not hold it up)
            self._done_until = -float("inf")
            with contextlib.suppress(BackendError), anyio.move_on_after(2.0, shield=True):
                await self._fetchall("unwant_done", {"id": self._done_id})
        registered, self._registered = list(self._registered), set()
        if registered and self._pool is not None:  # no enqueue should pick these now
            with contextlib.suppress(BackendError), anyio.move_on_after(2.0, shield=True):
                await self._fetchall("unregister_waiters", {"ids": registered})
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.aclose()
        for task in list(self._passing):
            task.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        claims, self._claims = self._claims, None
        if claims is not None:
            await claims.close()

    def on_cancel(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(task_id)`` as soon as cancellation of a running task is asked
        for anywhere (through LISTEN; the worker's ``extend`` learns it regardless)."""
        self._waiters.on_cancel(callback)
        if self._listener is not None:
            self._listener.want(self._channels.cancel)

    # -- plumbing -------------------------------------------------------------------
    async def _run(
        self,
        op: Callable[[Conn], Awaitable[T]],
        *,
        idempotent: bool = False,
        bounded: bool = True,
        claims: bool = False,
    ) -> T:
        """Run ``op`` on a pooled connection, translating driver errors.

        A lost connection becomes :class:`BackendUnavailable` after the pool is told to
        check its idle connections, so the next call gets a healthy one. Read-only
        operations (``idempotent``) are retried once first. An operation that takes
        longer than ``operation_timeout`` (unless not ``bounded``) counts as a lost
        connection (its peer may have vanished without a word): the connection is
        closed, not reused. ``claims``: on a claim session (see :meth:`claim`), when
        there are such.
        """
        pool = self._pool
        if claims and self._claims is not None and pool is not None:
            pool = self._claims
        if pool is None:
            raise BackendError(
                "PostgresBackend is not open: use `async with backend:` before calling it"
            )
        attempts = 2 if idempotent else 1
        for attempt in range(attempts):
            try:
                async with pool.connection() as conn:
                    with anyio.fail_after(self.settings.operation_timeout if bounded else None):
                        return await op(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
                if not isinstance(exc, TimeoutError):
                    # (after a timeout, checking the idle connections could take
                    # operation_timeout each; they fail their own operations instead)
                    await self._recover(pool)
                if attempt + 1 < attempts:
                    continue
                why = (
                    f"no answer within operation_timeout={self.settings.operation_timeout:g} s"
                    if isinstance(exc, TimeoutError)
                    else f"{type(exc).__name__}: {exc}"
                )
                raise BackendUnavailable(
                    f"{self._where()} is unavailable ({why}); the operation may be retried"
                ) from exc
            except psycopg.Error as exc:
                raise BackendError(
                    f"{self._where()} refused an operation ({type(exc).__name__}: {exc})"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _recover(pool: AsyncConnectionPool[Conn]) -> None:
        try:
            await pool.check()
        except psycopg.Error:  # pragma: no cover - check() replaces what it can
            pass

    async def _fetchall(
        self,
        name: str,
        params: dict[str, Any],
        *,
        idempotent: bool = False,
        binary: bool = False,
        text: str | None = None,
    ) -> list[TupleRow]:
        """Run the statement ``name`` (or ``text``, a variant of it) and return its rows."""
        query = self._sql[name] if text is None else text

        async def op(conn: Conn) -> list[TupleRow]:
            cur = await conn.execute(query, params, binary=binary)
            return await cur.fetchall() if cur.description is not None else []

        return await self._run(op, idempotent=idempotent)

    async def _fetchone(self, name: str, params: dict[str, Any], **options: Any) -> TupleRow | None:
        """The first row of :meth:`_fetchall` (same options), or None."""
        rows = await self._fetchall(name, params, **options)
        return rows[0] if rows else None

    def _pass_on(self, queue: str) -> None:
        """An enqueue woke this backend for ``queue`` through its registration, but
        nothing here waits for it any more (the wait that registered ended, and its
        worker is busy): wake every waiter of the queue instead, as the enqueue would
        have done had it found no registration."""

        async def notify() -> None:
            try:
                await self._fetchall("notify", {"channel": self._channels.ready, "payload": queue})
            except BackendError as exc:  # the waiters' polls find the task
                log.warning("taskcore_pg: could not pass a wake-up on (%s)", exc)

        task = asyncio.get_running_loop().create_task(notify())
        self._passing.add(task)
        task.add_done_callback(self._passing.discard)

    def _channel_params(self) -> dict[str, str]:
        c = self._channels
        return {"ready_channel": c.ready, "done_channel": c.done, "cancel_channel": c.cancel}

    # -- broker ---------------------------------------------------------------------
    async def declare(self, specs: Sequence[QueueSpec]) -> None:
        query = self._sql["declare"]
        params = [_rows.policy_params(spec.name, spec.policy) for spec in specs]

        async def op(conn: Conn) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(query, params)

        if params:
            await self._run(op)

    async def enqueue(
        self, messages: Sequence[Message], *, connection: Conn | None = None
    ) -> list[EnqueueResult]:
        """Store tasks (see :class:`~taskcore.backend.Backend`).

        Args:
            messages: the tasks; stored with multi-row INSERTs of ``enqueue_chunk``.
            connection: an open psycopg async connection of the caller: the tasks are
                written in its current transaction and exist only if it commits.
        """
        if connection is not None:
            return await self.enqueue_in(connection, messages)
        out: list[EnqueueResult] = []
        chunk = self.settings.enqueue_chunk
        for start in range(0, len(messages), chunk):
            part = messages[start : start + chunk]
            now = self.clock.now()

            async def op(
                conn: Conn, part: Sequence[Message] = part, now: float = now
            ) -> list[EnqueueResult]:
                return await self._enqueue_on(conn, part, now)

            out += await self._run(op)
        return out

    async def enqueue_in(
        self, conn: psycopg.AsyncConnection[Any], messages: Sequence[Message]
    ) -> list[EnqueueResult]:
        """Enqueue inside the caller's transaction on ``conn``.

        The tasks (and their NOTIFY) become visible only when the caller commits; a
        rollback leaves no trace. ``conn`` may be in a transaction or in autocommit
        mode (then the enqueue is its own transaction).

        Raises:
            BackendUnavailable: the connection is broken.
        """
        if not messages:
            return []
        try:
            return await self._enqueue_on(conn, messages, self.clock.now())
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise BackendUnavailable(f"{self._where()} is unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise BackendError(f"{self._where()} refused the enqueue: {exc}") from exc

    async def _enqueue_on(
        self, conn: psycopg.AsyncConnection[Any], messages: Sequence[Message], now: float
    ) -> list[EnqueueResult]:
        created: dict[str, str] = {}
        rest = messages
        if all(m.unique_key is None for m in messages):
            plain = await self._enqueue_plain(conn, messages, now)
            if plain is not None:
                created = plain
                rest = [m for m in messages if m.id not in created]
        answers = iter(await self._enqueue_arbiter(conn, rest, now) if rest else ())
        return [
            EnqueueResult(m.id, True, State(created[m.id])) if m.id in created else next(answers)
            for m in messages
        ]

    async def _enqueue_plain(
        self, conn: psycopg.AsyncConnection[Any], messages: Sequence[Message], now: float
    ) -> dict[str, str] | None:
        """Insert without ON CONFLICT: ``{id: state}`` of the rows created (all but the
        tasks of fair queues), or None when an id already exists (nothing stored).

        On an idle autocommit connection (the pool's) the statement is its own
        transaction: one round trip. Otherwise it runs in a (sub)transaction, so that a
        unique violation leaves the caller's transaction usable.
        """
        params = _rows.enqueue_params(messages, now)
        params["ready_channel"] = self._channels.ready
        query = self._sql.variant("enqueue", **_PLAIN)
        own = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
        try:
            async with (
                contextlib.nullcontext() if own else conn.transaction(),
                conn.cursor(row_factory=tuple_row) as cur,
            ):
                await cur.execute(query, params, binary=True)
                return {row[0]: row[1] for row in await cur.fetchall()}
        except psycopg.errors.UniqueViolation:
            return None

    async def _enqueue_arbiter(
        self, conn: psycopg.AsyncConnection[Any], messages: Sequence[Message], now: float
    ) -> list[EnqueueResult]:
        params = _rows.enqueue_params(messages, now)
        params["ready_channel"] = self._channels.ready
        async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(self._sql.variant("enqueue", **_ARBITER), params, binary=True)
            stored = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
            to_tag = [m.id for m in messages if stored.get(m.id, ("", False))[1]]
            if to_tag:
                await cur.execute(self._sql["enqueue_fair"], {"ids": to_tag})
            answers: list[tuple[str | None, bool, str | None]] = []
            for m in messages:
                state = stored.pop(m.id, (None, False))[0]  # a repeated id: only the first
                answers.append((m.id, True, state) if state else (None, False, None))
            missing = [i for i, a in enumerate(answers) if a[0] is None]
            if missing:
                await cur.execute(
                    self._sql["enqueue_lookup"],
                    {
                        "ids": [messages[i].id for i in missing],
                        "queues": [messages[i].queue for i in missing],
                        "unique_keys": [messages[i].unique_key for i in missing],
                    },
                )
                for ord_, tid, found_state in await cur.fetchall():
                    answers[missing[ord_ - 1]] = (tid, False, found_state)
        out = []
        for msg, (tid, created, state) in zip(messages, answers, strict=True):
            if tid is None or state is None:
                raise BackendError(
                    f"enqueue of task {msg.id}: neither stored nor matched an existing task",
                    task_id=msg.id,
                )
            out.append(EnqueueResult(tid, created, State(state)))
        return out

    async def claim(
        self,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        worker: str,
        max_priority: int = 4,
        settle: Sequence[Outcome] = (),
    ) -> list[Lease]:
        """Lease tasks (see :class:`~taskcore.backend.Backend`).

        Carried outcomes (``settle``) and the claim are one transaction, sent in one
        round trip (psycopg's pipeline mode): the settle statements first, so the claim
        sees what they released, then the claim. That transaction commits
        synchronously (the claim keeps the server's ``synchronous_commit`` instead of
        turning it off): the settles in it must survive a server crash. If any
        statement fails, none of it is recorded and the call raises. With
        ``plan_guard`` (and server-side prepares), claims run on sessions of their own,
        set up with ``claim_plan.sql``: the claim runs on one generic plan per session,
        pinned to index reads, instead of being planned on every call, and without a
        statement of its own per claim for the pins.
        """
        names = list(dict.fromkeys(queues))
        if limit <= 0 or not names or _follows(settle):
            # (outcomes with follow-ups take settle's transaction: not carried)
            if settle:
                await self.settle(settle)
            if limit <= 0 or not names:
                return []
            settle = ()
        settles = self._settle_statements(settle)
        params: dict[str, Any] = {
            "queues": names,
            "limit": limit,
            "max_priority": max_priority,
            "worker": worker,
            "promote_limit": max(limit, self.settings.promote_limit),
            "synchronous_commit": (None if settles or self.settings.claim_sync_commit else "off"),
        }
        claim_query = self._sql["claim"]

        async def op(conn: Conn) -> list[TupleRow]:
            # The claim's time is read once the connection is in hand, not before a
            # wait for it (a full pool, a claim session being set up): a lease dated
            # before that wait would lapse early by as much.
            params["now"] = now = self.clock.now()
            params["expires_at"] = now + lease_seconds
            if not settles:
                cur = await conn.execute(claim_query, params, binary=True)
                return await cur.fetchall()
            # no Sync between the statements: one implicit transaction, whose first
            # error skips the rest and rolls it all back
            async with conn.pipeline():
                for settle_query, settle_params, _ in settles:
                    await conn.execute(settle_query, settle_params, binary=True)
                cur = await conn.execute(claim_query, params, binary=True)
            return await cur.fetchall()

        rows = await self._run(op, claims=True)
        now, expires_at = params["now"], params["expires_at"]
        return [_rows.lease_from_row(row, worker, now, expires_at) for row in rows]

    def _settle_statements(
        self, outcomes: Sequence[Outcome]
    ) -> list[tuple[str, dict[str, Any], list[int]]]:
        """The settle statements for ``outcomes``: ``(query, params, positions)``, one
        per round of :func:`_rounds` and ``batch_size`` outcomes, in order."""
        out = []
        channels = self._channel_params()
        chunk = self.settings.batch_size
        for round_ in _rounds([o.task_id for o in outcomes]):
            # at most batch_size outcomes per statement: a worker's batch grows with the
            # previous settle's round trip, and one huge statement would grow the
            # connection's buffers and the process's heap for good (docs/postgres.md)
            for begin in range(0, len(round_), chunk):
                positions = round_[begin : begin + chunk]
                part = [outcomes[p] for p in positions]
                params = _rows.settle_params(part, self.clock.now())
                params.update(channels)
                if not all(o.kind in _FINAL for o in part):
                    query = self._sql["settle"]
                else:
                    late = any(o.late for o in part)
                    query = self._sql.variant(
                        "settle_final", **(_COUNT_LATE if late else _PUNCTUAL)
                    )
                out.append((query, params, positions))
        return out

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if _follows(outcomes):
            return await self._run(lambda conn: self._settle_following(conn, outcomes))
        accepted = [False] * len(outcomes)
        for query, params, positions in self._settle_statements(outcomes):

            async def op(conn: Conn, query: str = query, params: dict[str, Any] = params) -> Any:
                cur = await conn.execute(query, params, binary=True)
                return await cur.fetchone()

            row = await self._run(op)
            for ord_ in row[0] if row else ():
                accepted[positions[ord_ - 1]] = True
        return accepted

    async def _settle_following(self, conn: Conn, outcomes: Sequence[Outcome]) -> list[bool]:
        """Settle outcomes some of which carry follow-ups: the settle statements, the
        joins and the enqueue of what they release are one transaction, so a follow-up
        exists exactly when its parent's success is recorded."""
        accepted = [False] * len(outcomes)
        async with conn.transaction():
            for query, params, positions in self._settle_statements(outcomes):
                cur = await conn.execute(query, params, binary=True)
                row = await cur.fetchone()
                for ord_ in row[0] if row else ():
                    accepted[positions[ord_ - 1]] = True
            joins: dict[str, FollowUp] = {}
            ids: list[str] = []
            parents: list[str] = []
            keeps: list[float] = []  # an incomplete join lives as long as these results
            # the follow-ups in outcome order, a join at each parent's place: what
            # becomes ready is stored in that order (arrival order, the tie-break), as
            # the memory backend stores each outcome's follow-ups in turn
            order: list[Message | tuple[str, str]] = []
            now = self.clock.now()
            for o, ok in zip(outcomes, accepted, strict=True):
                if not ok or o.kind is not OutcomeKind.SUCCEEDED:
                    continue
                for f in o.then:
                    if f.after <= 1:
                        order.append(f.message)
                    else:
                        joins[f.message.id] = f
                        ids.append(f.message.id)
                        parents.append(o.task_id)
                        keeps.append(math.inf if o.result_ttl is None else now + o.result_ttl)
                        order.append((f.message.id, o.task_id))
            counts: dict[str, int] = {}
            done: list[str] = []
            if joins:
                params = {"ids": ids, "parents": parents, "keeps": keeps}
                cur = await conn.execute(self._sql["join"], params)
                counts = dict(await cur.fetchall())
                done = [jid for jid, n in counts.items() if n >= joins[jid].after]
                if done:
                    await conn.execute(self._sql["join_done"], {"ids": done})
            ready = _in_release_order(order, joins, counts, done)
            if ready:
                await self._enqueue_on(conn, ready, now)
        return accepted

    async def extend(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float
    ) -> list[ExtendStatus]:
        out = [ExtendStatus.LOST] * len(leases)
        for positions in _rounds(list(leases)):
            rows = await self._fetchall(
                "extend",
                {
                    "ids": [leases[p][0] for p in positions],
                    "tokens": [leases[p][1] for p in positions],
                    "expires_at": self.clock.now() + lease_seconds,
                },
            )
            for ord_, cancel_requested in rows:
                out[positions[ord_ - 1]] = (
                    ExtendStatus.CANCEL if cancel_requested else ExtendStatus.OK
                )
        return out

    async def reap(self) -> list[str]:
        now = self.clock.now()
        batch = self.settings.batch_size
        requeued: list[str] = []
        params = {"now": now, "at": json.dumps(now), "batch": batch, **self._channel_params()}
        while True:
            row = await self._fetchone("reap", params)
            assert row is not None
            requeued += row[0]
            if row[1] < batch:
                break
        await self.prune_expired(batch_size=batch)
        await self._fetchone("expire_coordination", {"now": now})
        return requeued

    async def prune_expired(
        self, *, batch_size: int | None = None, max_batches: int | None = None
    ) -> int:
        """Delete finished tasks whose result TTL ran out, ``batch_size`` rows per
        statement (each its own short transaction). Returns the number deleted."""
        return await self._prune(
            "prune_expired", {"now": self.clock.now()}, batch_size, max_batches
        )

    async def prune_finished(
        self, older_than: float, *, batch_size: int | None = None, max_batches: int | None = None
    ) -> int:
        """Retention: delete terminal tasks that finished more than ``older_than``
        seconds ago, in bounded batches. Returns the number deleted."""
        params = {"before": self.clock.now() - older_than}
        return await self._prune("prune_finished", params, batch_size, max_batches)

    async def _prune(
        self, name: str, params: dict[str, Any], batch_size: int | None, max_batches: int | None
    ) -> int:
        batch = batch_size or self.settings.batch_size
        query = self._sql[name]
        total = 0
        batches = 0

        async def op(conn: Conn) -> int:
            cur = await conn.execute(query, {**params, "batch": batch})
            return cur.rowcount

        while max_batches is None or batches < max_batches:
            deleted = await self._run(op)
            total += deleted
            batches += 1
            if deleted < batch:
                break
        return total

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        names = list(dict.fromkeys(queues))
        deadline = anyio.current_time() + timeout
        waiter = f"{self._done_id}:{','.join(names)}"
        with self._waiters.ready(names) as event:
            listener = self._listener
            if listener is not None:  # before the look: no notification missed
                await listener.listen(self._channels.ready, self._channels.waiter)
            while True:
                now = self.clock.now()
                block = min(deadline - anyio.current_time(), self.settings.poll_interval)
                params: dict[str, Any] = {"queues": names, "now": now}
                query = None
                if block > 0 and listener is not None and listener.hears(self._channels.waiter):
                    # register as an idle waiter: an enqueue wakes this one, not every one
                    query = self._register_look
                    params |= {
                        "waiter": waiter,
                        "channel": self._channels.waiter,
                        "expires_at": now + block + _WAITER_SLACK,
                    }
                    self._registered.add(waiter)
                # shielded: a stop() that cancels the wait during this short read would
                # make psycopg cancel the query and close the connection, with warnings
                # (against a silent server the stop then waits for operation_timeout)
                with anyio.CancelScope(shield=True):
                    ready = await self._fetchone("ready", params, idempotent=True, text=query)
                if ready and ready[0]:
                    return
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    return
                with anyio.move_on_after(min(remaining, self.settings.poll_interval)):
                    await event.wait()
                if event.is_set() or anyio.current_time() >= deadline:
                    return  # (timed out: the caller's claim looks; no look first)

    # -- results --------------------------------------------------------------------
    async def get(self, task_id: str) -> TaskRecord | None:
        return await self._read("get", task_id)

    async def _read(self, name: str, task_id: str) -> TaskRecord | None:
        """One task by id with ``get.sql`` or ``get_locked.sql``."""
        if _NUL in task_id:
            return None  # no task has it: text cannot hold a NUL (psycopg refuses to send it)
        row = await self._fetchone(name, {"id": task_id}, idempotent=True)
        return None if row is None else _rows.record_from_row(row)

    async def _want_done(self) -> tuple[int, bool]:
        """Keep this backend registered as a result waiter (``done_waiters``): the
        settles notify ``<schema>.done`` only while some process is. Returns the
        registration's generation (it changes when a lapsed registration is made
        again) and whether the registration is recent.

        A settle decides whether to notify from a snapshot taken after it wrote its rows
        (``done_wanted()``), but commits later: one that looked just before this
        registration committed may still be committing, unnotified. So the first check
        under a recent registration, if it finds the task running, is followed by a
        locking read, which waits for such a settle to end; ``operation_timeout`` bounds
        "recent" (a settle still uncommitted after that long only delays the waiter to
        its next poll).
        """
        if not self.settings.listen or self._done_refused:
            return 0, False  # nothing here would hear a notification: poll
        if self._done_lock is None:
            self._done_lock = anyio.Lock()
        async with self._done_lock:
            now = self.clock.now()
            if now >= self._done_until - DONE_TTL / 2:
                lapsed = now >= self._done_until
                try:
                    await self._fetchall(
                        "want_done", {"id": self._done_id, "expires_at": now + DONE_TTL}
                    )
                except BackendUnavailable:
                    raise
                except BackendError as exc:  # e.g. a role that may only read
                    log.warning(
                        "taskcore_pg: cannot register as a result waiter (%s); "
                        "waiting for results by polling every %g s",
                        exc,
                        self.settings.poll_interval,
                    )
                    self._done_refused = True
                    return 0, False
                self._done_until = now + DONE_TTL
                if lapsed:
                    self._done_since = time.monotonic()
                    self._done_generation += 1
            recent = time.monotonic() - self._done_since < self.settings.operation_timeout
            return self._done_generation, recent

    async def wait_done(self, task_id: str, timeout: float) -> TaskRecord | None:
        deadline = anyio.current_time() + timeout
        with self._waiters.done(task_id) as event:
            if self._listener is not None:
                await self._listener.listen(self._channels.done)
            checked: int | None = None
            while True:
                generation, recent = await self._want_done()
                record = await self._read("get", task_id)
                # a locking read after each fresh registration (see _want_done), of a
                # running task only: a settle changes nothing else, and a share lock on a
                # queued row would make a claim's SKIP LOCKED pass it over for a moment
                # (another task would start first)
                if recent and generation != checked and record and record.state is State.RUNNING:
                    record = await self._read("get_locked", task_id)
                checked = generation
                if record is None or record.state in TERMINAL:
                    return record
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    return record
                with anyio.move_on_after(min(remaining, self.settings.poll_interval)):
                    await event.wait()
                if event.is_set():
                    return await self.get(task_id)

    # -- admin ----------------------------------------------------------------------
    async def stats(
        self, queues: Sequence[str] | None = None, *, finished: bool = True
    ) -> list[QueueStats]:
        # finished rows are counted from their index, which grows with the retention
        # window; finished=False (the worker's autoscaler) skips that branch
        info_query, stats_query = self._sql["queue_info"], self._sql["stats"]
        wanted = None if queues is None else list(queues)

        async def op(conn: Conn) -> tuple[list[TupleRow], list[TupleRow]]:
            cur = await conn.execute(info_query, {"queues": wanted})
            info = await cur.fetchall()
            names = wanted if wanted is not None else [row[0] for row in info]
            cur = await conn.execute(stats_query, {"queues": names, "finished": finished})
            return info, await cur.fetchall()

        info, counts = await self._run(op, idempotent=True)
        names = wanted if wanted is not None else sorted(row[0] for row in info)
        by_name = {row[0]: row for row in info}
        states: dict[str, dict[State, int]] = {n: dict.fromkeys(State, 0) for n in names}
        depth: dict[str, dict[int, int]] = {n: dict.fromkeys(range(5), 0) for n in names}
        late: dict[str, dict[int, int]] = {n: dict.fromkeys(range(5), 0) for n in names}
        for kind, queue, key, n in counts:
            if kind == "state":
                states[queue][State(key)] = int(n)
            elif kind == "depth":
                depth[queue][int(key)] = int(n)
                states[queue][State.QUEUED] += int(n)
            else:
                late[queue][int(key)] = int(n)
        out = []
        for name in names:
            row = by_name.get(name)
            policy = (
                SchedulingPolicy.from_dict(row[2])
                if row is not None and row[2] is not None
                else DEFAULT_POLICY
            )
            out.append(
                QueueStats(
                    queue=name,
                    paused=bool(row[1]) if row is not None else False,
                    states=states[name],
                    depth_by_priority=depth[name],
                    late_by_priority=late[name],
                    policy=policy,
                )
            )
        return out

    async def list_tasks(self, filter: TaskFilter) -> list[TaskRecord]:
        if any(_NUL in v for v in (filter.queue, filter.task, filter.text) if v is not None):
            return []  # no stored text holds a NUL (and psycopg refuses to send one)
        clauses = []
        params: dict[str, Any] = {"limit": filter.limit, "offset": filter.offset}
        if filter.queue is not None:
            clauses.append("queue = %(queue)s")
            params["queue"] = filter.queue
        if filter.state is not None:
            # a literal (a State member, never user text), so that the partial index
            # holding that state can serve the listing
            clauses.append(f"state = '{State(filter.state).value}'")
        if filter.task is not None:
            clauses.append("task = %(task)s")
            params["task"] = filter.task
        if filter.text is not None:
            clauses.append(
                "(strpos(id, %(text)s) > 0"
                " OR strpos(coalesce(unique_key, ''), %(text)s) > 0 AND unique_key IS NOT NULL"
                " OR strpos(coalesce(errors -> -1 ->> 'message', ''), %(text)s) > 0"
                " AND jsonb_array_length(errors) > 0)"
            )
            params["text"] = filter.text
        where = " AND ".join(clauses) or "true"
        query = (
            f'SELECT {_RECORD_COLUMNS} FROM "{self.schema}".tasks WHERE {where}'
            ' ORDER BY enqueued_at, id COLLATE "C" LIMIT %(limit)s OFFSET %(offset)s'
        )

        async def op(conn: Conn) -> list[TupleRow]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        return [_rows.record_from_row(row) for row in await self._run(op, idempotent=True)]

    async def _by_rounds(self, name: str, ids: Sequence[str], **extra: Any) -> list[bool]:
        out = [False] * len(ids)
        # an id holding a NUL names no task (text cannot hold one): it stays False
        live = [p for p, i in enumerate(ids) if _NUL not in i]
        for round_ in _rounds([ids[p] for p in live]):
            positions = [live[r] for r in round_]
            params = {"ids": [ids[p] for p in positions], "now": self.clock.now(), **extra}
            row = await self._fetchone(name, params)
            for ord_ in row[0] if row else ():
                out[positions[ord_ - 1]] = True
        return out

    async def cancel(self, task_ids: Sequence[str]) -> list[bool]:
        return await self._by_rounds("cancel", task_ids, **self._channel_params())

    async def retry(self, task_ids: Sequence[str]) -> list[bool]:
        return await self._by_rounds("retry", task_ids, ready_channel=self._channels.ready)

    async def purge(self, queue: str, states: Sequence[State]) -> int:
        batch = self.settings.batch_size
        params = {
            "queue": queue,
            "states": [str(s) for s in states],
            "batch": batch,
            "done_channel": self._channels.done,
        }
        total = 0
        while True:
            row = await self._fetchone("purge", params)
            deleted = int(row[0]) if row else 0
            total += deleted
            if deleted < batch:
                return total

    async def pause(self, queue: str) -> None:
        await self._fetchall("pause", {"queue": queue, "paused": True})

    async def resume(self, queue: str) -> None:
        await self._fetchall("pause", {"queue": queue, "paused": False})
        await self._fetchall("notify", {"channel": self._channels.ready, "payload": queue})

    # -- coordination ---------------------------------------------------------------
    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        await self._fetchall(
            "heartbeat",
            {
                "id": info.id,
                "hostname": info.hostname,
                "pid": info.pid,
                "queues": list(info.queues),
                "concurrency": info.concurrency,
                "busy": info.busy,
                "started_at": info.started_at,
                "heartbeat_at": info.heartbeat_at,
                "expires_at": self.clock.now() + ttl,
            },
        )

    async def remove_worker(self, worker_id: str) -> None:
        await self._fetchall("remove_worker", {"id": worker_id})

    async def workers(self) -> list[WorkerInfo]:
        rows = await self._fetchall("workers", {"now": self.clock.now()}, idempotent=True)
        return [_rows.worker_from_row(row) for row in rows]

    async def take_tokens(self, bucket: str, rate: float, capacity: float, n: float = 1) -> float:
        row = await self._fetchone(
            "take_tokens",
            {
                "name": bucket,
                "rate": float(rate),
                "capacity": float(capacity),
                "n": float(n),
                "now": self.clock.now(),
            },
        )
        assert row is not None
        return float(row[0])

    async def once(self, key: str, ttl: float) -> bool:
        now = self.clock.now()
        row = await self._fetchone("once", {"key": key, "now": now, "expires_at": now + ttl})
        return row is not None

    async def kv_get(self, key: str) -> bytes | None:
        row = await self._fetchone("kv_get", {"key": key, "now": self.clock.now()}, idempotent=True)
        return None if row is None else bytes(row[0])

    async def kv_set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        expires_at = None if ttl is None else self.clock.now() + ttl
        await self._fetchall("kv_set", {"key": key, "value": value, "expires_at": expires_at})

    async def kv_replace(
        self, key: str, old: bytes | None, new: bytes, ttl: float | None = None
    ) -> bool:
        now = self.clock.now()
        params = {
            "key": key,
            "old": old,
            "value": new,
            "expires_at": None if ttl is None else now + ttl,
            "now": now,
        }
        return await self._fetchone("kv_replace", params) is not None

    async def record_runtimes(self, samples: Sequence[tuple[str, float]]) -> None:
        if samples:
            await self._fetchall(
                "record_runtimes",
                {"tasks": [t for t, _ in samples], "seconds": [float(s) for _, s in samples]},
            )

    async def runtime_stats(self, tasks: Sequence[str]) -> dict[str, RuntimeStats]:
        rows = await self._fetchall("runtime_stats", {"tasks": list(tasks)}, idempotent=True)
        return {task: RuntimeStats(int(n), total / n) for task, n, total in rows}

    # -- journal --------------------------------------------------------------------
    async def journal_append(self, entries: Sequence[JournalEntry]) -> None:
        if entries:
            await self._fetchall(
                "journal_append",
                {
                    "streams": [e.stream for e in entries],
                    "ats": [float(e.at) for e in entries],
                    "keys": [e.key for e in entries],
                    "payloads": [bytes(e.payload) for e in entries],
                },
            )

    async def journal_read(
        self,
        stream: str,
        *,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[JournalEntry]:
        if limit <= 0:
            return []
        query = self._sql.variant(
            "journal_read" if key is None else "journal_read_key",
            order="DESC" if newest_first else "ASC",
        )
        params = {
            "stream": stream,
            "key": key,
            "since": -math.inf if since is None else float(since),
            "until": math.inf if until is None else float(until),
            "limit": limit,
        }

        async def op(conn: Conn) -> list[TupleRow]:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

        rows = await self._run(op, idempotent=True)
        return [JournalEntry(stream, float(at), bytes(payload), k) for at, k, payload in rows]

    async def journal_trim(self, before: Mapping[str, float]) -> int:
        removed = 0
        for stream, cutoff in before.items():
            if not math.isnan(cutoff):
                params = {"stream": stream, "before": float(cutoff)}
                removed += await self._prune("journal_trim", params, None, None)
        return removed
