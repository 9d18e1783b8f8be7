"""Shared helpers: backend URLs, scratch namespaces, proof of completion, statistics."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from taskcore import App, State

from .apps import QUEUE, make_app

REDIS_URL = os.environ.get("TASKCORE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("TASKCORE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("memory", "redis", "postgres")


def worker_options() -> dict[str, Any]:
    """Worker options every benchmark worker takes: ``TASKCORE_BENCH_PREFETCH`` (N or
    ``auto``) sets ``prefetch``; unset, the library's default (no prefetch)."""
    value = os.environ.get("TASKCORE_BENCH_PREFETCH", "")
    if not value:
        return {}
    return {"prefetch": value if value == "auto" else int(value)}


def worker_queues() -> list[str]:
    """The queues a benchmark worker process waits on: the tasks' queue, after
    ``TASKCORE_BENCH_IDLE_QUEUES`` (N) queues that stay empty (a worker on several
    queues, whose work comes into its last); unset, the tasks' queue only."""
    n = int(os.environ.get("TASKCORE_BENCH_IDLE_QUEUES", "0") or 0)
    return [*(f"idle{i}" for i in range(1, n + 1)), QUEUE]


class BenchError(Exception):
    """A run that cannot be trusted (a task did not run, a worker failed)."""


def scratch_url(backend: str) -> str:
    """A URL with a fresh key prefix / schema, so runs never see each other's tasks."""
    tag = f"tcbench_{os.getpid()}_{os.urandom(3).hex()}"
    if backend == "memory":
        return "memory://"
    if backend == "redis":
        return f"{REDIS_URL}?prefix={tag}"
    if backend == "postgres":
        return f"{PG_URL}?schema={tag}"
    raise ValueError(f"unknown backend {backend!r}")


async def drop_scratch(url: str) -> None:
    """Delete what a run left in Redis (keys of the prefix) or PostgreSQL (the schema)."""
    base, _, query = url.partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    if url.startswith("redis"):
        import redis.asyncio as aioredis

        prefix = params["prefix"]
        client = aioredis.Redis.from_url(base)
        try:
            batch: list[Any] = []
            async for key in client.scan_iter(match=f"{{{prefix}*", count=5000):
                batch.append(key)
                if len(batch) >= 5000:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)
        finally:
            await client.aclose()
    elif url.startswith("postgres"):
        import psycopg

        async with await psycopg.AsyncConnection.connect(base, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{params["schema"]}" CASCADE')


def count_settles(app: App, on_settled: Callable[[int], None]) -> None:
    """Wrap the backend's ``settle`` to report every accepted outcome (cheap: once per
    batch), and ``claim``, whose carried outcomes count once the claim returns (it does
    not report refusals: a refused one is caught by :func:`verify_all_succeeded`)."""
    backend = app.backend
    settle: Callable[[Sequence[Any]], Awaitable[list[bool]]] = backend.settle
    claim: Callable[..., Awaitable[list[Any]]] = backend.claim

    inside_claim: ContextVar[bool] = ContextVar("inside_claim", default=False)

    async def counting(outcomes: Sequence[Any]) -> list[bool]:
        accepted = await settle(outcomes)
        if not inside_claim.get():  # a claim that settles through settle() counts once
            on_settled(sum(accepted))
        return accepted

    async def carrying(*args: Any, settle: Sequence[Any] = (), **kwargs: Any) -> list[Any]:
        token = inside_claim.set(True)
        try:
            leases = await claim(*args, settle=settle, **kwargs)
        finally:
            inside_claim.reset(token)
        if settle:
            on_settled(len(settle))
        return leases

    backend.settle = counting  # type: ignore[method-assign]
    backend.claim = carrying  # type: ignore[method-assign]


async def verify_all_succeeded(app: App, n: int) -> None:
    """Raise unless exactly ``n`` tasks succeeded and none is anywhere else."""
    [stats] = await app.stats([QUEUE])
    states = {s: c for s, c in stats.states.items() if c}
    if states != {State.SUCCEEDED: n}:
        raise BenchError(f"expected {n} succeeded tasks, the backend counts {states}")


async def create_scratch(url: str) -> None:
    """Open the benchmark app once on ``url``, so that its schema (migrated) or scripts
    exist before several processes open it at once."""
    async with make_app(url):
        pass


def listing(values: Sequence[float], fmt: str) -> str:
    """The repeats of a figure, for a report line: ``1,234, 1,301``."""
    return ", ".join(format(v, fmt) for v in values)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]
