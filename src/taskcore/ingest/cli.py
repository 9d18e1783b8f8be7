"""``taskcore ingest module:app TASK FILE``: enqueue TASK once per record of FILE and
print the summary.

``--run NAME`` names the run: run the same FILE again with the same name (after a
failure, or after fixing rejected records) and only the records not enqueued yet are
enqueued; the others are counted as duplicates. Without it the run gets a new name,
printed in the summary, that can be given just the same.

Exit status: 0 when every record was enqueued (or was a duplicate of a waiting unique
task), 1 when any record was rejected (each one is in the journal, ``app.rejects()``),
2 for a bad option, an app that cannot be loaded, an unknown task, an unreadable file
or a backend failure.
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, TYPE_CHECKING, Any

import anyio

from taskcore.errors import ConfigurationError, TaskcoreError

from . import DEFAULT_BATCH, IngestError, IngestReport, ingest_file
from .sources import SOURCE_FORMATS

if TYPE_CHECKING:
    from rich.console import Group

    from taskcore.app import App

__all__ = ["add_parser", "render", "run"]

EXIT_OK, EXIT_REJECTED, EXIT_ERROR = 0, 1, 2
SHOWN = 20


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``ingest`` command to ``parser.add_subparsers()``'s result."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ingest",
        help="enqueue a task once per record of a CSV, JSON Lines, JSON or XML file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from taskcore.cli import CONFIG_HELP

    p.add_argument("app", help="the app, as package.module:app")
    p.add_argument("task", help="the registered name of the task")
    p.add_argument("file", help="the file to read; - for standard input (give --format)")
    p.add_argument("--format", choices=SOURCE_FORMATS, help="default: from the file name's suffix")
    p.add_argument("--queue", help="enqueue into this queue (default: the task's)")
    p.add_argument("--priority", help="P0-P4, 0-4 or a name (critical, high, ...)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help=f"records per backend call (default {DEFAULT_BATCH})",
    )
    p.add_argument("--record-tag", help="XML: only elements with this tag are records")
    p.add_argument(
        "--run",
        help="the run's name: given again, enqueue only the records of FILE that the "
        "earlier attempts did not (default: a new name)",
    )
    p.add_argument("--config", help=CONFIG_HELP)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the command parsed by :func:`add_parser`'s parser; returns the exit status."""
    from rich.console import Console

    from taskcore.cli import load_configured, print_error

    options: dict[str, Any] = {}
    if args.queue:
        options["queue"] = args.queue
    if args.priority:
        options["priority"] = args.priority
    try:
        app = load_configured(args.app, args.config)
        if args.file == "-" and args.format is None:
            raise ConfigurationError("reading standard input: give --format")
        report = anyio.run(_ingest, app, args, options)
    except IngestError as exc:
        Console().print(render(exc.report))
        print_error(exc)
        return EXIT_ERROR
    except (TaskcoreError, OSError) as exc:
        print_error(exc)
        return EXIT_ERROR
    Console().print(render(report))
    return EXIT_OK if report.ok else EXIT_REJECTED


async def _ingest(app: App, args: argparse.Namespace, options: dict[str, Any]) -> IngestReport:
    source: str | IO[bytes] = sys.stdin.buffer if args.file == "-" else args.file
    async with app:
        return await ingest_file(
            app,
            args.task,
            source,
            format=args.format,
            batch_size=args.batch_size,
            record_tag=args.record_tag,
            run=args.run,
            **options,
        )


def render(report: IngestReport) -> Group:
    """The report as rich text and tables: counts, reasons, the first rejects."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    summary = Text(
        f"{report.source} -> {report.task}: read {report.read}, enqueued {report.enqueued}"
        f" in {report.batches} batch(es), duplicates {report.duplicates}, rejected "
        f"{report.rejected} (run {report.run}"
        + (f", attempt {report.attempt})" if report.attempt != report.run else ")"),
        style="green" if report.ok else "yellow",
    )
    parts: list[Any] = [summary]
    if report.stopped:
        parts.append(Text(f"reading stopped: {report.stopped}", style="red"))
    if report.reasons:
        reasons = Table(title="rejected, per reason", title_justify="left")
        reasons.add_column("reason")
        reasons.add_column("records", justify="right")
        for kind, count in sorted(report.reasons.items(), key=lambda kv: -kv[1]):
            reasons.add_row(kind, str(count))
        parts.append(reasons)
        first = Table(title=f"first {min(SHOWN, report.rejected)} rejects", title_justify="left")
        for col in ("record", "line", "reason"):
            first.add_column(col, justify="right" if col != "reason" else "left")
        for rej in report.rejects[:SHOWN]:
            first.add_row(str(rej.number), str(rej.line or ""), rej.reason)
        parts.append(first)
        parts.append(Text(f"every reject is kept in the journal: app.rejects({report.run!r})"))
    return Group(*parts)
