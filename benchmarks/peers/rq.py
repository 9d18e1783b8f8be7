"""RQ: ``Queue.enqueue_many`` (one pipeline per 1,000 jobs), ``rq worker`` with
``SimpleWorker`` (runs jobs in the worker process, one at a time: RQ has no
in-process concurrency; its default ``Worker`` forks a child per job)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rq import Queue

from redis import Redis

from ._kit import CONFIG, chunks, task_args, work


def noop(i: int, data: str | None = None) -> None:
    work(i, data)


class Adapter:
    library = "rq"
    backend = "redis"
    no_priority = (
        "no job priority in RQ's public API (only the order of the queues a worker listens to)"
    )

    def open(self) -> None:
        self.queue = Queue(CONFIG.queue, connection=Redis.from_url(CONFIG.redis_url))

    def enqueue_bulk(self, ids: Sequence[int]) -> None:
        for chunk in chunks(ids):
            self.queue.enqueue_many([Queue.prepare_data(noop, task_args(i)) for i in chunk])

    batch_api = "Queue.enqueue_many"

    def enqueue_batch(self, ids: Sequence[int], high: bool | None) -> None:
        """One pipelined ``enqueue_many`` (the paced scenarios' batches; no priority)."""
        self.queue.enqueue_many([Queue.prepare_data(noop, task_args(i)) for i in ids])

    def enqueue_one(self, i: int) -> None:
        self.queue.enqueue(noop, *task_args(i))

    def waiting(self) -> int:
        return int(self.queue.count)

    def worker_argv(self) -> list[str]:
        return [
            sys.executable, "-m", "rq.cli", "worker", "--url", CONFIG.redis_url,
            "--worker-class", "rq.worker.SimpleWorker", "--quiet", CONFIG.queue,
        ]  # fmt: skip

    def close(self) -> None:
        self.queue.connection.close()


ADAPTER = Adapter()
