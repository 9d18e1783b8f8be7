"""The app the fault suite's worker processes run.

Every task records its run in a ledger kept on the shared test server (a Redis hash
counting runs per task number, or a Postgres table with a row per run), never on the
server a test breaks, so the ledger is the impartial witness of what ran. Settings
come from the environment (see :mod:`tests.faults.harness`).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

import anyio

from taskcore import App, RetryPolicy

URL = os.environ.get("TASKCORE_FAULT_URL", "memory://")
LEDGER_URL = os.environ.get("TASKCORE_FAULT_LEDGER_URL", URL.split("?")[0])
LEDGER = os.environ.get("TASKCORE_FAULT_LEDGER", "ledger")
ON_REDIS = LEDGER_URL.startswith("redis")

# the oddest queue and task names the name rules allow (printable, no whitespace)
ODD_QUEUE = "q:{odd}/ü*?[x]"
ODD_TASK = "tâche/{odd}:*?[0]\\"

app = App(URL)
_client: Any = None
_sync_client: Any = None


async def _ledger() -> Any:
    global _client
    if _client is None:
        if ON_REDIS:
            import redis.asyncio as aioredis

            _client = aioredis.Redis.from_url(LEDGER_URL)
        else:
            import psycopg

            _client = await psycopg.AsyncConnection.connect(LEDGER_URL, autocommit=True)
    return _client


async def _record(n: int) -> None:
    client = await _ledger()
    if ON_REDIS:
        await client.hincrby(LEDGER, str(n), 1)
    else:
        await client.execute(f"INSERT INTO {LEDGER} (n) VALUES (%s)", (n,))


def _sync_ledger() -> Any:
    """The ledger from a process-pool child (one connection per child process)."""
    global _sync_client
    if _sync_client is None:
        if ON_REDIS:
            import redis

            _sync_client = redis.Redis.from_url(LEDGER_URL)
        else:
            import psycopg

            _sync_client = psycopg.connect(LEDGER_URL, autocommit=True)
    return _sync_client


@app.task(timeout=30)
async def work(n: int, slow: bool = True) -> int:
    """A fast task, or one that takes 50 ms."""
    if slow:
        await anyio.sleep(0.05)
    await _record(n)
    return n


@app.task(timeout=60)
async def long_job(seconds: float) -> str:
    """Records (pid, start time) before working, so a test can kill the process that
    runs it and time the re-run elsewhere."""
    client = await _ledger()
    mark = f"{os.getpid()}:{time.time()}"
    if ON_REDIS:
        await client.rpush(f"{LEDGER}:starts", mark)
    else:
        await client.execute(f"INSERT INTO {LEDGER}_starts (mark) VALUES (%s)", (mark,))
    await anyio.sleep(seconds)
    return mark


@app.task(complexity="complex", retry=RetryPolicy.fixed(retries=2, delay=0.1), timeout=30)
def crashy(n: int, how: str, crashes: int) -> int:
    """Runs in the process pool: its first ``crashes`` runs kill the child process,
    with ``os._exit`` (``how="exit"``) or a segfault (``how="segv"``)."""
    client = _sync_ledger()
    if ON_REDIS:
        tries = int(client.hincrby(f"{LEDGER}:tries", str(n), 1))
    else:
        client.execute(f"INSERT INTO {LEDGER}_tries (n) VALUES (%s)", (n,))
        tries = client.execute(
            f"SELECT count(*) FROM {LEDGER}_tries WHERE n = %s", (n,)
        ).fetchone()[0]
    if tries <= crashes:
        if how == "exit":
            os._exit(3)
        ctypes.string_at(0)  # SIGSEGV
    if ON_REDIS:
        client.hincrby(LEDGER, str(n), 1)
    else:
        client.execute(f"INSERT INTO {LEDGER} (n) VALUES (%s)", (n,))
    return os.getpid()


@app.task(rate_limit="1000/s")
async def limited(n: int) -> int:
    """Rate-limited: each run first takes a token from the backend."""
    await _record(n)
    return n


@app.task
async def store(n: int, blob: str) -> int:
    """Carries a payload of the caller's size."""
    await _record(n)
    return len(blob)


@app.task
async def unserialisable() -> Any:
    return threading.Lock()


@app.task(name=ODD_TASK, queue=ODD_QUEUE)
async def oddly_named(n: int) -> int:
    await _record(n)
    return n
