"""The dashboard's panels as HTML fragments, rendered in Python so the page and the
live stream show the same thing and tests can read it. Everything that comes from
users (queue and task names, errors, hostnames, alert text, rejected records) is
escaped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs
import msgspec

from taskcore.backend import TaskRecord
from taskcore.monitor.snapshot import Alert, Snapshot

from .audit import AuditEntry
from .charts import sparkline

if TYPE_CHECKING:
    from taskcore.ingest import Reject

__all__ = ["PANELS", "PanelData", "render_panels", "stamp"]

PANELS = (
    "alerts",
    "queues",
    "charts",
    "rates",
    "workers",
    "checks",
    "resources",
    "dead",
    "rejects",
    "schedules",
    "audit",
)
"""Panel ids in page order; each is a ``<section id="panel-<id>">``."""


@attrs.frozen
class PanelData:
    now: float
    snapshot: Snapshot | None
    history: Sequence[Snapshot]
    alert_log: Sequence[Alert]
    audit: Sequence[AuditEntry]
    dead: Sequence[TaskRecord]
    schedules: Sequence[dict[str, Any]]
    monitored: bool = True
    rejects: Sequence[Reject] = ()
    """The latest ingestion rejects, oldest first."""


def stamp(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(now: float, ts: float) -> str:
    delta = now - ts
    return f"{delta:.0f} s ago" if delta >= 0 else f"in {-delta:.0f} s"


def button(label: str, url: str, body: object = None, confirm: str | None = None) -> str:
    attrs_ = f'data-post="{escape(url)}"'
    if body is not None:
        attrs_ += f' data-body="{escape(msgspec.json.encode(body).decode())}"'
    if confirm:
        attrs_ += f' data-confirm="{escape(confirm)}"'
    return f'<button type="button" {attrs_}>{escape(label)}</button>'


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    """``rows`` hold already escaped HTML cells."""
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, content: str) -> str:
    return f"<h2>{escape(title)}</h2>{content}"


def _no_snapshot(data: PanelData) -> str:
    if not data.monitored:
        return '<p class="empty">No monitor runs in this web app.</p>'
    return '<p class="empty">Waiting for the monitor\'s first sample.</p>'


def task_link(task_id: str) -> str:
    return f'<a href="/tasks/{quote(task_id, safe="")}"><code>{escape(task_id)}</code></a>'


def render_queues(data: PanelData) -> str:
    snap = data.snapshot
    if snap is None:
        return section("Queues", _no_snapshot(data))
    rows = []
    for q in snap.queues:
        path = f"/api/queues/{quote(q.name, safe='')}"
        action = (
            button("Resume", f"{path}/resume") if q.paused else button("Pause", f"{path}/pause")
        )
        rows.append(
            [
                escape(q.name) + (' <span class="badge">paused</span>' if q.paused else ""),
                escape(q.policy),
                *(str(q.depth_by_priority.get(p, 0)) for p in range(5)),
                str(q.running),
                str(q.scheduled),
                str(q.retrying),
                str(q.dead),
                f'<span class="{"bad" if q.late else ""}">{q.late}</span>',
                action,
            ]
        )
    headers = ["queue", "policy", "P0", "P1", "P2", "P3", "P4", "running", "scheduled",
               "retrying", "dead", "late", ""]  # fmt: skip
    return section("Queues", table(headers, rows, "No queues yet."))


def render_workers(data: PanelData) -> str:
    snap = data.snapshot
    if snap is None:
        return section("Workers", _no_snapshot(data))
    rows = [
        [
            f"<code>{escape(w.id)}</code>",
            escape(w.hostname),
            str(w.pid),
            escape(", ".join(w.queues)),
            f"{w.busy}/{w.concurrency}",
            escape(ago(data.now, w.heartbeat_at)),
        ]
        for w in snap.workers
    ]
    busy = sum(w.busy for w in snap.workers)
    slots = sum(w.concurrency for w in snap.workers)
    title = f"Workers ({len(snap.workers)} alive, {busy}/{slots} busy)"
    return section(
        title,
        table(["id", "host", "pid", "queues", "busy", "heartbeat"], rows, "No live workers."),
    )


def render_rates(data: PanelData) -> str:
    snap = data.snapshot
    if snap is None:
        return section("Rates", _no_snapshot(data))
    r = snap.rates
    return section(
        "Rates (tasks/s)",
        '<dl class="kv">'
        f"<dt>succeeded</dt><dd>{r.succeeded:.2f}</dd>"
        f"<dt>failed</dt><dd>{r.failed:.2f}</dd>"
        f"<dt>dead</dt><dd>{r.dead:.2f}</dd></dl>",
    )


def render_checks(data: PanelData) -> str:
    snap = data.snapshot
    if snap is None:
        return section("Health checks", _no_snapshot(data))
    rows = [
        [
            escape(c.name),
            escape(c.kind),
            '<span class="ok">ok</span>' if c.ok else '<span class="bad">failing</span>',
            f"{c.latency * 1000:.1f} ms",
            escape(c.error or ""),
        ]
        for c in snap.checks
    ]
    return section(
        "Health checks",
        table(["check", "kind", "status", "latency", "error"], rows, "No checks configured."),
    )


def render_resources(data: PanelData) -> str:
    snap = data.snapshot
    if snap is None or snap.resources is None:
        return section("Resources", _no_snapshot(data) if snap is None else
                       '<p class="empty">Resource sampling is off.</p>')  # fmt: skip
    r = snap.resources
    return section(
        "Resources (monitoring host)",
        '<dl class="kv">'
        f"<dt>CPU</dt><dd>{r.cpu_percent:.1f}%</dd>"
        f"<dt>memory</dt><dd>{r.memory_percent:.1f}%</dd>"
        f"<dt>disk</dt><dd>{r.disk_percent:.1f}%</dd>"
        f"<dt>net out</dt><dd>{r.net_sent_per_s / 1024:.1f} KiB/s</dd>"
        f"<dt>net in</dt><dd>{r.net_recv_per_s / 1024:.1f} KiB/s</dd>"
        f"<dt>process RSS</dt><dd>{r.process_rss / 2**20:.1f} MiB</dd></dl>",
    )


def _alert_row(a: Alert, now: float) -> list[str]:
    return [
        f'<span class="sev-{escape(a.severity)}">{escape(a.severity)}</span>',
        escape(a.state),
        escape(a.rule),
        escape(a.subject),
        escape(a.summary),
        f"{a.value:.4g} / {a.threshold:.4g}",
        escape(ago(now, a.since)),
    ]


def render_alerts(data: PanelData) -> str:
    snap = data.snapshot
    headers = ["severity", "state", "rule", "subject", "summary", "value / threshold", "since"]
    active = (
        _no_snapshot(data)
        if snap is None
        else table(headers, [_alert_row(a, data.now) for a in snap.alerts], "No active alerts.")
    )
    recent = [_alert_row(a, data.now) for a in list(data.alert_log)[-10:][::-1]]
    return section(f"Alerts ({0 if snap is None else len(snap.alerts)} active)", active) + (
        "<h3>Recent transitions</h3>" + table(headers, recent, "None.") if recent else ""
    )


def render_dead(data: PanelData) -> str:
    rows = [
        [
            task_link(t.id),
            escape(t.task),
            escape(t.queue),
            str(t.attempt),
            escape(f"{t.errors[-1].type}: {t.errors[-1].message}" if t.errors else ""),
            escape(stamp(t.updated_at)),
            button("Retry", "/api/dead-letters/retry", {"ids": [t.id]}),
        ]
        for t in data.dead
    ]
    queues = sorted({t.queue for t in data.dead})
    purge = " ".join(
        button(
            f"Purge dead in {q}",
            "/api/dead-letters/purge",
            {"queue": q},
            f"Delete every dead letter of queue {q}?",
        )
        for q in queues
    )
    return section(
        "Dead letters",
        table(["id", "task", "queue", "attempts", "last error", "died", ""], rows,
              "No dead letters.") + (f'<p class="actions">{purge}</p>' if purge else ""),
    )  # fmt: skip


REJECT_TEXT = 200
"""Characters of a rejected record shown in the panel (the API gives all it keeps)."""


def render_rejects(data: PanelData) -> str:
    rows = []
    for r in list(data.rejects)[::-1]:
        where = f"#{r.number}" + (f" (line {r.line})" if r.line else "")
        text = r.record if len(r.record) <= REJECT_TEXT else r.record[:REJECT_TEXT] + "…"
        rows.append(
            [
                escape(stamp(r.at)),
                escape(r.source),
                escape(r.task),
                escape(where),
                escape(r.kind),
                f"<code>{escape(text)}</code>",
                f"<code>{escape(r.run)}</code>",
            ]
        )
    return section(
        "Ingestion rejects",
        table(["at (UTC)", "source", "task", "record", "reason", "record text", "run"],
              rows, "No rejected records."),
    )  # fmt: skip


def render_schedules(data: PanelData) -> str:
    rows = [
        [
            escape(s["task"]),
            f"<code>{escape(s['cron'])}</code>",
            escape(s["tz"]),
            escape(s["queue"] or ""),
            escape(f"{stamp(s['next_run'])} ({ago(data.now, s['next_run'])})"),
        ]
        for s in data.schedules
    ]
    return section(
        "Schedules",
        table(["task", "cron", "tz", "queue", "next run (UTC)"], rows, "No periodic tasks."),
    )


def render_audit(data: PanelData) -> str:
    rows = [
        [
            escape(stamp(e.at)),
            escape(e.who),
            escape(e.action),
            escape(", ".join(e.targets)),
            f'<span class="{"ok" if e.ok else "bad"}">{escape(e.result)}</span>',
        ]
        for e in list(data.audit)[-15:][::-1]
    ]
    return section(
        "Recent actions (audit)",
        table(["at (UTC)", "who", "action", "targets", "result"], rows, "No actions yet."),
    )


def render_charts(data: PanelData) -> str:
    hist = list(data.history)
    throughput = [s.rates.succeeded + s.rates.failed + s.rates.dead for s in hist]
    depth = [float(sum(q.depth for q in s.queues)) for s in hist]
    cpu = [s.resources.cpu_percent for s in hist if s.resources is not None]
    return section(
        "Charts",
        '<div class="charts">'
        + sparkline("Throughput", throughput, unit="/s")
        + sparkline("Queue depth", depth)
        + sparkline("CPU", cpu, unit="%")
        + "</div>",
    )


_RENDER = {
    "alerts": render_alerts,
    "queues": render_queues,
    "charts": render_charts,
    "rates": render_rates,
    "workers": render_workers,
    "checks": render_checks,
    "resources": render_resources,
    "dead": render_dead,
    "rejects": render_rejects,
    "schedules": render_schedules,
    "audit": render_audit,
}


def render_panels(data: PanelData) -> dict[str, str]:
    """Panel id -> inner HTML, for every panel in :data:`PANELS`."""
    return {name: _RENDER[name](data) for name in PANELS}
