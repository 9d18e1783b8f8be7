"""The app and tasks the benchmarks run, importable by worker subprocesses.

``taskcore worker benchmarks.apps:app`` builds :data:`app` from the
``TASKCORE_BENCH_URL`` environment variable (default ``memory://``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from taskcore import App

__all__ = ["PROBE", "QUEUE", "URL_ENV", "Probe", "app", "make_app"]

URL_ENV = "TASKCORE_BENCH_URL"
QUEUE = "default"  # the queue a worker consumes by default: one queue per claim


class Probe:
    """Per-process record of task bodies that ran (the benchmark's proof of work)."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, target: int, on_target: Callable[[], None] | None = None) -> None:
        self.count = 0
        self.target = target
        self.on_target = on_target
        self.starts: dict[int, float] = {}

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target and self.on_target is not None:
            self.on_target()


PROBE = Probe()


def make_app(url: str) -> App:
    """An app with the two benchmark tasks: ``bench.noop()`` and ``bench.stamp(i)``."""
    app = App(url)

    @app.task(name="bench.noop", queue=QUEUE)
    async def noop() -> None:
        PROBE.hit()

    @app.task(name="bench.stamp", queue=QUEUE)
    async def stamp(i: int) -> None:
        # wall clock: the enqueuer may be another process
        PROBE.starts[i] = time.time()
        PROBE.hit()

    return app


app = make_app(os.environ.get(URL_ENV, "memory://"))
