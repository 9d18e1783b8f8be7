"""``taskcore monitor module:app``: a live view of queues, workers, checks, resources
and alerts, or one sample (``--once``) for scripts and cron.

Exit status of ``--once``: 0 when no warning or critical alert condition holds, 1 when
one does (firing *or pending*: a single sample cannot wait out a rule's
``for_seconds``, so a condition that holds now counts), 2 for a bad setting or an app
that cannot be loaded. Rules that count increases over a window (late tasks, new dead
letters, failure rate) need two samples, so ``--once`` never raises them; the live view
does. The live view runs until SIGINT or SIGTERM and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio

from taskcore.errors import ConfigurationError, TaskcoreError

from .checks import Check, HttpCheck, TcpCheck
from .monitor import Monitor
from .notifiers import LogNotifier, Notifier, WebhookNotifier
from .snapshot import AlertState, Snapshot

if TYPE_CHECKING:
    from rich.console import Console, Group

    from taskcore.app import App

__all__ = ["add_parser", "render", "run"]

EXIT_OK, EXIT_ALERT, EXIT_ERROR = 0, 1, 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``monitor`` command to ``parser.add_subparsers()``'s result."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "monitor",
        help="watch queues, workers, health checks and host resources of module:app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", help="the app, as package.module:app")
    from taskcore.cli import CONFIG_HELP

    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between samples (default 1)"
    )
    p.add_argument(
        "--check-http",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="an HTTP health check expecting status 200 (repeatable)",
    )
    p.add_argument(
        "--check-tcp",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="a TCP health check: the port accepts a connection (repeatable)",
    )
    p.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="POST alert transitions as JSON to this URL (repeatable)",
    )
    p.add_argument("--disk-path", default="/", help="report the usage of this path's filesystem")
    p.add_argument("--once", action="store_true", help="print one sample and exit (see above)")
    return p


def _pair(option: str, text: str, example: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise ConfigurationError(f"{option} {text!r}: write it as {example}")
    return name, value


def build_checks(http: Sequence[str], tcp: Sequence[str]) -> list[Check]:
    """Checks from ``--check-http NAME=URL`` and ``--check-tcp NAME=HOST:PORT``."""
    checks: list[Check] = []
    for text in http:
        name, url = _pair("--check-http", text, "NAME=URL, e.g. api=http://127.0.0.1:8000/health")
        checks.append(HttpCheck(name, url))
    for text in tcp:
        name, address = _pair("--check-tcp", text, "NAME=HOST:PORT, e.g. db=127.0.0.1:5432")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(
                f"--check-tcp {text!r}: write the address as HOST:PORT, e.g. 127.0.0.1:5432"
            )
        checks.append(TcpCheck(name, host.strip("[]"), int(port)))
    return checks


def run(args: argparse.Namespace) -> int:
    """Run the command parsed by :func:`add_parser`'s parser; returns the exit status."""
    from rich.console import Console

    from taskcore.cli import load_configured  # here: taskcore.cli imports this module

    console = Console()
    try:
        app = load_configured(args.app, args.config)
        notifiers: list[Notifier] = [LogNotifier()]
        notifiers += [WebhookNotifier(url) for url in args.webhook]
        monitor = Monitor(
            app,
            interval=args.interval,
            checks=build_checks(args.check_http, args.check_tcp),
            notifiers=notifiers,
            disk_path=args.disk_path,
        )
        if args.once:
            return anyio.run(_once, app, monitor, console)
        anyio.run(_live, app, monitor, console)
    except TaskcoreError as exc:
        from taskcore.cli import print_error

        print_error(exc)
        return EXIT_ERROR
    return EXIT_OK


async def _once(app: App, monitor: Monitor, console: Console) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    async with app:
        snapshot = await monitor.sample()
    console.print(render(snapshot))
    serious = [a for a in snapshot.alerts if a.severity in ("warning", "critical")]
    return EXIT_ALERT if serious else EXIT_OK


async def _live(app: App, monitor: Monitor, console: Console) -> None:
    from rich.live import Live
    from rich.logging import RichHandler

    # log through the live display's console, so log lines print above the view
    logging.basicConfig(
        level=logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console)],
    )
    async with app, anyio.create_task_group() as tg:
        with monitor.subscribe() as snapshots, Live(console=console, auto_refresh=False) as live:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(on_signal)
            tg.start_soon(monitor.run)
            async for snapshot in snapshots:
                live.update(render(snapshot, interval=monitor.interval), refresh=True)


def render(snapshot: Snapshot, *, interval: float | None = None) -> Group:
    """The snapshot as rich tables: queues, workers, checks, resources, alerts."""
    import time

    from rich.console import Group
    from rich.table import Table

    queues = Table(title="queues", title_justify="left")
    for col in ("queue", "ready", "P0", "P1", "P2", "P3", "P4", "running", "scheduled"):
        queues.add_column(col, justify="left" if col == "queue" else "right")
    for col in ("retrying", "succeeded", "failed", "dead", "late"):
        queues.add_column(col, justify="right")
    for q in snapshot.queues:
        queues.add_row(
            q.name + (" (paused)" if q.paused else ""),
            str(q.depth),
            *(str(q.depth_by_priority.get(p, 0)) for p in range(5)),
            str(q.running),
            str(q.scheduled),
            str(q.retrying),
            str(q.succeeded),
            str(q.failed),
            str(q.dead),
            str(q.late),
        )
    rates = snapshot.rates
    queues.caption = (
        f"per second: {rates.succeeded:.1f} succeeded, {rates.failed:.1f} failed, "
        f"{rates.dead:.1f} dead-lettered"
    )

    workers = Table(title=f"workers ({len(snapshot.workers)} alive)", title_justify="left")
    for col in ("worker", "host", "pid", "queues", "busy", "heartbeat"):
        workers.add_column(col, justify="right" if col in ("pid", "busy", "heartbeat") else "left")
    for w in snapshot.workers:
        workers.add_row(
            w.id,
            w.hostname,
            str(w.pid),
            ",".join(w.queues),
            f"{w.busy}/{w.concurrency}",
            f"{snapshot.at - w.heartbeat_at:.0f} s ago",
        )

    checks = Table(title="health checks", title_justify="left")
    for col in ("check", "kind", "status", "latency", "error"):
        checks.add_column(col, justify="right" if col == "latency" else "left")
    for c in snapshot.checks:
        checks.add_row(
            c.name,
            c.kind,
            "[green]ok[/green]" if c.ok else "[red]failing[/red]",
            f"{c.latency * 1000:.1f} ms",
            c.error or "",
        )

    parts: list[Any] = [queues, workers, checks]
    r = snapshot.resources
    if r is not None:
        parts.append(
            f"host: CPU {r.cpu_percent:.0f}%  memory {r.memory_percent:.0f}%  "
            f"disk {r.disk_percent:.0f}%  net {r.net_sent_per_s / 1024:.1f} KiB/s out, "
            f"{r.net_recv_per_s / 1024:.1f} KiB/s in  monitor RSS {r.process_rss / 2**20:.0f} MiB"
        )

    alerts = Table(title="alerts", title_justify="left")
    for col in ("severity", "state", "rule", "subject", "summary", "since"):
        alerts.add_column(col)
    colours = {"critical": "red", "warning": "yellow", "info": "blue"}
    for a in snapshot.alerts:
        colour = colours.get(a.severity, "white")
        alerts.add_row(
            f"[{colour}]{a.severity}[/{colour}]",
            a.state if a.state == AlertState.FIRING else f"[dim]{a.state}[/dim]",
            a.rule,
            a.subject,
            a.summary,
            f"{snapshot.at - a.since:.0f} s",
        )
    if not snapshot.alerts:
        alerts.caption = "none"
    parts.append(alerts)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.at))
    every = f", every {interval:g} s" if interval is not None else ""
    parts.append(f"[dim]sampled {stamp}{every}[/dim]")
    return Group(*parts)
