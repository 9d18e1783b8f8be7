"""The app the crash test's worker processes run: each task records its run in a ledger
kept in the backend's own server (a Redis hash, or a Postgres table)."""

from __future__ import annotations

import os
from typing import Any

import anyio

from taskcore import App

URL = os.environ.get("TASKCORE_FAULT_URL", "memory://")
LEDGER = os.environ.get("TASKCORE_FAULT_LEDGER", "ledger")

app = App(URL)
_client: Any = None


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
async def work(n: int) -> int:
    await anyio.sleep(0.05)
    client = await _ledger()
    if URL.startswith("redis"):
        await client.hincrby(LEDGER, str(n), 1)
    else:
        await client.execute(f"INSERT INTO {LEDGER} (n) VALUES (%s)", (n,))  # type: ignore[arg-type]
    return n


@app.task(timeout=60)
async def long_job(seconds: float) -> str:
    """Records (pid, start time) before working, so a test can kill the process that
    runs it and time the re-run elsewhere."""
    import time

    client = await _ledger()
    mark = f"{os.getpid()}:{time.time()}"
    if URL.startswith("redis"):
        await client.rpush(f"{LEDGER}:starts", mark)
    else:
        await client.execute(f"INSERT INTO {LEDGER}_starts (mark) VALUES (%s)", (mark,))  # type: ignore[arg-type]
    await anyio.sleep(seconds)
    return mark
