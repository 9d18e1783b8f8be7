"""The ``taskcore`` command: worker, status, config, monitor, web, ingest, export, demo,
bench, pg."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .app import App
from .backend import QueueStats
from .errors import ConfigurationError, TaskcoreError
from .recycle import Recycle
from .states import State

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["configure", "load_app", "main"]


def load_app(spec: str) -> App:
    """Import ``module:attribute`` (the attribute defaults to ``app``)."""
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for {spec!r}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"{spec!r} does not name a taskcore App; write it as 'package.module:app'"
        )
    return app


def status_table(stats: Sequence[QueueStats]) -> Table:
    from rich.table import Table  # rich only for the commands that print (not a worker's)

    table = Table(title="taskcore queues")
    for col in (
        "queue",
        "policy",
        "P0",
        "P1",
        "P2",
        "P3",
        "P4",
        "running",
        "scheduled",
        "retrying",
        "succeeded",
        "dead",
        "late",
    ):
        table.add_column(col, justify="left" if col in ("queue", "policy") else "right")
    for s in stats:
        name = s.queue + (" (paused)" if s.paused else "")
        table.add_row(
            name,
            s.policy.kind,
            *(str(s.depth_by_priority.get(p, 0)) for p in range(5)),
            str(s.states.get(State.RUNNING, 0)),
            str(s.states.get(State.SCHEDULED, 0)),
            str(s.states.get(State.RETRYING, 0)),
            str(s.states.get(State.SUCCEEDED, 0)),
            str(s.states.get(State.DEAD, 0)),
            str(s.late),
        )
    return table


CONFIG_HELP = (
    "a settings file (.toml, .json, .yaml; default: $TASKCORE_CONFIG) for the app; the "
    "TASKCORE_... environment applies over it"
)


def load_configured(spec: str, config: str | None) -> App:
    """:func:`load_app` with the settings file ``config`` and the ``TASKCORE_...``
    environment applied (:func:`configure`): the app a worker given the same would
    use, so that a command reaches the same backend."""
    app = load_app(spec)
    configure(app, config)
    return app


def configure(app: App, config: str | None) -> dict[str, Any]:
    """Apply the settings file ``config`` (default: the one ``TASKCORE_CONFIG`` names,
    if any) and the ``TASKCORE_...`` environment to ``app``, over its own settings;
    returns the worker options they give."""
    from .config import resolve

    resolved = resolve(config, base=app.settings)
    app.configure(resolved)
    return resolved.settings.worker.options()


def _worker_options(app: App, args: argparse.Namespace) -> dict[str, Any]:
    """The worker's options: the app's settings < file < environment < flags."""
    options = configure(app, args.config)
    flags = {
        "queues": args.queues.split(",") if args.queues else None,
        "concurrency": args.concurrency,
        "min_concurrency": args.min_concurrency,
        "max_concurrency": args.max_concurrency,
        "threads": args.threads,
        "processes": args.processes,
        "reserved_critical": args.reserved_critical,
        "lease_seconds": args.lease,
        "grace_period": args.grace,
        "maintenance_interval": args.maintenance_interval,
        "max_tasks": args.max_tasks,
        "max_rss": args.max_rss,
        "lost_lease_allowance": args.lost_lease_allowance,
        "prefetch": args.prefetch,
    }
    options.update({k: v for k, v in flags.items() if v is not None})
    return options


def print_error(exc: BaseException) -> None:
    """``error: <message>`` on standard error, in red on a terminal. The message is
    escaped: its own brackets (pip install "taskcore[pg]") are not rich markup."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}")


def _loop_options(loop: str) -> dict[str, Any]:
    """anyio's asyncio backend options for ``--loop`` (anyio would quietly fall back to
    asyncio's loop without uvloop installed)."""
    if loop != "uvloop":
        return {}
    if importlib.util.find_spec("uvloop") is None:
        raise ConfigurationError(
            "--loop uvloop: uvloop is not installed; pip install 'taskcore[uvloop]' "
            "(or leave out --loop for asyncio's own loop)"
        )
    return {"use_uvloop": True}


async def _run_worker(app: App, args: argparse.Namespace) -> None:
    log = logging.getLogger("taskcore.worker")
    worker = app.worker(**_worker_options(app, args))
    # open the app outside the task group: a setting out of bounds or an unreachable
    # server then ends the command with its one-line error, not an exception group
    async with app, anyio.create_task_group() as tg:

        async def on_signal(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()  # handlers in place before the worker says it started
                async for signum in signals:
                    log.info(
                        "%s: stopping (grace %ss)",
                        signal.Signals(signum).name,
                        worker.grace_period,
                    )
                    worker.stop()
                    return

        await tg.start(on_signal)
        await worker.run()
        tg.cancel_scope.cancel()
    if worker.recycled is not None:
        log.info(
            "worker %s retired (%s) after %d task(s)", worker.id, worker.recycled, worker.processed
        )


async def _supervise(argv: Sequence[str], count: int) -> None:
    from .supervisor import Supervisor, child_command

    supervisor = Supervisor(child_command(argv), count)
    async with anyio.create_task_group() as tg:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    logging.getLogger("taskcore.supervisor").info(
                        "%s: stopping %d worker process(es)", signal.Signals(signum).name, count
                    )
                    supervisor.stop()
                    return

        tg.start_soon(on_signal)
        await supervisor.run()
        tg.cancel_scope.cancel()


async def _status(app: App) -> None:
    async with app:
        stats = await app.stats()
        workers = await app.backend.workers()
    from rich.console import Console

    console = Console()
    console.print(status_table(stats))
    console.print(f"{len(workers)} worker(s) alive")


def _supervisor_child_env() -> str:
    from .supervisor import CHILD_ENV  # the supervisor only with --workers

    return CHILD_ENV


def _prefetch(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: use a number of tasks >= 0, or 'auto'")
    return value


# commands whose modules are imported only when run (a worker loads none of them):
# name -> (help, the module with add_parser() and run())
_LAZY_COMMANDS = {
    "config": (
        "show the settings, read or change the remote configuration of module:app",
        "taskcore.config.cli",
    ),
    "monitor": (
        "watch queues, workers, health checks and alerts for module:app",
        "taskcore.monitor.cli",
    ),
    "web": ("serve the web API and live dashboard for module:app", "taskcore.web.cli"),
    "ingest": (
        "enqueue a task once per record of a CSV, JSON Lines, JSON or XML file",
        "taskcore.ingest.cli",
    ),
    "export": (
        "write tasks and their results as JSON, CSV, XML or MessagePack",
        "taskcore.formats.cli",
    ),
}


def _lazy_command(name: str, rest: Sequence[str]) -> int:
    """Run the command's module with its own parser."""
    module = importlib.import_module(_LAZY_COMMANDS[name][1])
    parser = argparse.ArgumentParser(prog="taskcore")
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    return int(module.run(parser.parse_args([name, *rest])))


def _parser() -> argparse.ArgumentParser:
    """The command line's parser (built per call: a worker keeps only the parsed
    arguments, not the parsers, for its lifetime)."""
    parser = argparse.ArgumentParser(prog="taskcore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    w = sub.add_parser("worker", help="run a worker for module:app")
    w.add_argument("app", help="the app, as package.module:app")
    w.add_argument(
        "--config",
        help="a settings file (.toml, .json, .yaml; default: $TASKCORE_CONFIG); the "
        "TASKCORE_... environment applies over it, these flags over both",
    )
    w.add_argument("--queues", "-q", help="comma-separated queues (default: all the app's)")
    w.add_argument("--concurrency", "-c", type=int, help="slots (default 100)")
    w.add_argument("--min-concurrency", type=int)
    w.add_argument("--max-concurrency", type=int)
    w.add_argument("--threads", type=int, help="thread-pool size for sync tasks (default 16)")
    w.add_argument(
        "--processes", type=int, help="process-pool size for complex tasks (default: CPUs)"
    )
    w.add_argument("--reserved-critical", type=int, help="slots only P0 tasks take (default 0)")
    w.add_argument(
        "--prefetch",
        type=_prefetch,
        help="tasks claimed beyond the free slots: N, or 'auto' (about what the slots "
        "finish during one claim round trip, none while tasks run long); default 0",
    )
    w.add_argument("--lease", type=float, help="lease seconds (default 30)")
    w.add_argument("--grace", type=float, help="grace seconds at shutdown (default 30)")
    w.add_argument(
        "--maintenance-interval",
        type=float,
        help="seconds between reaping expired leases, heartbeats, autoscaling and "
        "reading the remote configuration (default 5)",
    )
    w.add_argument(
        "--max-tasks",
        type=int,
        help="retire after this many tasks (finishes what it runs, then exits)",
    )
    w.add_argument(
        "--max-rss",
        help="retire once the worker or a process-pool child holds this much memory, e.g. 512MB",
    )
    w.add_argument(
        "--lost-lease-allowance",
        type=int,
        help="runs beyond the retry policy's attempts before a task whose worker keeps "
        "getting lost is dead-lettered as poison (default 3)",
    )
    w.add_argument(
        "--workers",
        type=int,
        help="run this many worker processes under a supervisor that replaces any that "
        "exit (retired by --max-tasks/--max-rss, or crashed)",
    )
    w.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop: asyncio's own (default), or uvloop (the uvloop extra: "
        "lower latency, about 2 MB more memory)",
    )
    w.add_argument("--log-level", default="INFO")

    s = sub.add_parser("status", help="print queue depths for module:app")
    s.add_argument("app")
    s.add_argument("--config", help=CONFIG_HELP)

    for name, (text, _) in _LAZY_COMMANDS.items():
        lazy = sub.add_parser(name, help=text, add_help=False, prefix_chars="\0")
        lazy.add_argument("rest", nargs=argparse.REMAINDER)

    d = sub.add_parser("demo", help="a self-contained demo on the in-memory backend")
    d.add_argument("--tasks", type=int, default=2400)
    d.add_argument("--no-live", action="store_true", help="no live progress display")

    b = sub.add_parser("bench", help="run the benchmark harness (python -m benchmarks)")
    b.add_argument("rest", nargs=argparse.REMAINDER)

    p = sub.add_parser("pg", help="PostgreSQL backend tools (migrate)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "worker":
            logging.basicConfig(
                level=args.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            if args.workers is not None and args.workers < 1:
                raise ConfigurationError(f"--workers {args.workers}: give at least 1 process")
            if args.workers is not None and _supervisor_child_env() not in os.environ:
                # fail here, once, rather than in every child
                options = _worker_options(load_app(args.app), args)
                Recycle.from_options(options["max_tasks"], options["max_rss"])
                anyio.run(_supervise, sys.argv[1:] if argv is None else list(argv), args.workers)
                return 0
            options = _loop_options(args.loop)
            anyio.run(_run_worker, load_app(args.app), args, backend_options=options)
        elif args.command == "status":
            anyio.run(_status, load_configured(args.app, args.config))
        elif args.command in _LAZY_COMMANDS:
            return _lazy_command(args.command, args.rest)
        elif args.command == "demo":
            from .demo import run_demo

            return run_demo(args.tasks, live=not args.no_live)
        elif args.command == "bench":
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            try:
                bench = importlib.import_module("benchmarks.__main__")
            except ImportError:
                raise ConfigurationError(
                    "the benchmark harness lives in the source tree: run 'taskcore bench' from "
                    "a checkout of taskcore"
                ) from None
            return int(bench.main(args.rest))
        elif args.command == "pg":
            try:
                pg_cli = importlib.import_module("taskcore_pg.cli")
            except ImportError as exc:
                raise ConfigurationError(
                    f'the pg command needs the PostgreSQL extra ({exc}): pip install "taskcore[pg]"'
                ) from None
            return int(pg_cli.main(args.rest))
    except TaskcoreError as exc:
        print_error(exc)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
