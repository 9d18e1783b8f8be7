"""Cron schedules (croniter) with time zones.

croniter (and the dateutil it pulls in, about 4 MB of a worker's memory) is imported
only by apps that register a periodic task."""

from __future__ import annotations

from datetime import datetime

import attrs

from .errors import ConfigurationError

__all__ = ["Periodic"]


@attrs.frozen
class Periodic:
    """A task enqueued on every tick of a cron expression, evaluated in ``tz``."""

    task: str
    cron: str
    tz: str = "UTC"

    def __attrs_post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from croniter import croniter

        if not croniter.is_valid(self.cron):
            raise ConfigurationError(
                f"invalid cron expression {self.cron!r} for task {self.task!r}; "
                "use five fields such as '*/5 * * * *'"
            )
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(
                f"unknown time zone {self.tz!r} for task {self.task!r}; use an IANA name "
                "such as 'Europe/Paris'"
            ) from None

    def next_after(self, now: float) -> float:
        """The first tick strictly after ``now`` (epoch seconds)."""
        from zoneinfo import ZoneInfo

        from croniter import croniter

        start = datetime.fromtimestamp(now, ZoneInfo(self.tz))
        return float(croniter(self.cron, start).get_next(float))

    def dedupe_key(self, tick: float) -> str:
        return f"cron:{self.task}:{int(tick)}"
