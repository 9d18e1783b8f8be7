"""Helpers for the Redis service tests (prefixes, key cleanup, woken waits; the TCP proxy is shared
with the fault suite and lives in tests/faults/proxy.py)."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from tests.faults.proxy import TcpProxy

import redis as redis_sync
from taskcore.backend import Backend

__all__ = ["TcpProxy", "delete_prefix", "new_prefix", "prefix_keys", "registered", "woken_by"]


def new_prefix() -> str:
    return f"tctest-{uuid.uuid4().hex[:12]}"


def prefix_keys(client: redis_sync.Redis, prefix: str) -> list[bytes]:
    """Every key a backend with ``prefix`` created."""
    keys: list[bytes] = []
    for pattern in (f"{{{prefix}:*", f"{{{prefix}}}:*", f"{{{prefix}|*"):
        keys += client.scan_iter(match=pattern, count=1000)
    return keys


def delete_prefix(client: redis_sync.Redis, prefix: str) -> int:
    """Delete every key a backend with ``prefix`` created; returns how many."""
    keys = prefix_keys(client, prefix)
    n = 0
    for i in range(0, len(keys), 1000):
        n += int(client.delete(*keys[i : i + 1000]))
    return n


async def woken_by(
    backend: Backend, wake: Callable[[], Awaitable[object] | None], queues: Sequence[str] = ("q",)
) -> None:
    """``backend.wait(queues)`` blocks until ``wake()`` (called once the wait is blocked)
    wakes it; fails after 5 s. The wait's own timeout (30 s) is far beyond that."""
    woke = anyio.Event()

    async def waiter() -> None:
        await backend.wait(queues, 30)
        woke.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            result = wake()
            if inspect.isawaitable(result):
                await result
            await woke.wait()


async def registered(client: Any, n: int = 1, queue: str = "q") -> None:
    """Until ``n`` idle waiters are registered in ``queue`` (their blocking round trip
    has reached the server), read through the RedisBackend ``client``."""
    key = client.keys.waiters(queue)
    while await client._r.zcard(key) < n:  # each look is a round trip: no busy loop
        pass
