"""Time sources. Everything in taskcore reads time through a :class:`Clock`."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Wall-clock seconds since the epoch, and a sleep that honours this clock."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to, for tests that never sleep.

    ``sleep()`` blocks until :meth:`advance` moves time past the wake-up point.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()
        self._listeners: list[Callable[[], None]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), event))
        await event.wait()

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every :meth:`advance` (backends use it to wake
        waiters whose scheduled work became due)."""
        self._listeners.append(listener)

    @property
    def sleepers(self) -> int:
        """How many coroutines are sleeping on this clock."""
        return len(self._sleepers)

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose time has come."""
        if seconds < 0:
            raise ValueError(f"FakeClock.advance({seconds!r}): time only moves forward")
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()
        for listener in self._listeners:
            listener()

    def set(self, now: float) -> None:
        """Jump to an absolute time (never backwards)."""
        self.advance(max(0.0, now - self._now))
