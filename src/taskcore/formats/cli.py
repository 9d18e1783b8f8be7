"""``taskcore export module:app --format csv > tasks.csv``: write tasks, with their
arguments and results, as JSON, CSV, XML or MessagePack (to standard output or
``--output``).

CSV is spreadsheet-safe unless ``--no-spreadsheet-safe`` is given: a text cell that a
spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) gets a
leading ' (see taskcore.formats); give --no-spreadsheet-safe to write exact values for
a program to read back (e.g. taskcore ingest).

Tasks are read from the backend 1,000 at a time, newest first as the backend lists
them; tasks that change state during the export may be missed or written twice.
Exit status: 0 once written, 2 for a bad option or an app that cannot be loaded.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

import anyio

from taskcore.errors import ConfigurationError, TaskcoreError

from . import FORMATS, Format, render, task_rows

if TYPE_CHECKING:
    from taskcore.app import App

__all__ = ["add_parser", "export", "run"]

PAGE = 1000


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` command to ``parser.add_subparsers()``'s result."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write tasks and their results as JSON, CSV, XML or MessagePack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from taskcore.cli import CONFIG_HELP

    p.add_argument("app", help="the app, as package.module:app")
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument("--format", choices=FORMATS, default="json")
    p.add_argument("--state", help="only tasks in this state (e.g. succeeded, dead)")
    p.add_argument("--queue", help="only tasks of this queue")
    p.add_argument("--task", help="only tasks of this task name")
    p.add_argument("--limit", type=int, help="at most this many tasks (default: all)")
    p.add_argument("--output", "-o", help="write to this file instead of standard output")
    p.add_argument(
        "--spreadsheet-safe",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CSV: prefix cells a spreadsheet would run as formulas with ' (default: on; "
        "--no-spreadsheet-safe writes exact values)",
    )
    return p


async def export(
    app: App,
    format: Format,
    *,
    state: str | None = None,
    queue: str | None = None,
    task: str | None = None,
    limit: int | None = None,
    spreadsheet_safe: bool = True,
) -> bytes:
    """The tasks matching the filters, rendered in ``format`` (``spreadsheet_safe``:
    see :func:`taskcore.formats.render`).

    Raises:
        ConfigurationError: an unknown state or a bad limit.
    """
    from taskcore.states import State

    try:
        wanted = State(state) if state else None
    except ValueError:
        raise ConfigurationError(
            f"unknown state {state!r}: use one of {', '.join(State)}"
        ) from None
    if limit is not None and limit < 1:
        raise ConfigurationError(f"--limit {limit}: give at least 1")
    rows: list[dict[str, Any]] = []
    offset = 0
    while limit is None or len(rows) < limit:
        page = PAGE if limit is None else min(PAGE, limit - len(rows))
        records = await app.list_tasks(
            state=wanted, queue=queue, task=task, limit=page, offset=offset
        )
        rows += task_rows(app, records)
        offset += len(records)
        if len(records) < page:
            break
    return render(rows, format, spreadsheet_safe=spreadsheet_safe)


def run(args: argparse.Namespace) -> int:
    """Run the command parsed by :func:`add_parser`'s parser; returns the exit status."""
    from taskcore.cli import load_configured

    try:
        app = load_configured(args.app, args.config)
        data = anyio.run(_export, app, args)
        if args.output:
            with open(args.output, "wb") as out:
                out.write(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    except (TaskcoreError, OSError) as exc:
        from taskcore.cli import print_error

        print_error(exc)
        return 2
    return 0


async def _export(app: App, args: argparse.Namespace) -> bytes:
    async with app:
        return await export(
            app,
            args.format,
            state=args.state,
            queue=args.queue,
            task=args.task,
            limit=args.limit,
            spreadsheet_safe=args.spreadsheet_safe,
        )
