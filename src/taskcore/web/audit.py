"""The audit trail: every mutating action through the web API, allowed or refused.

An entry names who acted (the token's role and fingerprint, never the token), what
they did, to which targets, and with what result. Entries go to the ``taskcore.audit``
logger, to the backend's journal (stream ``audit``, kept for ``App(audit_ttl=...)``,
730 days by default: it survives restarts and every web process of the backend reads
the same trail) and to a bounded in-memory log of this process for the dashboard.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence

import msgspec

from taskcore.backend import Backend, JournalEntry
from taskcore.clock import Clock

from .auth import Principal

__all__ = ["AUDIT_STREAM", "AuditEntry", "AuditLog"]

AUDIT_STREAM = "audit"

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
    None keeps the in-memory log only), the last ``size`` entries of this process in
    memory, oldest first."""

    def __init__(
        self, clock: Clock, size: int = 500, *, backend: Callable[[], Backend] | None = None
    ) -> None:
        self.clock = clock
        self._backend = backend
        self._entries: collections.deque[AuditEntry] = collections.deque(maxlen=size)

    @property
    def entries(self) -> Sequence[AuditEntry]:
        """This process's latest entries (the dashboard's live view)."""
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
        if self._backend is not None and self._entries.maxlen:
            latest = await self.read(limit=self._entries.maxlen)
            self._entries.extendleft(reversed([e for e in latest if e not in self._entries]))
