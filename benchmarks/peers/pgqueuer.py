"""pgqueuer (PostgreSQL, psycopg 3 driver): ``Queries.enqueue`` with lists (its bulk
form) in batches of 1,000, ``PgQueuer.run(batch_size=C)`` in one process."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

import psycopg
from pgqueuer import Job, PgQueuer, PsycopgDriver, Queries

from ._kit import CONFIG, awork, chunks, task_args


async def _connect() -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(CONFIG.pg_dsn, autocommit=True)


class Adapter:
    library = "pgqueuer"
    backend = "postgres"

    async def open(self) -> None:
        self.conn = await _connect()
        self.queries = Queries(PsycopgDriver(self.conn))
        if not await self.queries.schema_is_installed():
            await self.queries.install()

    async def enqueue_bulk(self, ids: Sequence[int]) -> None:
        for chunk in chunks(ids):
            payloads = [json.dumps(task_args(i)).encode() for i in chunk]
            await self.queries.enqueue(["noop"] * len(chunk), payloads, [0] * len(chunk))

    batch_api = "Queries.enqueue with lists"

    async def enqueue_batch(self, ids: Sequence[int], high: bool | None) -> None:
        """One ``enqueue`` with lists (the paced scenarios' batches), at the priority of
        ``enqueue_prio`` when ``high`` is given."""
        payloads = [json.dumps(task_args(i)).encode() for i in ids]
        prio = 10 if high else 0
        await self.queries.enqueue(["noop"] * len(ids), payloads, [prio] * len(ids))

    async def enqueue_one(self, i: int) -> None:
        await self.queries.enqueue("noop", json.dumps(task_args(i)).encode())

    async def enqueue_prio(self, i: int, high: bool) -> None:
        payload = json.dumps(task_args(i)).encode()
        await self.queries.enqueue("noop", payload, 10 if high else 0)  # higher runs first

    async def waiting(self) -> int:
        cur = await self.conn.execute("SELECT count(*) FROM pgqueuer WHERE status = 'queued'")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    def worker_argv(self) -> list[str]:
        return [sys.executable, "-m", __name__]

    async def close(self) -> None:
        await self.conn.close()


ADAPTER = Adapter()


async def _worker() -> None:
    pgq = PgQueuer(PsycopgDriver(await _connect()))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        await awork(*json.loads(job.payload or b"[]"))

    await pgq.run(batch_size=CONFIG.concurrency)


if __name__ == "__main__":
    asyncio.run(_worker())
