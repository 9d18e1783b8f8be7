"""The audit trail: every mutating action through the web API, allowed or refused.

An entry names who acted (the token's role and fingerprint, never the token), what
they did, to which targets, and with what result. Entries go to the ``taskcore.audit``
logger, to the backend's journal (stream ``audit``, kept for ``App(audit_ttl=...)``,
730 days by default: it survives restarts and every web process of the backend reads
the same trail) and to a bounded in-memory log for the dashboard, which also takes in
the entries other web processes store (:meth:`AuditLog.pull`).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

import msgspec

from taskcore.backend import Backend, JournalEntry
from taskcore.clock import Clock

from .auth import Principal

__all__ = ["AUDIT_STREAM", "PULL_LAG", "PULL_LIMIT", "AuditEntry", "AuditLog"]

AUDIT_STREAM = "audit"

PULL_LIMIT = 100
"""Entries :meth:`AuditLog.pull` reads at the most, the newest."""

PULL_LAG = 60.0
"""Seconds before the newest entry it has that :meth:`AuditLog.pull` reads again: an
entry can reach the journal after a newer one (its writer's round trip, or its host's
clock a little behind)."""

logger = logging.getLogger("taskcore.audit")


class AuditEntry(msgspec.Struct, frozen=True):
    at: float
    who: str
    """``role:fingerprint`` (``admin:anonymous`` when access is open)."""
    action: str
    targets: list[str]
    result: str
    ok: bool
    client: str = ""


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AuditEntry).decode


class AuditLog:
    """The audit trail: stored in the backend's journal (``backend``: how to reach it;
    None keeps the in-memory log only), the latest ``size`` entries in memory, oldest
    first: this process's, and every web process's as :meth:`load` and :meth:`pull`
    read them."""

    def __init__(
        self, clock: Clock, size: int = 500, *, backend: Callable[[], Backend] | None = None
    ) -> None:
        self.clock = clock
        self._backend = backend
        self._entries: collections.deque[AuditEntry] = collections.deque(maxlen=size)
        self.version = 0
        """Changes with every entry the in-memory log takes (a cache key)."""

    @property
    def entries(self) -> Sequence[AuditEntry]:
        """The latest entries in memory, oldest first (the dashboard's live view)."""
        return tuple(self._entries)

    async def record(
        self,
        principal: Principal | None,
        action: str,
        targets: Sequence[str],
        result: str,
        *,
        ok: bool,
        client: str = "",
    ) -> AuditEntry:
        """Log an entry and store it in the journal (a backend failure is logged as an
        error, with the entry: the action has happened, the logger keeps the trail)."""
        entry = AuditEntry(
            at=self.clock.now(),
            who=principal.who if principal is not None else "unauthenticated",
            action=action,
            targets=list(targets),
            result=result,
            ok=ok,
            client=client,
        )
        self._entries.append(entry)
        self.version += 1
        fields = msgspec.to_builtins(entry)
        logger.info(
            "%s %s %s: %s",
            entry.who,
            action,
            ",".join(entry.targets) or "-",
            result,
            extra={"audit": fields},
        )
        if self._backend is not None:
            try:
                await self._backend().journal_append(
                    [JournalEntry(AUDIT_STREAM, entry.at, _encode(entry))]
                )
            except Exception as exc:
                logger.error(
                    "audit entry not stored in the backend (%r): %s %s",
                    exc,
                    entry.who,
                    action,
                    extra={"audit": fields},
                )
        return entry

    async def read(
        self, *, since: float | None = None, until: float | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The latest ``limit`` entries with ``since <= at < until``, oldest first: from
        the journal (every web process's), or this process's memory without a backend."""
        if self._backend is None:
            kept = [
                e
                for e in self._entries
                if (since is None or e.at >= since) and (until is None or e.at < until)
            ]
            return kept[-limit:] if limit > 0 else []
        stored = await self._backend().journal_read(
            AUDIT_STREAM, since=since, until=until, limit=limit
        )
        return [_decode(e.payload) for e in reversed(stored)]

    async def load(self) -> None:
        """Fill the in-memory log from the journal (at start-up: the dashboard then
        shows the trail from before a restart)."""
        if self._entries.maxlen:
            await self._take(None, self._entries.maxlen)

    async def pull(self, limit: int = PULL_LIMIT) -> int:
        """Take into the in-memory log the entries stored since the newest one it has
        (less :data:`PULL_LAG`) that it lacks: other web processes' (the dashboard's
        live view of the whole trail). Reads at most ``limit`` entries, the newest;
        returns how many were new."""
        newest = max((e.at for e in self._entries), default=None)
        return await self._take(None if newest is None else newest - PULL_LAG, limit)

    async def _take(self, since: float | None, limit: int) -> int:
        if self._backend is None:
            return 0
        page = await self._backend().journal_read(AUDIT_STREAM, since=since, limit=limit)
        stored = [_decode(e.payload) for e in reversed(page)]  # oldest first
        # an entry has no id: match those in memory against the stored ones by value, as
        # many times as each was stored (one action can be done twice in one instant)
        unmatched = collections.Counter(_encode(e) for e in stored)
        kept = []  # the entries in memory that were not read again
        for e in self._entries:
            key = None if since is not None and e.at < since else _encode(e)
            if key is not None and unmatched[key]:
                unmatched[key] -= 1
            else:
                kept.append(e)
        new = sum(unmatched.values())
        if new:  # in time order; at one instant, in the journal's order
            merged = sorted([*kept, *stored], key=lambda e: e.at)
            self._entries.clear()
            self._entries.extend(merged)  # the newest ``size``
            self.version += 1
        return new
