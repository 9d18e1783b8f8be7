"""The in-memory backend: the reference implementation and the embedded default.

Everything lives in one process. It implements the whole :class:`~taskcore.backend.Backend`
contract with the same observable behaviour as the Redis and Postgres backends; the
conformance suite in :mod:`taskcore.testing` holds all of them to it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping, Sequence

import anyio
import attrs

from ._memory_journal import MemoryJournal
from .backend import (
    AttemptError,
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
from .clock import Clock, SystemClock
from .scheduling import DEFAULT_POLICY, FairState, SchedulingPolicy, fair_class, static_score
from .states import TERMINAL, State, can_transition

__all__ = ["MemoryBackend"]

_PRIORITIES = range(5)


@attrs.define(slots=True, eq=False)
class _Task:
    msg: Message
    state: State
    eligible_at: float
    updated_at: float
    attempt: int = 0
    token: int = 0
    seq: int = 0
    score: float = 0.0
    worker: str | None = None
    expires_at: float = 0.0
    result: bytes | None = None
    errors: list[AttemptError] = attrs.field(factory=list)
    cancel_requested: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    purge_at: float | None = None

    def record(self) -> TaskRecord:
        m = self.msg
        return TaskRecord(
            id=m.id,
            task=m.task,
            queue=m.queue,
            priority=m.priority,
            state=self.state,
            attempt=self.attempt,
            enqueued_at=m.enqueued_at,
            eligible_at=self.eligible_at,
            updated_at=self.updated_at,
            body=m.body,
            deadline=m.deadline,
            unique_key=m.unique_key,
            fairness_key=m.fairness_key,
            worker=self.worker,
            result=self.result,
            errors=tuple(self.errors),
            cancel_requested=self.cancel_requested,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


@attrs.define(slots=True, eq=False)
class _Queue:
    name: str
    policy: SchedulingPolicy = DEFAULT_POLICY
    paused: bool = False
    ready: list[list[tuple[float, int, _Task]]] = attrs.field(
        factory=lambda: [[] for _ in _PRIORITIES]
    )
    scheduled: list[tuple[float, int, _Task]] = attrs.field(factory=list)
    fair: FairState = attrs.field(factory=FairState)
    counts: dict[State, int] = attrs.field(factory=lambda: dict.fromkeys(State, 0))
    late: list[int] = attrs.field(factory=lambda: [0] * 5)
    depth: list[int] = attrs.field(factory=lambda: [0] * 5)  # queued tasks per priority


class MemoryBackend:
    """All tasks in this process's memory; ``memory://`` in a URL.

    Args:
        clock: time source (a :class:`~taskcore.clock.FakeClock` in tests).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or SystemClock()
        self._tasks: dict[str, _Task] = {}
        self._queues: dict[str, _Queue] = {}
        self._unique: dict[tuple[str, str], str] = {}
        self._running: dict[str, _Task] = {}
        self._purge: list[tuple[float, int, str]] = []
        self._seq = itertools.count(1)
        self._tokens = itertools.count(1)
        self._wakeup = anyio.Event()
        self._done_events: dict[str, anyio.Event] = {}
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}
        # bucket -> (tokens, last take, when it is full again: then it is the same as absent)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._once: dict[str, float] = {}
        self._kv: dict[str, tuple[bytes, float | None]] = {}
        self._runtimes: dict[str, tuple[int, float]] = {}
        # workflow joins: follow-up id -> (parents that have released it so far, when
        # it is forgotten unless complete: see _follow)
        self._joins: dict[str, tuple[set[str], float]] = {}
        self._journal = MemoryJournal()
        subscribe = getattr(self.clock, "subscribe", None)
        if subscribe is not None:
            subscribe(self._wake)

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> MemoryBackend:
        return cls(clock=clock)

    async def __aenter__(self) -> MemoryBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._wake()

    # -- internals ------------------------------------------------------------
    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue(name)
        return q

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = anyio.Event()

    def _move(self, t: _Task, state: State, now: float) -> None:
        q = self._queue(t.msg.queue)
        q.counts[t.state] -= 1
        q.counts[state] += 1
        if t.state is State.QUEUED:
            q.depth[t.msg.priority] -= 1
        if state is State.QUEUED:
            q.depth[t.msg.priority] += 1
        t.state = state
        t.updated_at = now
        if state in TERMINAL:
            t.finished_at = now
            t.worker = None
            key = t.msg.unique_key
            if key is not None and self._unique.get((t.msg.queue, key)) == t.msg.id:
                del self._unique[(t.msg.queue, key)]
            event = self._done_events.pop(t.msg.id, None)
            if event is not None:
                event.set()

    def _make_ready(self, q: _Queue, t: _Task, now: float) -> None:
        """Score a task that just became ready and push it on its priority heap."""
        t.seq = next(self._seq)
        p = t.msg.priority
        if q.policy.kind == "fair":
            t.score = q.fair.tag(q.policy, fair_class(q.policy, p, t.msg.fairness_key))
        else:
            t.score = static_score(q.policy, p, t.eligible_at, t.msg.deadline)
        heapq.heappush(q.ready[p], (t.score, t.seq, t))

    def _restore(self, q: _Queue, t: _Task) -> None:
        """Put a task that was running (lease expired, or handed back) back in its
        place: same ready time, score and arrival seq, so it is claimed before the tasks
        that became ready after it. Under the fair policy its finish tag is spent (the
        queue's virtual time has passed it), so it gets the virtual time: the lowest
        tag a ready task can have, without charging its class again."""
        if q.policy.kind == "fair":
            t.score = q.fair.virtual_time
        heapq.heappush(q.ready[t.msg.priority], (t.score, t.seq, t))

    def _schedule(self, q: _Queue, t: _Task) -> None:
        t.seq = next(self._seq)
        heapq.heappush(q.scheduled, (t.eligible_at, t.seq, t))

    def _promote(self, q: _Queue, now: float) -> None:
        sched = q.scheduled
        while sched and sched[0][0] <= now:
            _, seq, t = heapq.heappop(sched)
            if t.seq != seq or t.state not in (State.SCHEDULED, State.RETRYING):
                continue
            self._move(t, State.QUEUED, now)
            self._make_ready(q, t, now)

    def _set_purge(self, t: _Task, ttl: float | None, now: float) -> None:
        if ttl is not None:
            t.purge_at = now + ttl
            heapq.heappush(self._purge, (t.purge_at, next(self._seq), t.msg.id))

    # -- broker ---------------------------------------------------------------
    async def declare(self, specs: Sequence[QueueSpec]) -> None:
        for spec in specs:
            self._queue(spec.name).policy = spec.policy

    async def enqueue(self, messages: Sequence[Message]) -> list[EnqueueResult]:
        out, woke = self._store(messages, self.clock.now())
        if woke:
            self._wake()
        return out

    def _store(self, messages: Sequence[Message], now: float) -> tuple[list[EnqueueResult], bool]:
        """Enqueue without awaiting (settle stores follow-ups in its own critical
        section); returns the results and whether a task became ready."""
        out: list[EnqueueResult] = []
        woke = False
        for m in messages:
            if m.id in self._tasks:
                out.append(EnqueueResult(m.id, False, self._tasks[m.id].state))
                continue
            if m.unique_key is not None:
                existing = self._unique.get((m.queue, m.unique_key))
                if existing is not None:
                    out.append(EnqueueResult(existing, False, self._tasks[existing].state))
                    continue
                self._unique[(m.queue, m.unique_key)] = m.id
            q = self._queue(m.queue)
            ready = m.eligible_at <= now
            state = State.QUEUED if ready else State.SCHEDULED
            t = _Task(m, state, m.eligible_at, now)
            self._tasks[m.id] = t
            q.counts[state] += 1
            if ready:
                q.depth[m.priority] += 1
                self._make_ready(q, t, now)
                woke = True
            else:
                self._schedule(q, t)
            out.append(EnqueueResult(m.id, True, state))
        return out, woke

    def _follow(
        self, parent: str, then: Sequence[FollowUp], keep: float | None, now: float
    ) -> bool:
        """Store an accepted success's follow-ups; True if one became ready. A join
        is kept while the result of a parent it counts is (``keep``: that parent's
        result TTL, None: forever); reap forgets it after that."""
        ready: list[Message] = []
        until = math.inf if keep is None else now + keep
        for f in then:
            if f.after <= 1:
                ready.append(f.message)
                continue
            parents, expires = self._joins.get(f.message.id, (set(), until))
            parents.add(parent)
            if len(parents) >= f.after:
                self._joins.pop(f.message.id, None)
                ready.append(f.message)
            else:
                self._joins[f.message.id] = (parents, max(expires, until))
        return self._store(ready, now)[1] if ready else False

    async def claim(
        self,
        queues: Sequence[str],
        limit: int,
        lease_seconds: float,
        worker: str,
        max_priority: int = 4,
        settle: Sequence[Outcome] = (),
    ) -> list[Lease]:
        if settle:
            await self.settle(settle)
        now = self.clock.now()
        leases: list[Lease] = []
        for name in queues:
            q = self._queues.get(name)
            if q is None or q.paused:
                continue
            self._promote(q, now)
            heaps = q.ready[: max_priority + 1]
            while len(leases) < limit:
                best: list[tuple[float, int, _Task]] | None = None
                for h in heaps:
                    while h and (h[0][2].state is not State.QUEUED or h[0][2].seq != h[0][1]):
                        heapq.heappop(h)  # cancelled or re-queued since: lazy delete
                    if h and (best is None or h[0][:2] < best[0][:2]):
                        best = h
                if best is None:
                    break
                score, _, t = heapq.heappop(best)
                if q.policy.kind == "fair":
                    q.fair.claimed(score)
                self._move(t, State.RUNNING, now)
                t.attempt += 1
                t.token = next(self._tokens)
                t.worker = worker
                t.started_at = now
                t.expires_at = now + lease_seconds
                self._running[t.msg.id] = t
                leases.append(
                    Lease(t.msg, t.token, t.attempt, worker, t.expires_at, now, t.eligible_at)
                )
            if len(leases) >= limit:
                break
        return leases

    async def settle(self, outcomes: Sequence[Outcome]) -> list[bool]:
        now = self.clock.now()
        accepted: list[bool] = []
        woke = False
        for o in outcomes:
            t = self._tasks.get(o.task_id)
            if t is None or t.state is not State.RUNNING or t.token != o.token:
                accepted.append(False)
                continue
            del self._running[o.task_id]
            q = self._queue(t.msg.queue)
            if o.late:
                q.late[t.msg.priority] += 1
            if o.error is not None:
                t.errors.append(o.error)
            kind = o.kind
            if kind is OutcomeKind.SUCCEEDED:
                t.result = o.result
                self._move(t, State.SUCCEEDED, now)
                self._set_purge(t, o.result_ttl, now)
                if o.then:
                    woke = self._follow(o.task_id, o.then, o.result_ttl, now) or woke
            elif kind in (OutcomeKind.RETRY, OutcomeKind.DEFER):
                if kind is OutcomeKind.DEFER:
                    t.attempt -= 1
                t.eligible_at = o.retry_at if o.retry_at is not None else now
                self._move(t, State.RETRYING, now)
                t.worker = None
                self._schedule(q, t)
                woke = woke or t.eligible_at <= now
            elif kind is OutcomeKind.RELEASED:
                t.attempt -= 1
                t.worker = None
                self._move(t, State.QUEUED, now)
                self._restore(q, t)
                woke = True
            else:
                state = {
                    OutcomeKind.FAILED: State.FAILED,
                    OutcomeKind.DEAD: State.DEAD,
                    OutcomeKind.CANCELLED: State.CANCELLED,
                }[kind]
                self._move(t, state, now)
                self._set_purge(t, o.result_ttl, now)
            accepted.append(True)
        if woke:
            self._wake()
        return accepted

    async def extend(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float
    ) -> list[ExtendStatus]:
        now = self.clock.now()
        out: list[ExtendStatus] = []
        for task_id, token in leases:
            t = self._running.get(task_id)
            if t is None or t.token != token:
                out.append(ExtendStatus.LOST)
                continue
            t.expires_at = now + lease_seconds
            out.append(ExtendStatus.CANCEL if t.cancel_requested else ExtendStatus.OK)
        return out

    async def reap(self) -> list[str]:
        now = self.clock.now()
        requeued: list[str] = []
        for task_id, t in list(self._running.items()):
            if t.expires_at > now:
                continue
            del self._running[task_id]
            t.errors.append(
                AttemptError(
                    t.attempt,
                    "LeaseExpired",
                    f"lease of worker {t.worker} expired; task returned to the queue",
                    "",
                    now,
                )
            )
            t.token = next(self._tokens)
            t.worker = None
            q = self._queue(t.msg.queue)
            if t.cancel_requested:
                self._move(t, State.CANCELLED, now)
                continue
            self._move(t, State.QUEUED, now)
            self._restore(q, t)
            requeued.append(task_id)
        while self._purge and self._purge[0][0] <= now:
            _, _, task_id = heapq.heappop(self._purge)
            t2 = self._tasks.get(task_id)
            if t2 is not None and t2.purge_at is not None and t2.purge_at <= now:
                self._forget(t2)
        for key in [k for k, exp in self._once.items() if exp <= now]:
            del self._once[key]
        for key in [k for k, (_, exp) in self._kv.items() if exp is not None and exp <= now]:
            del self._kv[key]
        for key in [k for k, (_, _, full) in self._buckets.items() if full <= now]:
            del self._buckets[key]
        # joins that can no longer complete (a chord member failed, was cancelled or
        # dead-lettered) once the results they count have expired
        for key in [k for k, (_, until) in self._joins.items() if until <= now]:
            del self._joins[key]
        if requeued:
            self._wake()
        return requeued

    def _forget(self, t: _Task) -> None:
        del self._tasks[t.msg.id]
        q = self._queue(t.msg.queue)
        q.counts[t.state] -= 1
        if t.state is State.QUEUED:
            q.depth[t.msg.priority] -= 1

    async def wait(self, queues: Sequence[str], timeout: float) -> None:
        now = self.clock.now()
        for name in queues:
            q = self._queues.get(name)
            if q is None or q.paused:
                continue
            if any(q.ready) or (q.scheduled and q.scheduled[0][0] <= now):
                return
        with anyio.move_on_after(timeout):
            await self._wakeup.wait()

    # -- results --------------------------------------------------------------
    async def get(self, task_id: str) -> TaskRecord | None:
        t = self._tasks.get(task_id)
        return None if t is None else t.record()

    async def wait_done(self, task_id: str, timeout: float) -> TaskRecord | None:
        t = self._tasks.get(task_id)
        if t is None or t.state in TERMINAL:
            return None if t is None else t.record()
        event = self._done_events.get(task_id)
        if event is None:
            event = self._done_events[task_id] = anyio.Event()
        with anyio.move_on_after(timeout):
            await event.wait()
        return await self.get(task_id)

    # -- admin ----------------------------------------------------------------
    async def stats(
        self, queues: Sequence[str] | None = None, *, finished: bool = True
    ) -> list[QueueStats]:
        # the counters are kept up to date, so finished counts cost nothing here
        names = sorted(self._queues) if queues is None else list(queues)
        out = []
        for name in names:
            q = self._queue(name)
            out.append(
                QueueStats(
                    queue=name,
                    paused=q.paused,
                    states=dict(q.counts),
                    depth_by_priority=dict(enumerate(q.depth)),
                    late_by_priority=dict(enumerate(q.late)),
                    policy=q.policy,
                )
            )
        return out

    async def list_tasks(self, filter: TaskFilter) -> list[TaskRecord]:
        out: list[TaskRecord] = []
        if filter.limit <= 0:
            return out
        skipped = 0
        text = filter.text
        for t in sorted(self._tasks.values(), key=lambda t: (t.msg.enqueued_at, t.msg.id)):
            m = t.msg
            if filter.queue is not None and m.queue != filter.queue:
                continue
            if filter.state is not None and t.state is not filter.state:
                continue
            if filter.task is not None and m.task != filter.task:
                continue
            if text is not None and not (
                text in m.id
                or (m.unique_key is not None and text in m.unique_key)
                or (t.errors and text in t.errors[-1].message)
            ):
                continue
            if skipped < filter.offset:
                skipped += 1
                continue
            out.append(t.record())
            if len(out) >= filter.limit:
                break
        return out

    async def cancel(self, task_ids: Sequence[str]) -> list[bool]:
        now = self.clock.now()
        out = []
        for task_id in task_ids:
            t = self._tasks.get(task_id)
            if t is None or t.state in TERMINAL:
                out.append(False)
            elif t.state is State.RUNNING:
                t.cancel_requested = True
                out.append(True)
            else:
                self._move(t, State.CANCELLED, now)
                out.append(True)
        return out

    async def retry(self, task_ids: Sequence[str]) -> list[bool]:
        now = self.clock.now()
        out = []
        for task_id in task_ids:
            t = self._tasks.get(task_id)
            if (
                t is None
                or not can_transition(t.state, State.QUEUED)
                or t.state
                not in (
                    State.DEAD,
                    State.FAILED,
                )
            ):
                out.append(False)
                continue
            key = t.msg.unique_key
            holder = None if key is None else self._unique.get((t.msg.queue, key))
            if holder is not None and holder != task_id:
                out.append(False)  # a live task holds the unique key now
                continue
            q = self._queue(t.msg.queue)
            t.purge_at = None
            t.finished_at = None
            t.attempt = 0
            t.eligible_at = now
            self._move(t, State.QUEUED, now)
            if key is not None:
                self._unique[(t.msg.queue, key)] = task_id
            self._make_ready(q, t, now)
            out.append(True)
        if any(out):
            self._wake()
        return out

    async def purge(self, queue: str, states: Sequence[State]) -> int:
        wanted = set(states)
        victims = [
            t
            for t in self._tasks.values()
            if t.msg.queue == queue and t.state in wanted and t.state is not State.RUNNING
        ]
        now = self.clock.now()
        for t in victims:
            if t.state not in TERMINAL:
                self._move(t, State.CANCELLED, now)
            self._forget(t)
        return len(victims)

    async def pause(self, queue: str) -> None:
        self._queue(queue).paused = True

    async def resume(self, queue: str) -> None:
        self._queue(queue).paused = False
        self._wake()

    # -- coordination ---------------------------------------------------------
    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        self._workers[info.id] = (info, self.clock.now() + ttl)

    async def remove_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def workers(self) -> list[WorkerInfo]:
        now = self.clock.now()
        return [info for info, exp in self._workers.values() if exp > now]

    async def take_tokens(self, bucket: str, rate: float, capacity: float, n: float = 1) -> float:
        now = self.clock.now()
        tokens, last, _ = self._buckets.get(bucket, (capacity, now, now))
        tokens = min(capacity, tokens + (now - last) * rate)
        wait = 0.0
        if tokens >= n:
            tokens -= n
        else:
            wait = (n - tokens) / rate
        self._buckets[bucket] = (tokens, now, now + (capacity - tokens) / rate)
        return wait

    async def once(self, key: str, ttl: float) -> bool:
        now = self.clock.now()
        exp = self._once.get(key)
        if exp is not None and exp > now:
            return False
        self._once[key] = now + ttl
        return True

    async def kv_get(self, key: str) -> bytes | None:
        return self._kv_live(key)

    async def kv_set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._kv_store(key, value, ttl)

    async def kv_replace(
        self, key: str, old: bytes | None, new: bytes, ttl: float | None = None
    ) -> bool:
        # read and write with no await between them: one critical section
        if self._kv_live(key) != old:
            return False
        self._kv_store(key, new, ttl)
        return True

    def _kv_live(self, key: str) -> bytes | None:
        item = self._kv.get(key)
        if item is None or (item[1] is not None and item[1] <= self.clock.now()):
            return None
        return item[0]

    def _kv_store(self, key: str, value: bytes, ttl: float | None) -> None:
        self._kv[key] = (value, None if ttl is None else self.clock.now() + ttl)

    async def record_runtimes(self, samples: Sequence[tuple[str, float]]) -> None:
        for task, seconds in samples:
            count, total = self._runtimes.get(task, (0, 0.0))
            self._runtimes[task] = (count + 1, total + seconds)

    async def runtime_stats(self, tasks: Sequence[str]) -> dict[str, RuntimeStats]:
        out = {}
        for task in tasks:
            count, total = self._runtimes.get(task, (0, 0.0))
            if count:
                out[task] = RuntimeStats(count, total / count)
        return out

    # -- journal --------------------------------------------------------------
    async def journal_append(self, entries: Sequence[JournalEntry]) -> None:
        self._journal.append(entries)

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
        return self._journal.read(
            stream, since=since, until=until, key=key, limit=limit, newest_first=newest_first
        )

    async def journal_trim(self, before: Mapping[str, float]) -> int:
        return self._journal.trim(before)
