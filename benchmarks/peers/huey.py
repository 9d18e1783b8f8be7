"""Huey (``RedisHuey``): calling the task enqueues it (Huey has no bulk enqueue:
``Task.map`` is a loop of single enqueues), ``huey_consumer -k thread -w C``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from huey import PriorityRedisHuey, RedisHuey

from ._kit import CONFIG, task_args, work

# the priority scenario: Huey honours ``priority=`` only with its priority storage
huey = (PriorityRedisHuey if CONFIG.priority else RedisHuey)(
    CONFIG.queue, url=CONFIG.redis_url or None
)


@huey.task()
def noop(i: int, data: str | None = None) -> None:
    work(i, data)


class Adapter:
    library = "huey"
    backend = "redis"

    def open(self) -> None:
        pass

    def enqueue_bulk(self, ids: Sequence[int]) -> None:
        noop.map([task_args(i) for i in ids])

    def enqueue_one(self, i: int) -> None:
        noop(*task_args(i))

    def enqueue_prio(self, i: int, high: bool) -> None:
        noop(*task_args(i), priority=10 if high else 0)  # higher runs first

    def waiting(self) -> int:
        return int(huey.pending_count())

    def worker_argv(self, kind: str = "thread", workers: int = CONFIG.concurrency) -> list[str]:
        return [
            sys.executable, "-m", "huey.bin.huey_consumer", f"{__name__}.huey",
            "-k", kind, "-w", str(workers), "-q",
        ]  # fmt: skip

    def pool_argv(self) -> list[str]:
        return self.worker_argv("process", os.cpu_count() or 2)

    def close(self) -> None:
        pass


ADAPTER = Adapter()
