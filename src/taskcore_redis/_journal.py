"""The journal on Redis (:meth:`~taskcore.backend.Backend.journal_append` and friends).

Each stream is a sorted set of its records scored by time, plus one sorted set per key
(a task id) holding that key's records again, so that reading a key's records reads
only them; all keys of a stream share one hash tag (``Keys.journal``). A member is a
sequence number (append order among records of the same time) followed by the
MessagePack of ``(key, payload)``. Retention (``journal_trim``) removes records by
time from the stream's set, and from the per-key sets of the keys whose first record
is older than the cutoff (kept in a third sorted set), in bounded script calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from taskcore.backend import JournalEntry
from taskcore.errors import BackendError

from ._conn import Connection
from ._keys import Keys
from ._scripts import Call

__all__ = ["Journal"]

_TRIM_KEYS = 1000  # per-key sets trimmed per script call
_SEQ_LEN = 16  # hex digits of a member's sequence number
_blob = msgspec.msgpack.Encoder()
_unblob = msgspec.msgpack.Decoder(tuple[str | None, bytes])


def _score(value: float) -> str:
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return repr(float(value))


class Journal:
    """The journal half of :class:`~taskcore_redis.RedisBackend`."""

    keys: Keys
    _conn: Connection

    async def _scripts_call(self, what: str, calls: Sequence[Call], idempotent: bool) -> list[Any]:
        # Not Connection.run: that one takes a call's second key for a kept reply
        conn = self._conn
        return await conn.call(
            what, lambda: conn.scripts.run(conn, calls), idempotent=idempotent, checked=True
        )

    async def journal_append(self, entries: Sequence[JournalEntry]) -> None:
        if not entries:
            return
        by_stream: dict[str, list[Any]] = {}
        for e in entries:
            args = by_stream.get(e.stream)
            if args is None:
                args = by_stream[e.stream] = [f"{self.keys.journal(e.stream)}:k:"]
            args += [_score(e.at), e.key or "", _blob.encode((e.key, bytes(e.payload)))]
        script = self._conn.scripts["journal_append"]
        calls: list[Call] = []
        for stream, args in by_stream.items():
            base = self.keys.journal(stream)
            calls.append((script, [f"{base}:z", f"{base}:f", f"{base}:n"], args))
        # Not retried: a record stored twice would show twice
        await self._scripts_call("journal_append", calls, idempotent=False)

    async def journal_read(
        self,
        stream: str,
        *,
        since: float | None = None,
        until: float | None = None,
        key: str | None = None,
        limit: int = 100,
        newest_first: bool = True,
    ) -> list[JournalEntry]:
        if limit <= 0:
            return []
        base = self.keys.journal(stream)
        name = f"{base}:z" if key is None else f"{base}:k:{key}"
        low = "-inf" if since is None else _score(since)
        high = "+inf" if until is None else "(" + _score(until)
        if newest_first:
            bounds: tuple[str, ...] = (high, low, "BYSCORE", "REV")
        else:
            bounds = (low, high, "BYSCORE")
        conn = self._conn
        command = ("ZRANGE", name, *bounds, "LIMIT", 0, limit, "WITHSCORES")
        [reply] = await conn.call("journal_read", lambda: conn.execute([command]), checked=True)
        if isinstance(reply, Exception):
            raise BackendError(f"Redis refused journal_read: {reply}") from reply
        if reply and not isinstance(reply[0], (list, tuple)):  # flat: member, score, ...
            reply = list(zip(reply[::2], reply[1::2], strict=True))
        out = []
        for member, score in reply:
            k, payload = _unblob.decode(bytes(member)[_SEQ_LEN:])
            out.append(JournalEntry(stream, float(score), payload, k))
        return out

    async def journal_trim(self, before: Mapping[str, float]) -> int:
        script = self._conn.scripts["journal_trim"]
        removed = 0
        for stream, cutoff in before.items():
            if math.isnan(cutoff):
                continue
            base = self.keys.journal(stream)
            call: Call = (
                script,
                [f"{base}:z", f"{base}:f"],
                [_score(cutoff), f"{base}:k:", _TRIM_KEYS],
            )
            while True:
                [(n, trimmed)] = await self._scripts_call("journal_trim", [call], idempotent=True)
                removed += int(n)
                if int(trimmed) < _TRIM_KEYS:
                    break
        return removed
