"""Alert rules and the evaluator that turns snapshots into alerts.

A :class:`Rule` maps a :class:`~taskcore.monitor.Snapshot` to values by *subject* (a
queue, a check, the host: one rule alerts separately for each) and compares each value
with a threshold. As in Prometheus, a condition must hold for ``for_seconds`` before
its alert fires; until then the alert is *pending*::

    (condition holds) ─> pending ──(held for_seconds)──> firing ──(stops)──> resolved
                           └──────(stops)──────> dropped, never notified

A rule with ``over`` reads counters rather than gauges and compares their increase
over the last ``over`` seconds (Prometheus ``increase(x[over])``); with ``per`` as well,
the ratio of two such increases (``increase(failed) / increase(finished)``). Decreases
(records expiring, dead letters retried) count as no increase rather than a negative
one.

:class:`Evaluator` keeps the state of every (rule, subject) across snapshots, timed by
the snapshots' ``at`` (the app's clock), and returns the transitions (firing, resolved)
so that each is notified once: a firing alert is not notified again while it keeps
firing.
"""

from __future__ import annotations

import logging
import math
import operator
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from taskcore.errors import ConfigurationError

from .snapshot import Alert, AlertState, Snapshot

__all__ = ["SEVERITIES", "Evaluator", "Rule", "Values", "default_rules"]

log = logging.getLogger("taskcore.monitor")

Values = Callable[[Snapshot], Mapping[str, float]]
"""What a rule reads from a snapshot: ``{subject: value}``."""

SEVERITIES = ("info", "warning", "critical")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def _seconds(name: str, what: str, value: object, *, zero: bool) -> None:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and (0 <= value if zero else 0 < value)
        and value < math.inf
    )
    if not ok:
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"rule {name!r}: {what}={value!r} must be seconds {bound}")


@attrs.frozen
class Rule:
    """An alert rule.

    Args:
        name: unique among a monitor's rules; alerts carry it.
        values: ``snapshot -> {subject: value}``. A subject left out has no value: its
            condition does not hold.
        threshold: what each value is compared with.
        op: the comparison, ``value <op> threshold``: ``>`` (default), ``>=``, ``<``,
            ``<=``, ``==`` or ``!=``.
        severity: ``info``, ``warning`` (default) or ``critical``.
        for_seconds: how long the condition must hold before the alert fires (>= 0).
        over: if set, ``values`` are counters and the compared value is their increase
            over the last ``over`` seconds.
        per: with ``over``: the compared value is ``increase(values) /
            increase(per)``, and a subject whose ``per`` did not increase has no value.
        summary: the alert's text, a ``str.format`` template with ``{subject}``,
            ``{value}`` and ``{threshold}``.

    Raises:
        ConfigurationError: a setting is out of range.
    """

    name: str
    values: Values
    threshold: float
    op: str = ">"
    severity: str = "warning"
    for_seconds: float = 0.0
    over: float | None = None
    per: Values | None = None
    summary: str = ""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"rule name {self.name!r}: give a non-empty string")
        if not callable(self.values):
            raise ConfigurationError(
                f"rule {self.name!r}: values={self.values!r} must be a function "
                "snapshot -> {subject: value}"
            )
        if self.op not in _OPS:
            raise ConfigurationError(
                f"rule {self.name!r}: op={self.op!r}; use one of {', '.join(_OPS)}"
            )
        if self.severity not in SEVERITIES:
            raise ConfigurationError(
                f"rule {self.name!r}: severity={self.severity!r}; use one of "
                f"{', '.join(SEVERITIES)}"
            )
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ConfigurationError(
                f"rule {self.name!r}: threshold={self.threshold!r} must be a number"
            )
        _seconds(self.name, "for_seconds", self.for_seconds, zero=True)
        if self.over is not None:
            _seconds(self.name, "over", self.over, zero=False)
        if self.per is not None and self.over is None:
            raise ConfigurationError(
                f"rule {self.name!r}: per= divides counters' increases; give over= too"
            )

    @classmethod
    def above(cls, name: str, values: Values, threshold: float, **options: Any) -> Rule:
        """A rule whose condition is ``value > threshold``."""
        return cls(name, values, threshold, ">", **options)

    @classmethod
    def below(cls, name: str, values: Values, threshold: float, **options: Any) -> Rule:
        """A rule whose condition is ``value < threshold``."""
        return cls(name, values, threshold, "<", **options)

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def describe(self, subject: str, value: float) -> str:
        template = self.summary or "{rule} on {subject}: {value:g} {op} {threshold:g}"
        try:
            return template.format(
                rule=self.name, subject=subject, value=value, threshold=self.threshold, op=self.op
            )
        except (KeyError, IndexError, ValueError):
            return f"{self.name} on {subject}: {value:g} {self.op} {self.threshold:g}"


@attrs.define
class _Track:
    """One (rule, subject) whose condition holds."""

    since: float
    value: float
    fired_at: float | None = None


@attrs.define
class _Counter:
    """Recent readings of one counter (and its ``per`` denominator) for ``over`` rules."""

    samples: deque[tuple[float, float, float]] = attrs.field(factory=deque)

    def add(self, at: float, value: float, per: float, window: float) -> tuple[float, float]:
        """Record a reading; the increases over ``window`` (numerator, denominator)."""
        samples = self.samples
        if samples and at < samples[-1][0]:
            samples.clear()  # time went backwards (a clock set back): start again
        samples.append((at, value, per))
        # keep one reading at or before the window's start: the baseline of the first delta
        while len(samples) >= 2 and samples[1][0] <= at - window:
            samples.popleft()
        num = den = 0.0
        for (_, v0, p0), (_, v1, p1) in zip(samples, list(samples)[1:], strict=False):
            num += max(0.0, v1 - v0)
            den += max(0.0, p1 - p0)
        return num, den


class Evaluator:
    """Evaluates rules over successive snapshots, keeping each alert's state.

    Args:
        rules: the rules; names must be unique.

    Raises:
        ConfigurationError: two rules share a name.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        names = [r.name for r in rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigurationError(f"alert rules need unique names; repeated: {dupes}")
        bad = [r for r in rules if not isinstance(r, Rule)]
        if bad:
            raise ConfigurationError(f"not alert rules (taskcore.monitor.Rule): {bad!r}")
        self.rules = tuple(rules)
        self._tracks: dict[tuple[str, str], _Track] = {}
        self._counters: dict[tuple[str, str], _Counter] = {}

    def evaluate(
        self, snapshot: Snapshot, *, partial: bool = False
    ) -> tuple[list[Alert], list[Alert]]:
        """Evaluate every rule on ``snapshot``.

        Args:
            snapshot: the latest snapshot; its ``at`` is the time of evaluation.
            partial: the snapshot lacks the backend's data (the backend was unreachable):
                a subject missing from it keeps its state instead of resolving.

        Returns:
            ``(active, transitions)``: the pending and firing alerts (critical first),
            and the alerts that started firing or resolved at this evaluation.
        """
        now = snapshot.at
        transitions: list[Alert] = []
        for rule in self.rules:
            try:
                values = self._values(rule, snapshot, partial)
            except Exception:
                log.exception("alert rule %s failed on the snapshot at %s", rule.name, now)
                continue  # no verdict: every subject keeps its state
            for subject, value in values.items():
                key = (rule.name, subject)
                track = self._tracks.get(key)
                if not rule.holds(value):
                    if track is not None:
                        del self._tracks[key]
                        if track.fired_at is not None:
                            transitions.append(
                                self._alert(rule, subject, track, AlertState.RESOLVED, now)
                            )
                    continue
                if track is None:
                    track = self._tracks[key] = _Track(since=now, value=value)
                track.value = value
                if track.fired_at is None and now - track.since >= rule.for_seconds:
                    track.fired_at = now
                    transitions.append(self._alert(rule, subject, track, AlertState.FIRING))
            # subjects gone from the snapshot (a queue purged, a check removed): resolved
            if not partial:
                for key in [k for k in self._tracks if k[0] == rule.name]:
                    if key[1] not in values:
                        track = self._tracks.pop(key)
                        if track.fired_at is not None:
                            transitions.append(
                                self._alert(rule, key[1], track, AlertState.RESOLVED, now)
                            )
        rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        by_name = {r.name: r for r in self.rules}
        active = sorted(
            (
                self._alert(
                    by_name[name],
                    subject,
                    track,
                    AlertState.PENDING if track.fired_at is None else AlertState.FIRING,
                )
                for (name, subject), track in self._tracks.items()
                if name in by_name
            ),
            key=lambda a: (rank[a.severity], a.rule, a.subject),
        )
        return active, transitions

    def _values(self, rule: Rule, snapshot: Snapshot, partial: bool) -> dict[str, float]:
        raw = {str(k): float(v) for k, v in rule.values(snapshot).items()}
        if rule.over is None:
            return raw
        per = (
            {str(k): float(v) for k, v in rule.per(snapshot).items()}
            if rule.per is not None
            else {}
        )
        out: dict[str, float] = {}
        for subject, value in raw.items():
            counter = self._counters.setdefault((rule.name, subject), _Counter())
            num, den = counter.add(snapshot.at, value, per.get(subject, 0.0), rule.over)
            if rule.per is None:
                out[subject] = num
            elif den > 0:
                out[subject] = num / den
        if not partial:
            for key in [k for k in self._counters if k[0] == rule.name and k[1] not in raw]:
                del self._counters[key]
        return out

    @staticmethod
    def _alert(
        rule: Rule, subject: str, track: _Track, state: str, resolved_at: float | None = None
    ) -> Alert:
        return Alert(
            rule=rule.name,
            severity=rule.severity,
            state=state,
            subject=subject,
            summary=rule.describe(subject, track.value),
            value=track.value,
            threshold=rule.threshold,
            since=track.since,
            fired_at=track.fired_at,
            resolved_at=resolved_at,
        )


# -- the default rules ------------------------------------------------------------------

LATE_WINDOW = 300.0
"""Seconds over which late starts, dead letters and failures are counted (5 min)."""


def _late_urgent(s: Snapshot) -> dict[str, float]:
    return {q.name: q.late_by_priority.get(0, 0) + q.late_by_priority.get(1, 0) for q in s.queues}


def _late(s: Snapshot) -> dict[str, float]:
    return {q.name: q.late for q in s.queues}


def _dead(s: Snapshot) -> dict[str, float]:
    return {q.name: q.dead for q in s.queues}


def _failed(s: Snapshot) -> dict[str, float]:
    return {q.name: q.failed + q.dead for q in s.queues}


def _finished(s: Snapshot) -> dict[str, float]:
    return {q.name: q.succeeded + q.failed + q.dead for q in s.queues}


def _unserved(s: Snapshot) -> dict[str, float]:
    served = {name for w in s.workers for name in w.queues}
    return {
        q.name: float(q.depth) if q.name not in served and not q.paused else 0.0 for q in s.queues
    }


def _check_failing(s: Snapshot) -> dict[str, float]:
    return {c.name: 0.0 if c.ok else 1.0 for c in s.checks}


def _check_latency(s: Snapshot) -> dict[str, float]:
    # a failed check's latency is its time to failure; the failing rule covers it
    return {c.name: c.latency for c in s.checks if c.ok}


def _resource(field: str) -> Values:
    def values(s: Snapshot) -> dict[str, float]:
        return {} if s.resources is None else {"host": float(getattr(s.resources, field))}

    values.__name__ = f"host_{field}"
    return values


def default_rules() -> list[Rule]:
    """The specification's alerts. Per queue:

    - ``late_p0_p1`` (critical): a P0 or P1 task started past its wait SLA in the last
      5 minutes (the backend's late count for priorities 0 and 1 grew).
    - ``late_tasks`` (warning): any task started past its SLA in the last 5 minutes.
    - ``dead_letters_growing`` (warning): the queue's dead-letter count grew in the last
      5 minutes (it fires at the first snapshot that shows the growth and resolves 5
      minutes after the last; counting over a window rather than between two snapshots
      keeps a trickle of dead letters from firing and resolving every second).
    - ``no_worker`` (critical, for 30 s): tasks are ready in an unpaused queue and no
      live worker consumes it.
    - ``failure_rate`` (warning): more than 10% of the tasks that finished in the last
      5 minutes failed or were dead-lettered (the specification names no number).

    Per health check:

    - ``check_failing`` (critical): the check failed (error or no answer in time).
    - ``check_slow`` (warning): the check passed but took longer than 0.5 s (the
      specification's health-check response limit; with the default 0.5 s timeout a
      slower check counts as failed instead).

    For the host (``resources=True``):

    - ``host_cpu`` (warning, for 60 s): CPU above 95% (the specification's peak).
    - ``host_memory`` (warning, for 60 s): memory above 85% (the specification's peak).
    - ``host_disk`` (warning): disk usage of the monitored path above 80% (the
      specification bounds disk I/O at 80%; usage is what can be measured portably).
    """
    window = LATE_WINDOW
    return [
        Rule.above(
            "late_p0_p1",
            _late_urgent,
            0,
            severity="critical",
            over=window,
            summary="queue {subject}: {value:g} P0/P1 task(s) started past their SLA "
            "in the last 5 min",
        ),
        Rule.above(
            "late_tasks",
            _late,
            0,
            over=window,
            summary="queue {subject}: {value:g} task(s) started past their SLA in the last 5 min",
        ),
        Rule.above(
            "dead_letters_growing",
            _dead,
            0,
            over=window,
            summary="queue {subject}: {value:g} new dead letter(s) in the last 5 min",
        ),
        Rule.above(
            "no_worker",
            _unserved,
            0,
            severity="critical",
            for_seconds=30,
            summary="queue {subject}: {value:g} task(s) ready and no live worker consumes it",
        ),
        Rule.above(
            "failure_rate",
            _failed,
            0.1,
            over=window,
            per=_finished,
            summary="queue {subject}: {value:.0%} of the tasks finished in the last 5 min "
            "failed (threshold {threshold:.0%})",
        ),
        Rule.above(
            "check_failing",
            _check_failing,
            0,
            severity="critical",
            summary="health check {subject} is failing",
        ),
        Rule.above(
            "check_slow",
            _check_latency,
            0.5,
            summary="health check {subject} took {value:.3f} s (limit {threshold:g} s)",
        ),
        Rule.above(
            "host_cpu",
            _resource("cpu_percent"),
            95,
            for_seconds=60,
            summary="host CPU at {value:.0f}% (limit {threshold:g}%)",
        ),
        Rule.above(
            "host_memory",
            _resource("memory_percent"),
            85,
            for_seconds=60,
            summary="host memory at {value:.0f}% (limit {threshold:g}%)",
        ),
        Rule.above(
            "host_disk",
            _resource("disk_percent"),
            80,
            summary="disk at {value:.0f}% (limit {threshold:g}%)",
        ),
    ]
