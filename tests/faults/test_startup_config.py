"""Settings outside their documented bounds stop a worker at start-up, on Redis and on
Postgres: the ``taskcore worker`` command exits with status 2 and one line naming the
setting and its value (or the server it cannot reach), before it claims anything, so
the queue is left as it was and a correctly configured worker then runs every task."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from taskcore import State

from . import crash_app
from .harness import ROOT, Target, Workers, check_outcome, probe
from .servers import free_port

N = 20

# (what, TASKCORE_FAULT_BAD, extra command-line options, message pattern)
CASES = [
    (
        "result retention",
        "result_ttl",
        [],
        r"result_ttl=86400\.0 s is outside the documented bounds of 30-365 days "
        r"\(2592000-31536000 s\)",
    ),
    (
        "dead-letter retention",
        "dead_ttl",
        [],
        r"dead_ttl=31536000\.0 s is outside the documented bounds of 30-180 days "
        r"\(2592000-15552000 s\)",
    ),
    ("retries", "retries", [], r"RetryPolicy\(retries=5000\): must be between 0 and 1000"),
    ("jitter", "jitter", [], r"RetryPolicy\(jitter=1\.5\): jitter is a fraction between 0 and 1"),
    ("retry delay", "delay", [], r"RetryPolicy\(base=-1\.0, .*\): delays must be >= 0 seconds"),
    (
        "queue name",
        "queue",
        [],
        r"invalid queue name 'bad queue': use 1-200 printable characters without whitespace",
    ),
    (
        "lease",
        "",
        ["--lease", "0"],
        r"lease_seconds=0\.0, .*: the lease .* must be > 0 seconds, .*",
    ),
    ("concurrency", "", ["--concurrency", "0"], r"concurrency=0, threads=16, .*must be >= 1"),
    (
        "reserved slots",
        "",
        ["--concurrency", "4", "--reserved-critical", "4"],
        r"reserved_critical=4 must be >= 0 and below concurrency=4",
    ),
]
# a backend option out of bounds in the URL
URL_CASES = {
    "redis": (
        "retries=-1",
        r"Redis URL '.*&retries=-1': max_connections must be >= 1 and retries >= 0",
    ),
    "postgres": ("poll_interval=5", r"poll_interval=5\.0: the poll fallback must be at most 1 s"),
}
# a server that is not there (nothing listens on the port): the message names the
# cause and, for Postgres, what to check
UNREACHABLE = {
    "redis": (
        "redis://:{secret}@127.0.0.1:{port}/0",
        r"Redis at 127\.0\.0\.1:{port}/0 is unavailable during load scripts: "
        r"Error 111 connecting to 127\.0\.0\.1:{port}\. .*; gave up after 4 attempts",
    ),
    "postgres": (
        "postgresql://postgres:{secret}@127.0.0.1:{port}/test?timeout=1",
        r"cannot open PostgreSQL at 127\.0\.0\.1:{port} \(schema 'taskcore'\): connection "
        r'failed: connection to server at "127\.0\.0\.1", port {port} failed: Connection '
        r"refused .*; check that the server is running and reachable at that address, and "
        r"the PostgreSQL URL \(the app's URL, or TASKCORE_PG_DSN\)",
    ),
}
SECRET = "hunter2"  # a password in the URL: no message may show it


def _with_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{'postgres' if scheme.startswith('postgres') else ''}:{SECRET}@" + (
        rest.partition("@")[2] or rest
    )


def _start_bad(url: str, bad: str, options: list[str]) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "TASKCORE_FAULT_URL": url,
        "TASKCORE_FAULT_BAD": bad,
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-m", "taskcore", "worker", "tests.faults.badconfig_app:app"]
    return subprocess.Popen(
        [*argv, "--lease", "2", *options],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _startup_errors(target: Target, log_dir: Path) -> None:
    query, url_pattern = URL_CASES[target.kind]
    cases: list[tuple[str, str, str, list[str], str]] = [
        *((what, target.url, bad, options, pattern) for what, bad, options, pattern in CASES),
        ("backend URL option", _with_password(f"{target.url}&{query}"), "", [], url_pattern),
    ]
    port = free_port()
    url, pattern = (x.format(port=port, secret=SECRET) for x in UNREACHABLE[target.kind])
    cases.append(("server unreachable", url, "", [], pattern))
    numbers = list(range(N))
    with probe(target.url) as p:
        p.enqueue(crash_app.work, [(n, False) for n in numbers])
        procs = [
            (what, pattern, _start_bad(url, bad, opts)) for what, url, bad, opts, pattern in cases
        ]
        for what, pattern, proc in procs:
            out, err = proc.communicate(timeout=60)
            message = " ".join(err.split())  # the console wraps long lines
            assert proc.returncode == 2, (what, proc.returncode, out, err)
            assert re.search(rf"error: {pattern}$", message), (what, message)
            assert "Traceback" not in err, (what, err)
            assert SECRET not in out + err, (what, err)
        # none of them claimed anything or registered as a worker
        assert p.states()[State.QUEUED] == N
        assert p.call(p.app.backend.workers) == []
        with Workers(target, log_dir) as workers:
            workers.start(1)
            p.wait_terminal(N, 60, workers)
        check_outcome(p, target.ledger, numbers, in_flight=0)


def test_startup_config_errors_redis(redis_target: Target, tmp_path: Path) -> None:
    _startup_errors(redis_target, tmp_path)


def test_startup_config_errors_postgres(pg_target: Target, tmp_path: Path) -> None:
    _startup_errors(pg_target, tmp_path)
