"""Scenario 8: tasks that do something. Each part pre-enqueues its tasks and ONE
worker (default concurrency 100) drains them, as in the burn-down:

- ``bench.io(0.01)``: ``await asyncio.sleep(0.01)``; the ideal is concurrency / 10 ms
  (10,000/s at 100 slots);
- ``bench.cpu(50)``: 50 ms of CPU (``time.thread_time``) in the worker's process pool
  (one child per core by default); the ideal is cores / 50 ms. The pool's children
  start with the first tasks, inside the timed window;
- ``bench.blob(data, size)`` with ``data`` of 100 B, 10 KB and just under the 1 MiB
  envelope limit: the body checks the length it received. Enqueue rate
  (``enqueue_many``, batches of at most 1,000 calls and about 8 MB), drain rate, and
  the round trip: N / (enqueue time + drain time).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from taskcore import App, State
from taskcore.envelope import DEFAULT_MAX_PAYLOAD

from ._common import drop_scratch, scratch_url
from ._run import enqueue_calls
from .apps import CPU_MS, QUEUE
from .scenarios import run_preloaded

IO_SECONDS = 0.01
# the envelope (id, task name, times, the JSON of the arguments) must stay under the
# limit: 4 KiB of headroom for everything but the string
NEAR_LIMIT = DEFAULT_MAX_PAYLOAD - 4096
SIZES = {"100B": 100, "10KB": 10_000, "1MB": NEAR_LIMIT}


async def _ends(app: App) -> tuple[set[int], list[float]]:
    """The child pids and the sorted end times the ``bench.cpu`` tasks returned."""
    records = await app.list_tasks(queue=QUEUE, state=State.SUCCEEDED, limit=1_000_000)
    results = [json.loads(r.result or b"null") for r in records]
    return {r[0] for r in results}, sorted(r[1] for r in results)


async def _pool_baseline(n: int, cores: int) -> float:
    """Tasks/s of ``n`` bench.cpu calls sent straight to ``anyio.to_process`` (the pool
    taskcore's worker uses) with ``cores`` at a time, children started beforehand:
    what this machine gives right now, without taskcore."""
    import anyio
    import anyio.to_process

    from taskcore import _child

    from .apps import cpu

    limiter = anyio.CapacityLimiter(cores)
    body = cpu.encode_args((CPU_MS,), {})

    async def one() -> None:
        await anyio.to_process.run_sync(
            _child.run_in_child, cpu.fn.__module__, cpu.fn.__qualname__, body, limiter=limiter
        )

    async def batch(k: int) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(k):
                tg.start_soon(one)

    await batch(cores)  # start the children
    t0 = time.perf_counter()
    await batch(n)
    return n / (time.perf_counter() - t0)


def _first_to_last(n: int, res: dict[str, Any]) -> float | None:
    """Tasks/s on the peers' clock (the first body's end to the last's); None when
    fewer than two bodies ran in the measuring process."""
    bodies_s = res.get("bodies_s")
    return n / bodies_s if bodies_s else None


async def _part(
    backend: str, task: str, args: tuple[Any, ...], n: int, concurrency: int, **kw: Any
) -> dict[str, Any]:
    batch = max(1, min(1000, 8 * 2**20 // max(1, len(str(args)))))
    url = scratch_url(backend)
    try:
        return await run_preloaded(
            backend,
            url,
            n,
            concurrency,
            lambda app: enqueue_calls(app, task, args, n, batch),
            **kw,
        )
    finally:
        await drop_scratch(url)


async def realistic(
    backend: str, io_n: int, cpu_n: int, payload_n: dict[str, int], concurrency: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"concurrency": concurrency}
    res = await _part(backend, "bench.io", (IO_SECONDS,), io_n, concurrency)
    ideal = concurrency / IO_SECONDS
    out |= {
        "io_tasks": io_n,
        "io_tasks_per_s": io_n / res["elapsed"],
        "io_first_to_last_per_s": _first_to_last(io_n, res),
        "io_ideal_per_s": ideal,
        "io_ratio_to_ideal": io_n / res["elapsed"] / ideal,
    }
    cores = os.cpu_count() or 2
    res = await _part(
        backend, "bench.cpu", (CPU_MS,), cpu_n, concurrency, in_process=False, inspect=_ends
    )
    ideal = cores / (CPU_MS / 1000)
    pids, ends = res["inspected"]
    # steady state: from the end of the first wave (one task per child, after the
    # children started) to the last end
    wave = min(len(ends) - 1, len(pids))
    steady = (len(ends) - 1 - wave) / (ends[-1] - ends[wave]) if ends[-1] > ends[wave] else 0.0
    out |= {
        "cpu_tasks": cpu_n,
        "cpu_pool_children": len(pids),
        "cpu_tasks_per_s": cpu_n / res["elapsed"],
        "cpu_steady_tasks_per_s": steady,
        "cpu_ideal_per_s": ideal,
        "cpu_ratio_to_ideal": cpu_n / res["elapsed"] / ideal,
        "cpu_steady_ratio_to_ideal": steady / ideal,
    }
    base = await _pool_baseline(cpu_n, cores)
    out["cpu_pool_baseline_per_s"] = base
    out["cpu_steady_ratio_to_baseline"] = steady / base
    for label, size in SIZES.items():
        n = payload_n[label]
        res = await _part(backend, "bench.blob", ("x" * size, size), n, concurrency)
        out |= {
            f"payload_{label}_tasks": n,
            f"payload_{label}_enqueue_per_s": n / res["preload_s"],
            f"payload_{label}_drain_per_s": n / res["elapsed"],
            # the peers' clock: what came before the first body left out
            f"payload_{label}_first_to_last_per_s": _first_to_last(n, res),
            f"payload_{label}_round_trip_per_s": n / (res["preload_s"] + res["elapsed"]),
            f"payload_{label}_round_trip_mb_per_s": n
            * size
            / 2**20
            / (res["preload_s"] + res["elapsed"]),
        }
    return out
