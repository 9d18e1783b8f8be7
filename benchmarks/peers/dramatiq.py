"""Dramatiq with its ``RedisBroker``: ``actor.send`` per task (Dramatiq's ``group``
is a loop of sends), ``dramatiq --processes 1 --threads C`` (the CLI forks the worker
process from a supervisor)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import redis

from ._kit import CONFIG, task_args, work

broker = RedisBroker(url=CONFIG.redis_url or None)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", queue_name=CONFIG.queue)
def noop(i: int, data: str | None = None) -> None:
    work(i, data)


class Adapter:
    library = "dramatiq"
    backend = "redis"
    no_priority = (
        "the Redis broker ignores message priority; the actor's priority "
        "only orders the messages one worker has prefetched"
    )

    def open(self) -> None:
        pass

    def enqueue_bulk(self, ids: Sequence[int]) -> None:
        for i in ids:
            noop.send(*task_args(i))

    def enqueue_one(self, i: int) -> None:
        noop.send(*task_args(i))

    def waiting(self) -> int:
        client = redis.Redis.from_url(CONFIG.redis_url)  # verification only
        try:  # the broker keeps each queued message in "<namespace>:<queue>.msgs"
            return int(client.hlen(f"dramatiq:{CONFIG.queue}.msgs"))
        finally:
            client.close()

    def worker_argv(self, processes: int = 1, threads: int = CONFIG.concurrency) -> list[str]:
        return [
            sys.executable, "-m", "dramatiq", __name__,
            "--processes", str(processes), "--threads", str(threads),
            "--queues", CONFIG.queue,
        ]  # fmt: skip

    def pool_argv(self) -> list[str]:
        return self.worker_argv(os.cpu_count() or 2, 1)

    def close(self) -> None:
        pass


ADAPTER = Adapter()
