"""The audit trail: every mutating action through the web API, allowed or refused.

An entry names who acted (the token's role and fingerprint, never the token), what
they did, to which targets, and with what result. Entries go to the ``taskcore.audit``
logger and to a bounded in-memory log that ``/api/audit`` and the dashboard show.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence

import msgspec

from taskcore.clock import Clock

from .auth import Principal

__all__ = ["AuditEntry", "AuditLog"]

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


class AuditLog:
    """The last ``size`` entries, oldest first."""

    def __init__(self, clock: Clock, size: int = 500) -> None:
        self.clock = clock
        self._entries: collections.deque[AuditEntry] = collections.deque(maxlen=size)

    @property
    def entries(self) -> Sequence[AuditEntry]:
        return tuple(self._entries)

    def record(
        self,
        principal: Principal | None,
        action: str,
        targets: Sequence[str],
        result: str,
        *,
        ok: bool,
        client: str = "",
    ) -> AuditEntry:
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
        logger.info(
            "%s %s %s: %s",
            entry.who,
            action,
            ",".join(entry.targets) or "-",
            result,
            extra={"audit": msgspec.to_builtins(entry)},
        )
        return entry
