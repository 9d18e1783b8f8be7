"""Private Redis and PostgreSQL servers that a test may kill and restart.

The shared servers on 6379/5432 are never touched: each private server runs on a
free port from a temporary directory and is removed at the end. Starting one needs
``redis-server`` on PATH, or PostgreSQL 15's binaries and the ``postgres`` user
(``initdb`` refuses to run as root); :class:`ServerUnavailable` says which is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

import redis as redis_sync

__all__ = ["PrivatePostgres", "PrivateRedis", "ServerUnavailable", "free_port", "private_dir"]

PG_BIN = Path(os.environ.get("TASKCORE_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 30.0


class ServerUnavailable(RuntimeError):
    """A private server cannot be started on this machine (the message says why)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.05)


class PrivateRedis:
    """``redis-server`` with AOF on and fsync per write, in a directory of its own, so
    that a SIGKILL loses nothing it acknowledged."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            raise ServerUnavailable("redis-server is not on PATH")
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        client = redis_sync.Redis(port=self.port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis_sync.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--logfile", str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(self._ping, f"redis-server on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; only the AOF remains."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port and directory (it reloads the AOF)."""
        self.start()
        self.restarts += 1

    def close(self) -> None:
        if self.proc is not None:
            self.kill()


class PrivatePostgres:
    """A PostgreSQL 15 cluster of its own (``initdb`` as the ``postgres`` user)."""

    def __init__(self, directory: Path) -> None:
        for binary in ("initdb", "pg_ctl"):
            if not (PG_BIN / binary).exists():
                raise ServerUnavailable(f"{PG_BIN / binary} not found; set TASKCORE_PG_BIN")
        try:
            self._user = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("there is no 'postgres' user to run initdb as") from None
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()
        self.restarts = 0
        os.chown(directory, self._user.pw_uid, self._user.pw_gid)
        self._as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "--no-sync", "-E", "UTF8"]
        )  # fmt: skip

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, argv: list[str]) -> None:
        if os.geteuid() == self._user.pw_uid:
            cmd = argv
        elif os.geteuid() == 0 and shutil.which("runuser"):
            cmd = ["runuser", "-u", "postgres", "--", *argv]
        else:
            raise ServerUnavailable(
                "a private PostgreSQL cluster needs to run as the 'postgres' user: run the "
                "tests as root (runuser) or as postgres"
            )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ServerUnavailable(f"{' '.join(argv[:2])} failed: {done.stderr.strip()}")

    def _pg_ctl(self, *args: str) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        self._as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
             "-o", options, "-w", "-t", str(int(START_TIMEOUT)), *args]
        )  # fmt: skip

    def _ready(self) -> bool:
        try:
            psycopg.connect(self.dsn, connect_timeout=1).close()
        except psycopg.OperationalError:
            return False
        return True

    def start(self) -> None:
        self._pg_ctl("start")
        _wait_for(self._ready, f"PostgreSQL on port {self.port}")

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m fast`` (sessions ended cleanly) or ``-m immediate`` (no
        shutdown checkpoint, crash recovery on start)."""
        self._pg_ctl("restart", "-m", mode)
        _wait_for(self._ready, f"PostgreSQL on port {self.port}")
        self.restarts += 1

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate")


def private_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
