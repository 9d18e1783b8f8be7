"""``taskcore config``: the settings a worker of module:app would use, and the remote
configuration its workers pick up at their next maintenance.

    taskcore config show module:app [--config FILE]    settings and their sources (JSON)
    taskcore config get module:app                     the remote document (JSON)
    taskcore config set module:app --concurrency 8 --pause --flag new-billing=on \\
        --flag checkout=25% --flag old-thing=none      change it (bumps its version)

``--flag NAME=VALUE``: ``on`` / ``off``, a percentage rollout (``25%``), or ``none`` to
remove the flag (the processes' own value applies again). ``--concurrency none`` hands
the slot count back to each worker. Exit status: 0, or 2 for a bad setting or value.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec

from taskcore.errors import ConfigurationError, TaskcoreError

from .flags import Flag

__all__ = ["add_parser", "run"]

EXIT_OK, EXIT_ERROR = 0, 2


def _flag(text: str) -> tuple[str, Flag | None]:
    name, sep, value = text.partition("=")
    value = value.strip().lower()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=on|off|N%|none")
    if value in ("on", "true"):
        return name, Flag()
    if value in ("off", "false"):
        return name, Flag(enabled=False)
    if value == "none":
        return name, None
    try:
        percent = float(value.removesuffix("%"))
    except ValueError:
        percent = -1.0
    if not value.endswith("%") or not 0 <= percent <= 100:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a flag is on, off, a percentage between 0% and 100%, or none"
        )
    return name, Flag(percent=percent)


def _concurrency(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a number of slots, or none (each worker's own)"
        ) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``config`` command to ``parser.add_subparsers()``'s result."""
    from taskcore.cli import CONFIG_HELP

    p: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="show the settings, read or change the remote configuration of module:app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (
        ("show", "the settings a worker would use, with their sources"),
        ("get", "print the remote configuration"),
        ("set", "change the remote configuration"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("app", help="the app, as package.module:app")
        a.add_argument("--config", help=CONFIG_HELP)
        if name == "set":
            a.add_argument(
                "--concurrency",
                type=_concurrency,
                default=argparse.SUPPRESS,  # absent unless given (none: a value)
                help="N, or none",
            )
            pause = a.add_mutually_exclusive_group()
            pause.add_argument("--pause", dest="paused", action="store_const", const=True)
            pause.add_argument("--resume", dest="paused", action="store_const", const=False)
            a.add_argument(
                "--flag",
                type=_flag,
                action="append",
                default=[],
                metavar="NAME=on|off|N%|none",
            )
            a.add_argument(
                "--replace",
                action="store_true",
                help="start from an empty document (one this version cannot read)",
            )
    return p


def _print(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value)).decode() + "\n")


async def _remote(args: argparse.Namespace, app: Any) -> None:
    from .remote import RemoteDocument

    async with app:
        if args.action == "get":
            doc = await app.config.get_remote()
        else:
            changes: dict[str, Any] = {}
            if "concurrency" in args:
                changes["concurrency"] = args.concurrency
            if args.paused is not None:
                changes["paused"] = args.paused
            flags: Mapping[str, Flag | None] = dict(args.flag)
            if not changes and not flags and not args.replace:
                raise ConfigurationError(
                    "nothing to set: give --concurrency, --pause/--resume or --flag"
                )
            doc = await app.config.set_remote(**changes, flags=flags, replace=args.replace)
    _print(doc or RemoteDocument())


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``config`` command; returns the exit status."""
    from taskcore.cli import load_configured

    try:
        app = load_configured(args.app, args.config)
        if args.action == "show":
            from .settings import resolve

            resolved = resolve(args.config, base=app.settings)
            _print(
                {
                    "settings": resolved.settings,
                    "sources": {k: str(v) for k, v in sorted(resolved.sources.items())},
                }
            )
            return EXIT_OK
        anyio.run(_remote, args, app)
    except TaskcoreError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_ERROR
    return EXIT_OK
