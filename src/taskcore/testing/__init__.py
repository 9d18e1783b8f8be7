"""Test doubles that ship with taskcore: a fake clock, the in-memory backend, message
builders and the backend conformance suite every backend must pass.

Third-party backend authors subclass :class:`BackendConformance`::

    class TestMyBackend(BackendConformance):
        @contextlib.asynccontextmanager
        async def make_backend(self, clock):
            async with MyBackend(url, clock=clock) as backend:
                yield backend
"""

from __future__ import annotations

from taskcore.clock import FakeClock
from taskcore.memory import MemoryBackend

from .conformance import BackendConformance, make_message, settle_half_a_chord
from .recorder import Recorder

__all__ = [
    "BackendConformance",
    "FakeClock",
    "MemoryBackend",
    "Recorder",
    "make_message",
    "settle_half_a_chord",
]
