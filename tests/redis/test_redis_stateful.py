"""The Redis backend against the in-memory reference, by random operation sequences.

``TASKCORE_STATEFUL_EXAMPLES`` raises the number of examples (default 30, which
keeps this under ~10 s); ``TASKCORE_STATEFUL_SHRINK=1`` turns shrinking on (off by
default: against a server it can take minutes, and the unshrunk steps are printed).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from redis_helpers import delete_prefix, new_prefix

import redis as redis_sync
from taskcore.clock import FakeClock
from taskcore.testing.stateful import backend_state_machine
from taskcore_redis import RedisBackend

_PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("TASKCORE_STATEFUL_SHRINK"):
    _PHASES.append(Phase.shrink)


def test_redis_matches_memory(redis_url: str, admin: redis_sync.Redis) -> None:
    @contextlib.asynccontextmanager
    async def make(clock: FakeClock) -> AsyncIterator[RedisBackend]:
        prefix = new_prefix()
        try:
            async with RedisBackend.from_url(redis_url, clock=clock, prefix=prefix) as backend:
                yield backend
        finally:
            delete_prefix(admin, prefix)

    machine = backend_state_machine(make)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=int(os.environ.get("TASKCORE_STATEFUL_EXAMPLES", "30")),
            stateful_step_count=30,
            deadline=None,
            phases=_PHASES,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
