"""Scenario 7: 1, 2 and 4 worker processes drain the same pre-enqueued no-ops.

Each worker process (``_worker share``) connects, prints ``ready`` and waits; the
parent starts all of them with one line on stdin, polls ``stats(finished=False)``
every 50 ms until nothing is queued or running, then stops them with a second line.
Elapsed = the last accepted settle of any worker minus the first worker's start (wall
clock, same host). Server
CPU over the same interval: Redis ``INFO cpu`` (``used_cpu_sys`` + ``used_cpu_user``,
the whole server: other clients of a shared Redis add to it); PostgreSQL: user +
system CPU of the backend processes serving the workers (found in
``pg_stat_activity`` by an ``application_name`` unique to the run, read with psutil),
so other databases' clients are not counted.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psutil

from taskcore import State

from ._common import BenchError, drop_scratch, scratch_url, verify_all_succeeded
from ._run import enqueue_noops
from .apps import QUEUE, make_app
from .scenarios import _result, _spawn_worker

POLL = 0.05
_WAITING = (State.SCHEDULED, State.WAITING, State.QUEUED, State.RUNNING, State.RETRYING)


async def _redis_cpu(url: str) -> float:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url.partition("?")[0])
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _pg_backend_cpu(url: str, application_name: str) -> dict[int, float]:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url.partition("?")[0]) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
        )
        pids = [row[0] for row in await cur.fetchall()]
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[pid] = t.user + t.system
    return out


async def _one(backend: str, n: int, procs: int, concurrency: int) -> dict[str, Any]:
    url = scratch_url(backend)
    tag = url.rpartition("=")[2]
    worker_url = f"{url}&application_name={tag}" if backend == "postgres" else url
    workers: list[Any] = []
    try:
        async with make_app(url) as app:
            await enqueue_noops(app, n)
            spawns = (
                _spawn_worker("share", worker_url, n, concurrency, stdin=asyncio.subprocess.PIPE)
                for _ in range(procs)
            )
            workers.extend(await asyncio.gather(*spawns))
            for w in workers:
                line = await asyncio.wait_for(w.stdout.readline(), 60)
                if line.strip() != b'"ready"':
                    raise BenchError(f"worker said {line!r}")
            cpu0 = await _redis_cpu(url) if backend == "redis" else 0.0
            pg0 = await _pg_backend_cpu(url, tag) if backend == "postgres" else {}

            def cpu(w: Any) -> float:
                t = psutil.Process(w.pid).cpu_times()
                return float(t.user + t.system)

            worker_cpu = -sum(cpu(w) for w in workers)
            for w in workers:
                w.stdin.write(b"go\n")
            await asyncio.gather(*(w.stdin.drain() for w in workers))
            deadline = time.monotonic() + 300
            while True:
                # finished=False: no count of succeeded rows every 50 ms on PostgreSQL;
                # nothing queued or running means every outcome is stored (checked below)
                [st] = await app.backend.stats([QUEUE], finished=False)
                if not any(st.states.get(s, 0) for s in _WAITING):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{procs} workers did not finish: {dict(st.states)}")
                await asyncio.sleep(POLL)
            if backend == "redis":
                server_cpu = await _redis_cpu(url) - cpu0
            else:
                pg1 = await _pg_backend_cpu(url, tag)
                server_cpu = sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items())
            worker_cpu += sum(cpu(w) for w in workers)
            for w in workers:
                w.stdin.write(b"stop\n")
            results = [await _result(w) for w in workers]
            workers.clear()
            await verify_all_succeeded(app, n)
    finally:
        for w in workers:  # a failed run: do not leave workers behind
            if w.returncode is None:
                w.kill()
                await w.wait()
        await drop_scratch(url)
    ran = sum(r["ran"] for r in results)
    if ran != n:
        raise BenchError(f"{ran} task bodies ran in {procs} workers, expected {n}")
    elapsed = max(r["last_settle"] for r in results) - min(r["go"] for r in results)
    return {
        "tasks_per_s": n / elapsed,
        "elapsed_s": elapsed,
        "server_cpu_s": server_cpu,
        "server_cpu_cores": server_cpu / elapsed,
        "worker_cpu_s": worker_cpu,
        "tasks_per_worker": [r["ran"] for r in results],
    }


async def scaling(
    backend: str, n: int, concurrency: int, counts: tuple[int, ...] = (1, 2, 4)
) -> dict[str, Any]:
    if backend == "memory":
        raise BenchError("scaling needs a shared backend: use redis or postgres")
    out: dict[str, Any] = {"n": n}
    base = 0.0
    for procs in counts:
        r = await _one(backend, n, procs, concurrency)
        base = base or r["tasks_per_s"]
        out[f"tasks_per_s_{procs}w"] = r["tasks_per_s"]
        out[f"speedup_{procs}w"] = r["tasks_per_s"] / base
        out[f"server_cpu_cores_{procs}w"] = r["server_cpu_cores"]
        out[f"server_cpu_ms_per_1k_{procs}w"] = r["server_cpu_s"] / n * 1e6
        out[f"worker_cpu_ms_per_1k_{procs}w"] = r["worker_cpu_s"] / n * 1e6
        out[f"split_{procs}w"] = "/".join(str(k) for k in r["tasks_per_worker"])
    return out
