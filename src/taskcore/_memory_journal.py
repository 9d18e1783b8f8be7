"""The in-memory backend's journal (:meth:`~taskcore.backend.Backend.journal_append`
and friends): per stream, the records in ``(at, seq)`` order, and per key the same
records again, so that reading one key's records does not scan the stream."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Mapping, Sequence

import attrs

from .backend import JournalEntry

__all__ = ["MemoryJournal"]

_Item = tuple[float, int, JournalEntry]


@attrs.define(slots=True, eq=False)
class _Stream:
    items: list[_Item] = attrs.field(factory=list)
    by_key: dict[str, list[_Item]] = attrs.field(factory=dict)


def _read(
    items: list[_Item], since: float | None, until: float | None, limit: int, newest_first: bool
) -> list[JournalEntry]:
    lo = 0 if since is None else bisect.bisect_left(items, (since, -1))
    hi = len(items) if until is None else bisect.bisect_left(items, (until, -1))
    if hi <= lo or limit <= 0:
        return []
    if newest_first:
        return [items[i][2] for i in range(hi - 1, max(lo, hi - limit) - 1, -1)]
    return [item[2] for item in items[lo : min(hi, lo + limit)]]


class MemoryJournal:
    """Every stream's records, in this process's memory."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._seq = itertools.count()

    def append(self, entries: Sequence[JournalEntry]) -> None:
        for e in entries:
            s = self._streams.get(e.stream)
            if s is None:
                s = self._streams[e.stream] = _Stream()
            item = (float(e.at), next(self._seq), e)
            bisect.insort(s.items, item)
            if e.key is not None:
                bisect.insort(s.by_key.setdefault(e.key, []), item)

    def read(
        self,
        stream: str,
        *,
        since: float | None,
        until: float | None,
        key: str | None,
        limit: int,
        newest_first: bool,
    ) -> list[JournalEntry]:
        s = self._streams.get(stream)
        if s is None:
            return []
        items = s.items if key is None else s.by_key.get(key, [])
        return _read(items, since, until, limit, newest_first)

    def trim(self, before: Mapping[str, float]) -> int:
        removed = 0
        for stream, cutoff in before.items():
            s = self._streams.get(stream)
            if s is None or math.isnan(cutoff):
                continue
            cut = bisect.bisect_left(s.items, (cutoff, -1))
            removed += cut
            del s.items[:cut]
            for key in list(s.by_key):
                items = s.by_key[key]
                del items[: bisect.bisect_left(items, (cutoff, -1))]
                if not items:
                    del s.by_key[key]
        return removed
