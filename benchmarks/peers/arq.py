"""arq (Redis): ``enqueue_job`` per task (arq has no bulk enqueue; 1,000 concurrent
calls at a time), ``arq.worker.Worker(max_jobs=concurrency)``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func

from ._kit import CONFIG, LEDGER


async def noop(ctx: dict[str, Any], i: int, ts: float | None = None) -> None:
    LEDGER.hit(i, ts)


class Adapter:
    library = "arq"
    backend = "redis"

    def __init__(self) -> None:
        self.pool: ArqRedis | None = None

    async def open(self) -> None:
        self.pool = await create_pool(
            RedisSettings.from_dsn(CONFIG.redis_url), default_queue_name=CONFIG.queue
        )

    async def enqueue_bulk(self, ids: Sequence[int]) -> None:
        assert self.pool
        for start in range(0, len(ids), 1000):
            await asyncio.gather(
                *(self.pool.enqueue_job("noop", i) for i in ids[start : start + 1000])
            )

    async def enqueue_one(self, i: int, ts: float) -> None:
        assert self.pool
        await self.pool.enqueue_job("noop", i, ts)

    async def waiting(self) -> int:
        assert self.pool
        return int(await self.pool.zcard(CONFIG.queue))

    def worker_argv(self) -> list[str]:
        return [sys.executable, "-m", __name__]

    async def close(self) -> None:
        if self.pool:
            await self.pool.aclose()


ADAPTER = Adapter()

if __name__ == "__main__":
    Worker(
        functions=[func(noop, name="noop")],
        redis_settings=RedisSettings.from_dsn(CONFIG.redis_url),
        queue_name=CONFIG.queue,
        max_jobs=CONFIG.concurrency,
    ).run()
