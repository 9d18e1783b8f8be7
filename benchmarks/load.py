"""Scenarios 4-6: paced load at fractions of the measured capacity (``load``), a
priority mix under saturation (``priority``) and a tenfold burst (``burst``).

All three follow one plan: streams of ``bench.stamp(i)`` calls at given rates and
priorities, cut into 10 ms ticks. Several producer coroutines take the ticks in due
order from one shared iterator, sleep until each tick is due (absolute schedule, so a
late tick is sent at once and the offered rate catches up) and send it with one
``enqueue_many`` of at most 1,000 calls. One worker (a ``latency`` worker process, or
in this process on memory) runs every call; wait = the body's wall-clock start minus
the wall clock read just before the enqueue call. A sampler reads ``stats()`` every
250 ms for the backlog (tasks queued). Every run checks that every call ran once and
that the backend counts exactly that many succeeded tasks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskcore import App, State
from taskcore.priority import Priority, is_late

from ._common import drop_scratch, scratch_url, verify_all_succeeded
from ._pace import waits_ms
from ._run import enqueue_noops
from ._worker import _redis_info
from .apps import QUEUE, make_app
from .scenarios import run_preloaded, serve

TICK = 0.01  # seconds between a stream's enqueue calls
BATCH = 1000  # most calls per enqueue_many
SAMPLE_EVERY = 0.25  # seconds between backlog samples


@dataclass(frozen=True)
class Stream:
    """``rate`` calls per second at ``priority`` from ``start`` for ``seconds``."""

    start: float
    seconds: float
    rate: float
    priority: int = int(Priority.MEDIUM)


@dataclass
class Produced:
    due: list[float]  # scheduled offset of each call, by index
    enqueued: list[float]  # wall clock just before its enqueue call
    priority: list[int]
    t0: float  # wall clock at offset 0
    end: float  # wall clock when the last enqueue call returned
    lag_max: float  # the latest a tick was sent after its due time


def plan(streams: Sequence[Stream]) -> list[tuple[float, int, int]]:
    """The ticks of ``streams`` as (due offset, priority, count), in due order."""
    ticks: list[tuple[float, int, int]] = []
    for st in streams:
        total = round(st.rate * st.seconds)
        for k in range(max(1, math.ceil(st.seconds / TICK))):
            count = min(total, round((k + 1) * TICK * st.rate)) - min(
                total, round(k * TICK * st.rate)
            )
            while count > 0:
                ticks.append((st.start + k * TICK, st.priority, min(count, BATCH)))
                count -= BATCH
    ticks.sort(key=lambda t: t[0])
    return ticks


async def produce(app: App, ticks: list[tuple[float, int, int]], producers: int) -> Produced:
    """Send ``ticks`` with ``producers`` coroutines; call i is ``bench.stamp(i)``."""
    stamp = app.tasks["bench.stamp"]
    total = sum(c for _, _, c in ticks)
    out = Produced([0.0] * total, [0.0] * total, [0] * total, time.time(), 0.0, 0.0)
    shared = iter(ticks)
    nxt = 0
    t0 = time.perf_counter()

    async def producer() -> None:
        nonlocal nxt
        for due, prio, count in shared:
            first, nxt = nxt, nxt + count
            delay = t0 + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                out.lag_max = max(out.lag_max, -delay)
            now = time.time()
            await app.enqueue_many(
                stamp, [(i,) for i in range(first, first + count)], priority=prio
            )
            await asyncio.sleep(0)  # on memory nothing else yields: let the worker run
            for i in range(first, first + count):
                out.due[i], out.enqueued[i], out.priority[i] = due, now, prio

    await asyncio.gather(*(producer() for _ in range(producers)))
    out.end = time.time()
    return out


async def _sample(app: App, stop: asyncio.Event) -> list[tuple[float, int, dict[int, int]]]:
    samples = []
    while not stop.is_set():
        # finished=False: the waiting counts only (PostgreSQL would count every
        # succeeded row otherwise, loading the server it measures)
        [st] = await app.backend.stats([QUEUE], finished=False)
        samples.append((time.time(), st.states.get(State.QUEUED, 0), dict(st.depth_by_priority)))
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)
        except TimeoutError:
            pass
    return samples


@dataclass
class Run:
    produced: Produced
    waits: list[float]  # seconds, by index
    starts: dict[int, float]
    samples: list[tuple[float, int, dict[int, int]]]
    late_backend: dict[int, int]  # late starts by priority, as the backend counted them
    server_calls: dict[str, int]  # Redis: commands by name during the run (server-wide)


async def run_plan(
    backend: str, ticks: list[tuple[float, int, int]], producers: int, timeout: float = 120
) -> Run:
    count = sum(c for _, _, c in ticks)
    url = scratch_url(backend)
    try:
        async with make_app(url) as app:
            before = await _redis_info(url) if backend == "redis" else None
            stop = asyncio.Event()
            sampler = asyncio.create_task(_sample(app, stop))
            try:
                produced, starts = await serve(
                    backend, app, url, count, lambda: produce(app, ticks, producers), timeout
                )
            finally:
                stop.set()
                samples = await sampler
            calls: dict[str, int] = {}
            if before is not None:
                after = await _redis_info(url)
                calls = {k: v - before["calls"].get(k, 0) for k, v in after["calls"].items()}
            await verify_all_succeeded(app, count)
            [st] = await app.stats([QUEUE])
    finally:
        await drop_scratch(url)
    waits = [starts[i] - produced.enqueued[i] for i in range(count)]
    return Run(produced, waits, starts, samples, dict(st.late_by_priority), calls)


def _calls(run: Run, tag: str = "") -> dict[str, Any]:
    """Redis commands per task during the run (server-wide: other clients add to it)."""
    if not run.server_calls:
        return {}
    n = len(run.waits)
    top = sorted(run.server_calls.items(), key=lambda kv: -kv[1])[:4]
    return {
        "server_commands_per_task" + tag: sum(run.server_calls.values()) / n,
        "server_top_calls_per_task" + tag: ", ".join(f"{k} {v / n:.2f}" for k, v in top),
    }


async def capacity(backend: str, n: int, concurrency: int) -> float:
    """Tasks/s of one worker draining ``n`` pre-enqueued no-ops (a short burn-down)."""
    url = scratch_url(backend)
    try:
        res = await run_preloaded(backend, url, n, concurrency, lambda a: enqueue_noops(a, n))
    finally:
        await drop_scratch(url)
    return float(n / res["elapsed"])


def _pcts(prefix: str, waits: Sequence[float]) -> dict[str, float]:
    return waits_ms(prefix, [w * 1000 for w in waits])


async def _capacity(
    backend: str, given: float | None, n: int, concurrency: int
) -> tuple[float, str]:
    if given:
        return given, "--capacity"
    return await capacity(backend, n, concurrency), f"burn-down of {n:,} no-ops, same run"


# -- 4. continuous load ------------------------------------------------------------
async def load(
    backend: str,
    given: float | None,
    capacity_n: int,
    seconds: float,
    producers: int,
    fractions: Sequence[float] = (0.5, 0.9),
) -> dict[str, Any]:
    cap, source = await _capacity(backend, given, capacity_n, 100)
    out: dict[str, Any] = {"capacity_per_s": cap, "capacity_from": source, "seconds": seconds}
    for frac in fractions:
        tag = f"_{round(frac * 100)}"
        rate = frac * cap
        run = await run_plan(backend, plan([Stream(0, seconds, rate)]), producers)
        p = run.produced
        clear = max(0.0, max(run.starts.values()) - p.end)
        out |= {
            "offered_per_s" + tag: rate,
            "sent_per_s" + tag: len(p.due) / (p.end - p.t0),
            "producer_lag_max_s" + tag: p.lag_max,
            "backlog_max" + tag: max((q for _, q, _ in run.samples), default=0),
            "clear_s" + tag: clear,
            "bounded" + tag: "yes" if clear < 1.0 else "no",
            **{k + tag: v for k, v in _pcts("", run.waits).items()},
            **_calls(run, tag),
        }
    return out


# -- 5. priority mix under saturation ----------------------------------------------
async def priority_mix(
    backend: str,
    given: float | None,
    capacity_n: int,
    seconds: float,
    trickle: float,
    producers: int,
) -> dict[str, Any]:
    """A P4 backlog of one second of capacity, then P4 offered at 1.25x capacity (the
    backlog grows) and P0-P3 at ``trickle``/s each, for ``seconds``."""
    cap, source = await _capacity(backend, given, capacity_n, 100)
    streams = [Stream(0, TICK, cap / TICK, 4), Stream(0, seconds, 1.25 * cap, 4)]
    streams += [Stream(0, seconds, trickle, p) for p in range(4)]
    run = await run_plan(backend, plan(streams), producers, timeout=300)
    p = run.produced
    out: dict[str, Any] = {
        "capacity_per_s": cap,
        "capacity_from": source,
        "seconds": seconds,
        "trickle_per_s": trickle,
    }
    for prio in Priority:
        idx = [i for i, q in enumerate(p.priority) if q == prio]
        waits = [run.waits[i] for i in idx]
        out[f"P{prio}_tasks"] = len(idx)
        out |= _pcts(f"P{prio}_", waits)
        out[f"P{prio}_late"] = sum(is_late(prio, w) for w in waits)
        out[f"P{prio}_late_backend"] = run.late_backend.get(int(prio), 0)
    half = seconds / 2
    p0 = [i for i, q in enumerate(p.priority) if q == 0]
    out |= _pcts("P0_first_half_", [run.waits[i] for i in p0 if p.due[i] < half])
    out |= _pcts("P0_second_half_", [run.waits[i] for i in p0 if p.due[i] >= half])
    during = [s for s in run.samples if s[0] <= p.end]
    if during:
        out["P4_backlog_first"] = during[0][2].get(4, 0)
        out["P4_backlog_at_end"] = during[-1][2].get(4, 0)
    out["P4_backlog_max"] = max((s[2].get(4, 0) for s in run.samples), default=0)
    out["sent_per_s"] = len(p.due) / (p.end - p.t0)
    return out | _calls(run)


# -- 6. tenfold burst --------------------------------------------------------------
async def burst(
    backend: str,
    given: float | None,
    capacity_n: int,
    base_fraction: float,
    burst_s: float,
    calm_s: float,
    producers: int,
    max_tasks: int,
) -> dict[str, Any]:
    """``calm_s`` at ``base_fraction`` of capacity, ``burst_s`` at ten times that,
    ``calm_s`` at the base rate again; at most ``max_tasks`` calls in all (a lower base
    rate if need be: every task's record stays on the shared server until the run
    ends, about 2.4 KB each on Redis)."""
    cap, source = await _capacity(backend, given, capacity_n, 100)
    base = min(base_fraction * cap, max_tasks / (2 * calm_s + 10 * burst_s))
    streams = [
        Stream(0, calm_s, base),
        Stream(calm_s, burst_s, 10 * base),
        Stream(calm_s + burst_s, calm_s, base),
    ]
    run = await run_plan(backend, plan(streams), producers, timeout=300)
    p = run.produced
    phase = {
        "before_": [i for i, d in enumerate(p.due) if d < calm_s],
        "burst_": [i for i, d in enumerate(p.due) if calm_s <= d < calm_s + burst_s],
        "after_": [i for i, d in enumerate(p.due) if d >= calm_s + burst_s],
    }
    out: dict[str, Any] = {
        "capacity_per_s": cap,
        "capacity_from": source,
        "base_per_s": base,
        "base_fraction": base / cap,
        "capped_by_max_tasks": "yes" if base < base_fraction * cap else "no",
        "burst_per_s": 10 * base,
        "burst_s": burst_s,
    }
    for name, idx in phase.items():
        out |= _pcts(name, [run.waits[i] for i in idx])
    burst_idx = phase["burst_"]
    burst_end = max(p.enqueued[i] for i in burst_idx)
    first = min(p.enqueued[i] for i in burst_idx)
    out["burst_sent_per_s"] = len(burst_idx) / max(burst_end - first, TICK)
    out["rise_p99_x"] = out["burst_p99_ms"] / out["before_p99_ms"]
    out["backlog_max"] = max((q for _, q, _ in run.samples), default=0)
    # the backlog is clear when the last call sent during the burst has started
    out["clear_s"] = max(0.0, max(run.starts[i] for i in burst_idx) - burst_end)
    return out | _calls(run)
