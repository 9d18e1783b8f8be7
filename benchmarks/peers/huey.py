"""Huey (``RedisHuey``): calling the task enqueues it (Huey has no bulk enqueue:
``Task.map`` is a loop of single enqueues), ``huey_consumer -k thread -w C``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from huey import RedisHuey

from ._kit import CONFIG, LEDGER

huey = RedisHuey(CONFIG.queue, url=CONFIG.redis_url or None)


@huey.task()
def noop(i: int, ts: float | None = None) -> None:
    LEDGER.hit(i, ts)


class Adapter:
    library = "huey"
    backend = "redis"

    def open(self) -> None:
        pass

    def enqueue_bulk(self, ids: Sequence[int]) -> None:
        noop.map(ids)

    def enqueue_one(self, i: int, ts: float) -> None:
        noop(i, ts)

    def waiting(self) -> int:
        return int(huey.pending_count())

    def worker_argv(self) -> list[str]:
        return [
            sys.executable, "-m", "huey.bin.huey_consumer", f"{__name__}.huey",
            "-k", "thread", "-w", str(CONFIG.concurrency), "-q",
        ]  # fmt: skip

    def close(self) -> None:
        pass


ADAPTER = Adapter()
