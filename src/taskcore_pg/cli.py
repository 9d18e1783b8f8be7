"""``taskcore pg ...``: PostgreSQL schema tools (the core CLI delegates here).

Usage::

    taskcore pg migrate [--url URL] [--schema NAME]          apply pending migrations
    taskcore pg migrate --check [--url URL] [--schema NAME]  exit 0 if up to date, else 1

The URL defaults to ``$TASKCORE_PG_DSN``; ``?schema=`` in it, or ``--schema``, picks the
schema (default ``taskcore``). Exit codes: 0 done / up to date, 1 migrations pending,
2 usage error, 3 server unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys

from taskcore.errors import BackendUnavailable, ConfigurationError

from ._config import split_url
from .migrations import LATEST_VERSION, check, migrate

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskcore pg", description="PostgreSQL backend tools")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("migrate", help="create or upgrade the taskcore schema")
    m.add_argument(
        "--url",
        default=os.environ.get("TASKCORE_PG_DSN"),
        help="postgresql:// URL (default: $TASKCORE_PG_DSN)",
    )
    m.add_argument("--schema", help="schema name (default: ?schema= in the URL, else taskcore)")
    m.add_argument(
        "--check", action="store_true", help="only report: exit 1 if migrations are pending"
    )
    return parser


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def main(argv: list[str]) -> int:
    """Run ``taskcore pg`` with ``argv`` (the words after ``pg``); returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("no database URL: pass --url or set TASKCORE_PG_DSN")
    try:
        dsn, settings = split_url(args.url)
        schema = args.schema or settings.get("schema", "taskcore")
        if args.check:
            if check(dsn, schema):
                _say(f"schema {schema!r} is up to date (version {LATEST_VERSION})")
                return 0
            _say(f"schema {schema!r} needs migrations (latest version {LATEST_VERSION})")
            return 1
        migrate(dsn, schema)
        _say(f"schema {schema!r} migrated to version {LATEST_VERSION}")
        return 0
    except ConfigurationError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except BackendUnavailable as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 3
