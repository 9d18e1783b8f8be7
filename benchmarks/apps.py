"""The app and tasks the benchmarks run, importable by worker subprocesses.

``taskcore worker benchmarks.apps:app`` builds :data:`app` from the
``TASKCORE_BENCH_URL`` environment variable (default ``memory://``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from taskcore import App

__all__ = ["CPU_MS", "PROBE", "QUEUE", "URL_ENV", "Probe", "app", "cpu", "make_app"]

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
        # the first and the last body's end (perf_counter): the peers' clock
        self.first = self.last = 0.0

    def hit(self) -> None:
        self.last = time.perf_counter()
        if not self.count:
            self.first = self.last
        self.count += 1
        if self.count == self.target and self.on_target is not None:
            self.on_target()


PROBE = Probe()

CPU_MS = 50.0  # bench.cpu's default busy time
# The process-pool child imports the task named by the function's module and qualname
# (``benchmarks.apps.cpu``) and uses only its argument decoding and result encoding:
# a codec-only app holds it; make_app registers the same function for the workers.
_POOL_APP = App()


@_POOL_APP.task(name="bench.cpu", pool="process")
def cpu(ms: float = CPU_MS) -> tuple[int, float]:
    """Burn ``ms`` of CPU in the process pool; returns the child's pid and the wall
    clock at the end."""
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass
    return os.getpid(), time.time()


def make_app(url: str) -> App:
    """An app with the benchmark tasks: ``bench.noop()``, ``bench.stamp(i)``,
    ``bench.io(seconds)``, ``bench.blob(data, size)`` and ``bench.cpu(ms)``."""
    app = App(url)

    @app.task(name="bench.noop", queue=QUEUE)
    async def noop() -> None:
        PROBE.hit()

    @app.task(name="bench.stamp", queue=QUEUE)
    async def stamp(i: int) -> None:
        # wall clock: the enqueuer may be another process
        PROBE.starts[i] = time.time()
        PROBE.hit()

    @app.task(name="bench.io", queue=QUEUE)
    async def io(seconds: float) -> None:
        await asyncio.sleep(seconds)
        PROBE.hit()

    @app.task(name="bench.blob", queue=QUEUE)
    async def blob(data: str, size: int) -> None:
        if len(data) != size:  # the payload arrived whole, or the task fails
            raise ValueError(f"payload of {len(data)} characters, expected {size}")
        PROBE.hit()

    app.task(name="bench.cpu", queue=QUEUE, pool="process")(cpu.fn)
    return app


app = make_app(os.environ.get(URL_ENV, "memory://"))
