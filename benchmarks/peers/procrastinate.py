"""Procrastinate (PostgreSQL, psycopg 3): ``Task.batch_defer_async`` in batches of
1,000, ``App.run_worker_async(concurrency=C)`` in one process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import psycopg
from procrastinate import App, PsycopgConnector

from ._kit import CONFIG, awork, chunks, task_kwargs

app = App(connector=PsycopgConnector(conninfo=CONFIG.pg_dsn))


@app.task(name="noop", queue=CONFIG.queue)
async def noop(i: int, data: str | None = None) -> None:
    await awork(i, data)


class Adapter:
    library = "procrastinate"
    backend = "postgres"

    async def open(self) -> None:
        await app.open_async()
        await app.schema_manager.apply_schema_async()

    async def open_producer(self) -> None:
        """A producer process: the driver has applied the schema (applying it from
        several processes at once fails)."""
        await app.open_async()

    async def enqueue_bulk(self, ids: Sequence[int]) -> None:
        for chunk in chunks(ids):
            await noop.batch_defer_async(*(task_kwargs(i) for i in chunk))

    batch_api = "Task.batch_defer_async"

    async def enqueue_batch(self, ids: Sequence[int], high: bool | None) -> None:
        """One ``batch_defer_async`` (the paced scenarios' batches), at the priority
        of ``enqueue_prio`` when ``high`` is given."""
        deferrer = noop if high is None else noop.configure(priority=10 if high else 0)
        await deferrer.batch_defer_async(*(task_kwargs(i) for i in ids))

    async def enqueue_one(self, i: int) -> None:
        await noop.defer_async(**task_kwargs(i))

    async def enqueue_prio(self, i: int, high: bool) -> None:
        # higher runs first
        await noop.configure(priority=10 if high else 0).defer_async(**task_kwargs(i))

    async def waiting(self) -> int:
        async with await psycopg.AsyncConnection.connect(CONFIG.pg_dsn) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    def worker_argv(self) -> list[str]:
        return [sys.executable, "-m", __name__]

    async def close(self) -> None:
        await app.close_async()


ADAPTER = Adapter()


async def _worker() -> None:
    async with app.open_async():
        await app.run_worker_async(queues=[CONFIG.queue], concurrency=CONFIG.concurrency)


if __name__ == "__main__":
    asyncio.run(_worker())
