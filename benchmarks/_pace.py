"""Paced single enqueues and what they tell (stdlib only: the peers' drivers import it
inside their own virtualenvs, taskcore's harness in its own).

A plan is a list of phases ``(name, seconds, rate)`` run back to back; call ``i`` is due
at its offset in the plan. :func:`pace` sends each call when it is due, or at once when
the producer is behind (the offered rate catches up instead of drifting), and returns
the wall clock read just before each call. With several producers (coroutines taking
the calls in order from one shared iterator) more calls can be in flight at once.
Given each call's body start (wall clock, in the worker), :func:`report` gives per
phase the wait percentiles, the rate actually sent, the largest backlog and how long
the phase's calls took to clear.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence

Phase = tuple[str, float, float]  # (name, seconds, calls per second)
BATCH = 1000  # most calls in one bulk enqueue of a tick
BOUNDED_S = 1.0  # a backlog "stayed bounded" if it cleared within this after the producer


def schedule(phases: Sequence[Phase]) -> list[float]:
    """Due offsets (seconds from the start) of every call of ``phases``."""
    due: list[float] = []
    start = 0.0
    for _name, seconds, rate in phases:
        due += [start + k / rate for k in range(max(1, round(seconds * rate)))]
        start += seconds
    return due


def phase_of(phases: Sequence[Phase], due: Sequence[float]) -> list[str]:
    """The name of the phase each call belongs to."""
    names, ends, end = [], [], 0.0
    for name, seconds, _rate in phases:
        end += seconds
        names.append(name)
        ends.append(end)
    out = []
    k = 0
    for d in due:
        while k < len(ends) - 1 and d >= ends[k]:
            k += 1
        out.append(names[k])
    return out


async def pace(
    due: Sequence[float],
    send: Callable[[int], Awaitable[object]],
    producers: int = 1,
    ids: Sequence[int] | None = None,
    start_at: float | None = None,
) -> list[float]:
    """``await send(i)`` for each call at its due time, from ``producers`` coroutines;
    the wall clock before each call. ``ids``: only those calls (a producer process's
    share; the others stay 0.0); ``start_at``: the wall clock of offset 0 (several
    producer processes share it), default now."""
    sent = [0.0] * len(due)
    calls = iter(range(len(due)) if ids is None else ids)
    t0 = time.time() if start_at is None else start_at

    async def producer() -> None:
        for i in calls:
            delay = t0 + due[i] - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.time()
            await send(i)

    await asyncio.gather(*(producer() for _ in range(producers)))
    return sent


def ticks(
    due: Sequence[float],
    tick: float,
    ids: Sequence[int] | None = None,
    key: Callable[[int], object] | None = None,
    most: int = BATCH,
) -> list[tuple[float, list[int]]]:
    """The calls ``ids`` (default all) cut into batches: the calls due in the same
    ``tick`` seconds (and of the same ``key``, e.g. the priority class), at most
    ``most`` a batch, each due at the start of its tick; in due order."""
    groups: dict[tuple[int, object], list[int]] = {}
    for i in range(len(due)) if ids is None else ids:
        groups.setdefault((math.floor(due[i] / tick + 1e-9), key(i) if key else None), []).append(i)
    out = [
        (k * tick, calls[j : j + most])
        for (k, _key), calls in groups.items()
        for j in range(0, len(calls), most)
    ]
    out.sort(key=lambda b: (b[0], b[1][0]))
    return out


async def pace_ticks(
    batches: Sequence[tuple[float, list[int]]],
    size: int,
    send: Callable[[list[int]], Awaitable[object]],
    producers: int = 1,
    start_at: float | None = None,
) -> list[float]:
    """Like :func:`pace` for :func:`ticks` batches: ``await send(ids)`` (one bulk or
    pipelined enqueue) at each batch's due time; the wall clock before the call, for
    each of its ``size`` calls (0.0 for calls in no batch)."""
    sent = [0.0] * size
    shared = iter(batches)
    t0 = time.time() if start_at is None else start_at

    async def producer() -> None:
        for at, ids in shared:
            delay = t0 + at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = time.time()
            for i in ids:
                sent[i] = now
            await send(ids)

    await asyncio.gather(*(producer() for _ in range(producers)))
    return sent


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def waits_ms(prefix: str, waits: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max of ``waits`` (ms) as ``{prefix}p50_ms`` ..."""
    if not waits:
        return {}
    return {
        f"{prefix}p50_ms": percentile(waits, 50),
        f"{prefix}p95_ms": percentile(waits, 95),
        f"{prefix}p99_ms": percentile(waits, 99),
        f"{prefix}max_ms": max(waits),
    }


def backlog_max(sent: Sequence[float], start: Sequence[float]) -> int:
    """The most calls sent and not yet started at any moment."""
    events = sorted([(t, 1) for t in sent] + [(t, -1) for t in start])
    depth = top = 0
    for _t, step in events:
        depth += step
        top = max(top, depth)
    return top


def report(
    phases: Sequence[Phase], sent: Sequence[float], start: Sequence[float]
) -> dict[str, float | str]:
    """Per phase (keys prefixed ``<name>_``, none for a nameless phase): offered and sent
    rate, wait percentiles, and ``clear_s``: the last of the phase's calls to start
    minus the moment the last of them was sent (how long its backlog took to clear);
    ``bounded``: cleared within :data:`BOUNDED_S`. Plus the largest backlog overall."""
    due = schedule(phases)
    names = phase_of(phases, due)
    out: dict[str, float | str] = {"count": len(due), "backlog_max": backlog_max(sent, start)}
    for name, _seconds, rate in phases:
        idx = [i for i, n in enumerate(names) if n == name]
        p = f"{name}_" if name else ""
        s = [sent[i] for i in idx]
        clear = max(0.0, max(start[i] for i in idx) - max(s))
        sent_per_s = (len(idx) - 1) / (max(s) - min(s)) if max(s) > min(s) else rate
        out |= {
            f"{p}offered_per_s": rate,
            f"{p}sent_per_s": sent_per_s,
            f"{p}sent_pct": 100 * sent_per_s / rate,
            **waits_ms(p, [(start[i] - sent[i]) * 1000 for i in idx]),
            f"{p}clear_s": clear,
            f"{p}bounded": "yes" if clear < BOUNDED_S else "no",
        }
    return out


# -- scenario 5, priority mix under saturation (two classes: the peers suite) ------------
HIGH, LOW = "high", "low"
OVERLOAD = 1.25  # the low class is offered this times the capacity


def priority_plan(cap: float, seconds: float, trickle: float) -> tuple[list[float], list[str]]:
    """Due offsets and class of every call, in due order: one second of capacity of
    low calls at once, then low at :data:`OVERLOAD` x ``cap`` (the backlog grows) and
    high at ``trickle``/s, both for ``seconds`` (taskcore's own harness: P4 and P0-P3)."""
    calls = [(0.0, LOW)] * max(1, round(cap))
    calls += [(d, LOW) for d in schedule([("", seconds, OVERLOAD * cap)])]
    calls += [(d, HIGH) for d in schedule([("", seconds, trickle)])]
    calls.sort(key=lambda c: c[0])  # stable: at 0 the backlog goes first
    return [d for d, _ in calls], [c for _, c in calls]


def priority_report(
    seconds: float,
    due: Sequence[float],
    classes: Sequence[str],
    sent: Sequence[float],
    start: Sequence[float],
) -> dict[str, float | str]:
    """Wait percentiles of each class; the high class's in the first and the second
    half of the run (flat = the backlog does not delay it); the low backlog (calls sent
    and not started): its largest and what was left when the last call was sent."""
    out: dict[str, float | str] = {"count": len(due), "seconds": seconds}
    last = max(sent)
    offered = (len(due) - 1) / max(due) if max(due) > 0 else 0.0
    sent_per_s = (len(sent) - 1) / (last - min(sent)) if last > min(sent) else 0.0
    out["offered_per_s"], out["sent_per_s"] = offered, sent_per_s
    if offered:
        out["sent_pct"] = 100 * sent_per_s / offered
    for cls in (HIGH, LOW):
        idx = [i for i, c in enumerate(classes) if c == cls]
        out[f"{cls}_tasks"] = len(idx)
        out |= waits_ms(f"{cls}_", [(start[i] - sent[i]) * 1000 for i in idx])
    high = [i for i, c in enumerate(classes) if c == HIGH]
    for name, part in (
        ("first", [i for i in high if due[i] < seconds / 2]),
        ("second", [i for i in high if due[i] >= seconds / 2]),
    ):
        out |= waits_ms(f"{HIGH}_{name}_half_", [(start[i] - sent[i]) * 1000 for i in part])
    if out.get("high_first_half_p99_ms"):
        out["high_rise_p99_x"] = float(out["high_second_half_p99_ms"]) / float(
            out["high_first_half_p99_ms"]
        )
    low = [i for i, c in enumerate(classes) if c == LOW]
    out["low_backlog_max"] = backlog_max([sent[i] for i in low], [start[i] for i in low])
    out["low_backlog_at_end"] = sum(start[i] > last for i in low)
    return out
