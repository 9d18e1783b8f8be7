"""The benchmark scenarios. Each takes a backend name and sizes and returns one
repeat's figures as a flat dict; ``__main__`` repeats them and takes medians."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil

from taskcore import App

from ._common import BenchError, drop_scratch, percentile, scratch_url, verify_all_succeeded
from ._proc import idle_activity
from ._produce import run as run_producers
from ._produce import send_calls, write_plan
from ._run import drain, enqueue_noops
from .apps import PROBE, QUEUE, URL_ENV, make_app

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
# The worker processes' interpreter: by default this one; the peer suite points it at a
# virtualenv holding only ``taskcore[redis,pg]`` (no test tools, no OpenTelemetry SDK),
# as a user's worker would run, so idle RSS is compared like for like.
WORKER_PYTHON = os.environ.get("TASKCORE_BENCH_PYTHON", sys.executable)


# -- subprocess plumbing ------------------------------------------------------------
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


async def _spawn_worker(
    mode: str, url: str, n: int, concurrency: int, *extra: str, stdin: Any = None
) -> Any:
    return await asyncio.create_subprocess_exec(
        WORKER_PYTHON,
        "-m",
        "benchmarks._worker",
        mode,
        "--url",
        url,
        "--n",
        str(n),
        "--concurrency",
        str(concurrency),
        *extra,
        cwd=ROOT,
        env=_env(),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _result(proc: Any) -> dict[str, Any]:
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"worker process failed ({proc.returncode}): {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- 1. burn-down ---------------------------------------------------------------------
async def asyncio_queue_baseline(n: int) -> float:
    """N items in an ``asyncio.Queue``; a consumer spawns one task per item. Returns the
    seconds from the consumer's start until the last task ran."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    done = asyncio.Event()
    count = 0
    tasks: set[asyncio.Task[None]] = set()

    async def noop(_: int) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    async def consume() -> None:
        while True:
            item = await queue.get()
            task = asyncio.create_task(noop(item))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    t0 = time.perf_counter()
    consumer = asyncio.create_task(consume())
    await done.wait()
    elapsed = time.perf_counter() - t0
    consumer.cancel()
    if count != n:
        raise BenchError(f"baseline ran {count} of {n}")
    return elapsed


async def run_preloaded(
    backend: str,
    url: str,
    n: int,
    concurrency: int,
    preload: Callable[[App], Awaitable[None]],
    in_process: bool = True,
    inspect: Callable[[App], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """``preload(app)`` enqueues ``n`` tasks, then ONE worker drains them: in this
    process on memory, else a worker process. Raises unless all ``n`` succeeded.
    Returns the worker's figures (``elapsed``: worker start to last settle),
    ``preload_s`` and, given ``inspect``, what ``inspect(app)`` returned after the run.
    ``in_process=False``: process-pool tasks (see ``drain``)."""
    async with make_app(url) as app:
        t0 = time.perf_counter()
        await preload(app)
        preload_s = time.perf_counter() - t0
        if backend == "memory":
            res = await drain(app, n, concurrency, 300, in_process)
            if inspect:
                res["inspected"] = await inspect(app)
    if backend != "memory":
        extra = () if in_process else ("--pool",)
        res = await _result(await _spawn_worker("burn", url, n, concurrency, *extra))
        async with make_app(url) as check:  # the parent checks the worker's claim
            await verify_all_succeeded(check, n)
            if inspect:
                res["inspected"] = await inspect(check)
    res["preload_s"] = preload_s
    return res


async def burn_down(backend: str, n: int, concurrency: int) -> dict[str, Any]:
    url = scratch_url(backend)
    try:
        res = await run_preloaded(backend, url, n, concurrency, lambda app: enqueue_noops(app, n))
        enqueue_s = res["preload_s"]
    finally:
        await drop_scratch(url)
    base = await asyncio_queue_baseline(n)
    out: dict[str, Any] = {
        "tasks_per_s": n / res["elapsed"],
        "elapsed_s": res["elapsed"],
        "baseline_tasks_per_s": n / base,
        "ratio_to_baseline": (n / res["elapsed"]) / (n / base),
        "preload_enqueue_s": enqueue_s,
        "worker": "in-process" if backend == "memory" else "subprocess",
    }
    if "client_round_trips" in res:
        out["round_trips_per_task"] = res["client_round_trips"] / n
        out["server_commands_per_task"] = res["server_commands"] / n
        out["server_calls"] = res["server_calls"]
    return out


# -- 2. bulk enqueue --------------------------------------------------------------------
async def bulk_enqueue(backend: str, n: int, singles: int) -> dict[str, Any]:
    url = scratch_url(backend)
    try:
        app = make_app(url)
        async with app:
            noop = app.tasks["bench.noop"]
            await noop.enqueue()  # connect, load scripts, migrate: not part of the figure
            t0 = time.perf_counter()
            await enqueue_noops(app, n, batch=1000)
            bulk = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(singles):
                await noop.enqueue()
            single = time.perf_counter() - t0
            [stats] = await app.stats(["default"])
            stored = sum(stats.states.values())
            if stored != n + singles + 1:
                raise BenchError(f"stored {stored} tasks, expected {n + singles + 1}")
    finally:
        await drop_scratch(url)
    return {
        "bulk_tasks_per_s": n / bulk,
        "single_tasks_per_s": singles / single,
        "single_enqueue_ms": single / singles * 1000,
    }


# -- 3. latency ---------------------------------------------------------------------------
async def serve(
    backend: str,
    app: App,
    url: str,
    count: int,
    produce: Callable[[], Awaitable[T]],
    timeout: float = 30,
    concurrency: int = 100,
) -> tuple[T, dict[int, float]]:
    """Start an idle worker with ``concurrency`` slots (in this process on memory, else
    a ``latency`` worker process), run ``produce()``, which must enqueue
    ``bench.stamp(i)`` for i in 0..count-1, and wait until all ``count`` bodies ran
    (``timeout`` seconds after ``produce()`` returned). Returns what ``produce()``
    returned and each body's wall-clock start by i."""
    if backend == "memory":
        done = asyncio.Event()
        PROBE.reset(count, done.set)
        worker = app.worker(concurrency=concurrency, queues=[QUEUE])
        runner = asyncio.create_task(worker.run())
        await asyncio.sleep(0.5)
        try:
            produced = await produce()
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise BenchError(f"{PROBE.count} of {count} tasks ran") from None
        finally:
            worker.stop()
            await runner
        starts = dict(PROBE.starts)
    else:
        await app.backend.stats([QUEUE])  # migrate / connect before the worker
        proc = await _spawn_worker("latency", url, count, concurrency, "--timeout", "36000")
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if json.loads(line) != "ready":
            raise BenchError(f"worker said {line!r}")
        produced = await produce()
        try:
            res = await asyncio.wait_for(_result(proc), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BenchError(
                f"the worker did not run all {count} tasks within {timeout:g}s of the last enqueue"
            ) from None
        starts = {int(k): v for k, v in res["starts"].items()}
    if len(starts) != count:
        raise BenchError(f"{len(starts)} of {count} stamped tasks ran")
    return produced, starts


async def paced(
    backend: str,
    due: Sequence[float],
    concurrency: int = 100,
    timeout: float = 120,
    producers: int = 1,
    priority: Sequence[int] | None = None,
    procs: int = 0,
    tick: float = 0.0,
) -> tuple[list[float], list[float]]:
    """Enqueues of ``bench.stamp(i)`` at the offsets ``due`` (seconds; a late call goes
    at once, see ``benchmarks._pace.pace``; ``producers`` coroutines) into an idle
    worker (call i at ``priority[i]`` if given): single enqueues, or with ``tick`` one
    ``enqueue_many`` per ``tick`` seconds and priority; from this process, or from
    ``procs`` producer processes (:mod:`benchmarks._produce`; not on memory). Returns,
    by i, the wall clock just before each enqueue call and the body's wall-clock start;
    raises unless every call ran once and succeeded."""
    url = scratch_url(backend)
    try:
        app = make_app(url)
        async with app:
            stamp = app.tasks["bench.stamp"]

            def send(i: int) -> Any:
                if priority is None:
                    return stamp.enqueue(i)
                return stamp.with_options(priority=priority[i]).enqueue(i)

            def send_batch(ids: list[int]) -> Any:
                options = {} if priority is None else {"priority": priority[ids[0]]}
                return app.enqueue_many(stamp, [(i,) for i in ids], **options)

            classes = None if priority is None else [str(p) for p in priority]

            async def produce() -> list[float]:
                if procs <= 0 or backend == "memory":
                    return await send_calls(due, None, producers, tick, send, send_batch, classes)
                with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
                    plan = Path(tmp) / "plan.json"
                    write_plan(plan, due, classes)

                    def argv(part: int) -> list[str]:
                        return [
                            sys.executable, "-m", "benchmarks._producer", "--url", url,
                            "--plan", str(plan), "--part", str(part), "--parts", str(procs),
                            "--producers", str(producers), "--tick", repr(tick),
                        ]  # fmt: skip

                    return await run_producers(argv, procs, len(due), timeout, _env(), ROOT)

            sent, starts = await serve(backend, app, url, len(due), produce, timeout, concurrency)
            await verify_all_succeeded(app, len(due))
    finally:
        await drop_scratch(url)
    return sent, [starts[i] for i in range(len(due))]


async def latency(backend: str, rate: float, seconds: float) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    sent, starts = await paced(backend, [i / rate for i in range(count)])
    lat = [(start - at) * 1000 for at, start in zip(sent, starts, strict=True)]
    return {
        "rate_per_s": rate,
        "count": count,
        "p50_ms": percentile(lat, 50),
        "p95_ms": percentile(lat, 95),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat),
        "worker": "in-process (same event loop)" if backend == "memory" else "subprocess",
    }


# -- 5. RSS over a long run ---------------------------------------------------------------
async def soak_rss(backend: str, n: int, concurrency: int) -> dict[str, Any]:
    """One worker process drains ``n`` no-op tasks; its RSS before the start and after
    every tenth. Growth is measured from the first tenth (connections, caches and
    buffers warm up there) to the end: a leak shows as growth, noise as a few MB."""
    if backend == "memory":
        raise BenchError("soak runs a worker process: use redis or postgres")
    url = scratch_url(backend)
    try:
        async with make_app(url) as app:
            await enqueue_noops(app, n)
        res = await _result(await _spawn_worker("soak", url, n, concurrency))
        async with make_app(url) as check:
            await verify_all_succeeded(check, n)
    finally:
        await drop_scratch(url)
    samples = res["rss_mb"]
    first_tenth = samples[1][1] if len(samples) > 1 else samples[0][1]
    return {
        "tasks": n,
        "rss_start_mb": samples[0][1],
        "rss_after_first_tenth_mb": first_tenth,
        "rss_end_mb": samples[-1][1],
        "growth_mb": samples[-1][1] - first_tenth,
        "tasks_per_s": n / res["elapsed"],
        "samples": samples,
    }


# -- 4. idle RSS ---------------------------------------------------------------------------
async def idle_rss(backend: str, settle_s: float = 2.0, window: float = 0.0) -> dict[str, Any]:
    """RSS of an idle ``taskcore worker`` after ``settle_s``; given a ``window``, then
    its wake-ups and CPU while idle that long (:func:`benchmarks._proc.idle_activity`)."""
    url = scratch_url(backend)
    env = _env()
    env[URL_ENV] = url
    cmd = [WORKER_PYTHON, "-m", "taskcore"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "worker",
            "benchmarks.apps:app",
            "--log-level",
            "WARNING",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.sleep(settle_s)
            if proc.returncode is not None:
                assert proc.stderr is not None  # stderr=PIPE
                raise BenchError(f"worker exited early: {(await proc.stderr.read()).decode()}")
            info = psutil.Process(proc.pid).memory_full_info()
            activity = await idle_activity(proc.pid, window) if window > 0 else {}
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
    finally:
        await drop_scratch(url)
    return {"rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20, **activity}
