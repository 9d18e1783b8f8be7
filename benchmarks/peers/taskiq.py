"""taskiq with taskiq-redis's ``ListQueueBroker``: ``.kiq()`` per task (no bulk API;
1,000 concurrent calls at a time), ``taskiq worker --workers 1 --max-async-tasks C``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from taskiq_redis import ListQueueBroker

import redis

from ._kit import CONFIG, awork, chunks, task_args

broker = ListQueueBroker(CONFIG.redis_url or "redis://localhost", queue_name=CONFIG.queue)


@broker.task(task_name="noop")
async def noop(i: int, data: str | None = None) -> None:
    await awork(i, data)


class Adapter:
    library = "taskiq"
    backend = "redis"
    no_priority = "taskiq-redis's brokers have no message priority (only several queue names)"

    async def open(self) -> None:
        await broker.startup()

    async def enqueue_bulk(self, ids: Sequence[int]) -> None:
        for chunk in chunks(ids):
            await asyncio.gather(*(noop.kiq(*task_args(i)) for i in chunk))

    async def enqueue_one(self, i: int) -> None:
        await noop.kiq(*task_args(i))

    def waiting(self) -> int:
        client = redis.Redis.from_url(CONFIG.redis_url)  # verification only
        try:
            return int(client.llen(CONFIG.queue))
        finally:
            client.close()

    def worker_argv(self) -> list[str]:
        return [
            sys.executable, "-m", "taskiq", "worker", f"{__name__}:broker",
            "--workers", "1", "--max-async-tasks", str(CONFIG.concurrency),
            "--log-level", "WARNING",
        ]  # fmt: skip

    async def close(self) -> None:
        await broker.shutdown()


ADAPTER = Adapter()
