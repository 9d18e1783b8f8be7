"""SAQ, shared by the Redis and the PostgreSQL adapter: ``Queue.enqueue`` per task (no
bulk API; 1,000 concurrent calls at a time), ``saq.Worker(concurrency=...)``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from saq import Queue, Worker

from ._kit import CONFIG, awork, chunks, task_kwargs


async def noop(ctx: dict[str, Any], *, i: int, data: str | None = None) -> None:
    await awork(i, data)


class SaqAdapter:
    library = "saq"

    def __init__(self, backend: str, module: str) -> None:
        self.backend = backend
        self.module = module
        self.queue: Queue | None = None
        if backend == "redis":
            self.no_priority = "Job.priority is honoured by SAQ's PostgreSQL queue only"

    def url(self) -> str:
        return CONFIG.redis_url if self.backend == "redis" else CONFIG.pg_dsn

    async def open(self) -> None:
        self.queue = Queue.from_url(self.url(), name=CONFIG.queue)
        await self.queue.connect()

    async def enqueue_bulk(self, ids: Sequence[int]) -> None:
        assert self.queue
        for chunk in chunks(ids):
            await asyncio.gather(*(self.queue.enqueue("noop", **task_kwargs(i)) for i in chunk))

    async def enqueue_one(self, i: int) -> None:
        assert self.queue
        await self.queue.enqueue("noop", **task_kwargs(i))

    async def enqueue_prio(self, i: int, high: bool) -> None:
        """PostgreSQL only (``Job.priority``, 0..32767, lower runs first)."""
        assert self.queue and self.backend == "postgres"
        await self.queue.enqueue("noop", priority=0 if high else 32767, **task_kwargs(i))

    async def waiting(self) -> int:
        assert self.queue
        return int(await self.queue.count("queued"))

    def worker_argv(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    async def close(self) -> None:
        if self.queue:
            await self.queue.disconnect()


def run_worker(backend: str) -> None:
    async def main() -> None:
        url = CONFIG.redis_url if backend == "redis" else CONFIG.pg_dsn
        queue = Queue.from_url(url, name=CONFIG.queue)
        await queue.connect()  # as saq's own CLI does before start()
        await Worker(queue, functions=[noop], concurrency=CONFIG.concurrency).start()

    asyncio.run(main())
