"""taskiq with taskiq-redis's ``ListQueueBroker``: ``.kiq()`` per task (no bulk API;
1,000 concurrent calls at a time), ``taskiq worker --workers 1 --max-async-tasks C``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from taskiq_redis import ListQueueBroker

import redis

from ._kit import CONFIG, LEDGER

broker = ListQueueBroker(CONFIG.redis_url or "redis://localhost", queue_name=CONFIG.queue)


@broker.task(task_name="noop")
async def noop(i: int, ts: float | None = None) -> None:
    LEDGER.hit(i, ts)


class Adapter:
    library = "taskiq"
    backend = "redis"

    async def open(self) -> None:
        await broker.startup()

    async def enqueue_bulk(self, ids: Sequence[int]) -> None:
        for start in range(0, len(ids), 1000):
            await asyncio.gather(*(noop.kiq(i) for i in ids[start : start + 1000]))

    async def enqueue_one(self, i: int, ts: float) -> None:
        await noop.kiq(i, ts)

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
