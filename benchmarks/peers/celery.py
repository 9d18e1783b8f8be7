"""Celery with the Redis broker (kombu): ``apply_async`` per task over one producer
(Celery has no bulk publish), ``celery worker --pool threads -c C`` (one process),
no result backend, gossip / mingle / heartbeat off."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from celery import Celery

import redis

from ._kit import CONFIG, task_args, work

app = Celery("bench", broker=CONFIG.redis_url or "redis://")
app.conf.task_default_queue = CONFIG.queue
app.conf.worker_hijack_root_logger = False


@app.task(name="noop", ignore_result=True)
def noop(i: int, data: str | None = None) -> None:
    work(i, data)


class Adapter:
    library = "celery"
    backend = "redis"

    def open(self) -> None:
        pass

    def enqueue_bulk(self, ids: Sequence[int]) -> None:
        with app.producer_or_acquire() as producer:
            for i in ids:
                noop.apply_async(task_args(i), producer=producer)

    def enqueue_one(self, i: int) -> None:
        noop.apply_async(task_args(i))

    def enqueue_prio(self, i: int, high: bool) -> None:
        # kombu's Redis transport: a list per priority step (0, 3, 6, 9), 0 read first
        noop.apply_async(task_args(i), priority=0 if high else 9)

    def waiting(self) -> int:
        client = redis.Redis.from_url(CONFIG.redis_url)  # verification only
        try:  # kombu's Redis transport: one list per queue
            return int(client.llen(CONFIG.queue))
        finally:
            client.close()

    def worker_argv(self, pool: str = "threads", slots: int = CONFIG.concurrency) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", f"{__name__}:app", "worker",
            "--pool", pool, "-c", str(slots), "-Q", CONFIG.queue,
            "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
        ]  # fmt: skip

    def pool_argv(self) -> list[str]:
        return self.worker_argv("prefork", os.cpu_count() or 2)

    def close(self) -> None:
        pass


ADAPTER = Adapter()
