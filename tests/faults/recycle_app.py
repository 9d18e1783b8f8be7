"""The app the recycling test's worker processes run. ``leak`` keeps what it allocates
(a leaky task) and records its run in a ledger kept in the backend's own server: task
number, process id and the process's resident memory when the run started."""

from __future__ import annotations

import os
from typing import Any

import anyio
import psutil

from taskcore import App

URL = os.environ.get("TASKCORE_FAULT_URL", "memory://")
LEDGER = os.environ.get("TASKCORE_FAULT_LEDGER", "ledger")

app = App(URL)
_client: Any = None
_leaked: list[bytes] = []


async def _ledger() -> Any:
    global _client
    if _client is None:
        if URL.startswith("redis"):
            import redis.asyncio as aioredis

            _client = aioredis.Redis.from_url(URL.split("?")[0])
        else:
            import psycopg

            _client = await psycopg.AsyncConnection.connect(URL.split("?")[0], autocommit=True)
    return _client


@app.task(timeout=30)
async def leak(n: int, kib: int, seconds: float = 0.0) -> int:
    rss = psutil.Process().memory_info().rss
    _leaked.append(b"\x01" * (kib * 1024))  # filled, so the pages are resident
    await anyio.sleep(seconds)
    client = await _ledger()
    row = f"{n}:{os.getpid()}:{rss}"
    if URL.startswith("redis"):
        await client.rpush(LEDGER, row)
    else:
        await client.execute(f"INSERT INTO {LEDGER} (row) VALUES (%s)", (row,))  # type: ignore[arg-type]
    return n


@app.task(timeout=30)
async def crash_once(marker: str) -> str:
    """Kills its worker process the first time it runs (the marker is not yet in the
    ledger), as a segfaulting extension would; runs normally the second time."""
    client = await _ledger()
    if URL.startswith("redis"):
        first = await client.setnx(f"{LEDGER}:{marker}", os.getpid())
    else:
        cur = await client.execute(
            f"INSERT INTO {LEDGER}_markers (marker) VALUES (%s) ON CONFLICT DO NOTHING",  # type: ignore[arg-type]
            (marker,),
        )
        first = cur.rowcount == 1
    if first:
        os._exit(3)
    return marker
