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

from ._kit import CONFIG, awork, chunks, task_args


async def noop(ctx: dict[str, Any], i: int, data: str | None = None) -> None:
    await awork(i, data)


class Adapter:
    library = "arq"
    backend = "redis"
    no_priority = (
        "no job priority in arq's public API "
        "(one Redis sorted set per queue, ordered by enqueue time)"
    )

    def __init__(self) -> None:
        self.pool: ArqRedis | None = None

    async def open(self) -> None:
        self.pool = await create_pool(
            RedisSettings.from_dsn(CONFIG.redis_url), default_queue_name=CONFIG.queue
        )

    async def enqueue_bulk(self, ids: Sequence[int]) -> None:
        assert self.pool
        for chunk in chunks(ids):
            await asyncio.gather(*(self.pool.enqueue_job("noop", *task_args(i)) for i in chunk))

    async def enqueue_one(self, i: int) -> None:
        assert self.pool
        await self.pool.enqueue_job("noop", *task_args(i))

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
