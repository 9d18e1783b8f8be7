"""Coordination on Redis: worker registry, token buckets, cron-tick dedupe, small
key/value and shared run-time statistics.

These keys are not about one queue; they share the hash tag ``{<prefix>}``. Expiry
is judged by the backend's clock (so a fake clock drives tests); Redis TTLs are set
as well so stale keys disappear without a sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from taskcore.backend import RuntimeStats, WorkerInfo
from taskcore.clock import Clock

from ._codec import decode_worker, encode_worker
from ._conn import Connection
from ._keys import Keys

__all__ = ["Coordination"]


# Redis drops an expired once-key or value this long after the clock says it expired:
# the clock decides (a fake clock may run behind real time), Redis only cleans up.
_BACKSTOP = 60.0


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class Coordination:
    """The coordination half of :class:`~taskcore_redis.RedisBackend`."""

    clock: Clock
    keys: Keys
    _conn: Connection

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        expires = self.clock.now() + ttl
        r = self._conn.redis

        async def go() -> None:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.workers, info.id, encode_worker(info))
                pipe.zadd(self.keys.worker_expiry, {info.id: expires})
                await pipe.execute()

        await self._conn.call("heartbeat", go)

    async def remove_worker(self, worker_id: str) -> None:
        r = self._conn.redis

        async def go() -> None:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hdel(self.keys.workers, worker_id)
                pipe.zrem(self.keys.worker_expiry, worker_id)
                await pipe.execute()

        await self._conn.call("remove_worker", go)

    async def workers(self) -> list[WorkerInfo]:
        r = self._conn.redis
        now = self.clock.now()
        ids: list[Any] = await self._conn.call(
            "workers",
            lambda: r.zrangebyscore(self.keys.worker_expiry, f"({now!r}", "+inf"),
        )
        if not ids:
            return []
        blobs: list[Any] = await self._conn.call("workers", lambda: r.hmget(self.keys.workers, ids))
        return [decode_worker(b) for b in blobs if b is not None]

    async def _reap_coordination(self) -> None:
        """Drop workers whose registration expired (already invisible)."""
        r = self._conn.redis
        now = self.clock.now()
        gone = await self._conn.call(
            "reap", lambda: r.zrangebyscore(self.keys.worker_expiry, "-inf", repr(now))
        )
        if gone:

            async def go() -> None:
                async with r.pipeline(transaction=False) as pipe:
                    pipe.hdel(self.keys.workers, *gone)
                    pipe.zrem(self.keys.worker_expiry, *gone)
                    await pipe.execute()

            await self._conn.call("reap", go)

    async def take_tokens(self, bucket: str, rate: float, capacity: float, n: float = 1) -> float:
        # Idle longer than it takes to refill, a bucket is full: the same as absent.
        keep = _ms(max(2 * capacity / rate, 60.0))
        args = [
            repr(self.clock.now()),
            repr(float(rate)),
            repr(float(capacity)),
            repr(float(n)),
            keep,
        ]
        [wait] = await self._conn.run(
            "take_tokens",
            [(self._conn.scripts["tokens"], [self.keys.bucket(bucket)], args)],
            idempotent=False,
        )
        return float(wait)

    async def once(self, key: str, ttl: float) -> bool:
        args = [repr(self.clock.now()), repr(float(ttl)), _ms(ttl + _BACKSTOP)]
        [first] = await self._conn.run(
            "once", [(self._conn.scripts["once"], [self.keys.once(key)], args)], idempotent=False
        )
        return bool(first)

    async def kv_get(self, key: str) -> bytes | None:
        r = self._conn.redis
        got: list[Any] = await self._conn.call(
            "kv_get", lambda: r.hmget(self.keys.kv(key), ["v", "x"])
        )
        value, until = got
        if value is None or (until is not None and float(until) <= self.clock.now()):
            return None
        return bytes(value)

    async def kv_set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._kv_write(key, value, ttl, [""])

    async def kv_replace(
        self, key: str, old: bytes | None, new: bytes, ttl: float | None = None
    ) -> bool:
        now = repr(self.clock.now())  # a value expired by then counts as none
        compare: list[object] = ["0", now] if old is None else ["1", now, old]
        # not retried: a replace whose reply was lost would fail when sent again
        return await self._kv_write(key, new, ttl, compare, idempotent=False)

    async def _kv_write(
        self,
        key: str,
        value: bytes,
        ttl: float | None,
        compare: list[object],
        *,
        idempotent: bool = True,
    ) -> bool:
        """``kv_set.lua``: store ``value``; with ``compare`` (its ARGV[4:]) not [""],
        only if the stored value matches. True if stored."""
        if ttl is None:
            args: list[object] = [value, "", ""]
        else:
            args = [value, repr(self.clock.now() + ttl), _ms(ttl + _BACKSTOP)]
        [stored] = await self._conn.run(
            "kv_set",
            [(self._conn.scripts["kv_set"], [self.keys.kv(key)], [*args, *compare])],
            idempotent=idempotent,
        )
        return bool(stored)

    async def record_runtimes(self, samples: Sequence[tuple[str, float]]) -> None:
        if not samples:
            return
        totals: dict[str, list[float]] = {}
        for task, seconds in samples:
            t = totals.setdefault(task, [0, 0.0])
            t[0] += 1
            t[1] += seconds
        r = self._conn.redis

        async def go() -> None:
            async with r.pipeline(transaction=False) as pipe:
                for task, (count, total) in totals.items():
                    pipe.hincrby(self.keys.runtimes, f"n:{task}", int(count))
                    pipe.hincrbyfloat(self.keys.runtimes, f"s:{task}", total)
                await pipe.execute()

        # Not retried: counting a sample twice would skew the statistics.
        await self._conn.call("record_runtimes", go, idempotent=False)

    async def runtime_stats(self, tasks: Sequence[str]) -> dict[str, RuntimeStats]:
        if not tasks:
            return {}
        r = self._conn.redis
        fields = [f for t in tasks for f in (f"n:{t}", f"s:{t}")]
        values: list[Any] = await self._conn.call(
            "runtime_stats", lambda: r.hmget(self.keys.runtimes, fields)
        )
        out = {}
        for i, task in enumerate(tasks):
            count, total = values[2 * i], values[2 * i + 1]
            if count is not None and total is not None and int(count) > 0:
                out[task] = RuntimeStats(int(count), float(total) / int(count))
        return out
