"""Postgres claim latency on an empty table vs one holding many finished rows.

Reuses ``tests/pg/bench_pg.py`` (its ``fill_finished`` generates the rows server-side)
in a scratch schema of our own, then times ``claim(limit=1)`` + ``settle`` and
``claim(limit=100)`` + ``settle`` through the backend.
"""

from __future__ import annotations

import time
from typing import Any

from taskcore.backend import Outcome, OutcomeKind
from taskcore.clock import SystemClock
from taskcore.testing import make_message

from ._common import PG_URL, drop_scratch, percentile, scratch_url


async def _claims(backend: Any, limit: int, rounds: int) -> list[float]:
    clock = backend.clock
    await backend.enqueue([make_message(clock, queue="q") for _ in range(limit * rounds)])
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        leases = await backend.claim(["q"], limit, 60, "bench")
        times.append((time.perf_counter() - t0) * 1000)
        if len(leases) != limit:
            raise RuntimeError(f"claimed {len(leases)} of {limit}")
        await backend.settle(
            [
                Outcome(x.message.id, x.token, OutcomeKind.SUCCEEDED, clock.now(), b"1")
                for x in leases
            ]
        )
    return times


async def claim_latency(finished: int, rounds: int = 200) -> dict[str, Any]:
    from tests.pg import bench_pg

    from taskcore_pg import PostgresBackend

    url = scratch_url("postgres")
    schema = url.rpartition("schema=")[2]
    out: dict[str, Any] = {"finished_rows": finished}
    try:
        async with PostgresBackend(PG_URL, clock=SystemClock(), schema=schema) as backend:
            for label in ("empty", "full"):
                if label == "full":
                    bench_pg.SCHEMA = schema  # its helpers read the module's schema name
                    await bench_pg.fill_finished(PG_URL, finished)
                one = await _claims(backend, 1, rounds)
                many = await _claims(backend, 100, max(10, rounds // 10))
                out[f"{label}_limit1_p50_ms"] = percentile(one, 50)
                out[f"{label}_limit1_p95_ms"] = percentile(one, 95)
                out[f"{label}_limit100_p50_ms"] = percentile(many, 50)
                out[f"{label}_limit100_p95_ms"] = percentile(many, 95)
    finally:
        await drop_scratch(url)
    return out
