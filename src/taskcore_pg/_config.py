"""Backend settings and the ``postgresql://`` URL form."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
import psycopg
from psycopg.conninfo import conninfo_to_dict

from taskcore.discovery import redact_url
from taskcore.errors import ConfigurationError

from ._sql import check_schema

__all__ = ["LIBPQ_DEFAULTS", "Settings", "libpq_defaults", "split_url"]

# Dead-peer detection (docs/postgres.md, "Dead connections"), used unless the URL
# sets them: give up connecting after 10 s; TCP keepalive probes after 15 s idle,
# every 5 s, 3 of them; and drop a connection whose sent data stays unacknowledged
# for 30 s. A peer that vanished without a FIN or RST is noticed within ~30 s.
LIBPQ_DEFAULTS: dict[str, str] = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


def libpq_defaults(dsn: str) -> dict[str, Any]:
    """The :data:`LIBPQ_DEFAULTS` that ``dsn`` does not set itself."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL {redact_url(dsn)!r}: {exc}") from None
    return {k: v for k, v in LIBPQ_DEFAULTS.items() if k not in given}


# what to check when the server cannot be reached (appended to the error)
UNREACHABLE_HINT = (
    "check that the server is running and reachable at that address, and the PostgreSQL "
    "URL (the app's URL, or TASKCORE_PG_DSN)"
)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"PostgresBackend {attribute.name}={value!r}: must be > 0")


@attrs.frozen
class Settings:
    """Everything tunable about a :class:`~taskcore_pg.PostgresBackend`.

    Attributes:
        schema: the PostgreSQL schema holding taskcore's tables.
        min_size, max_size: connection pool bounds.
        migrate_on_start: apply pending migrations when the backend opens.
        listen: wake waiters through LISTEN/NOTIFY. Turn off behind a
            transaction-mode pooler (PgBouncer), which cannot hold a LISTEN session;
            waiters then poll every ``poll_interval`` seconds.
        poll_interval: the poll fallback of ``wait``/``wait_done`` (at most 1 s).
        application_name: shown in ``pg_stat_activity`` for the pool and listener.
        timeout: seconds to wait for a pooled connection before BackendUnavailable.
        operation_timeout: seconds one operation (its statements on one connection)
            may take before the connection is given up as dead and the operation
            fails with BackendUnavailable; also how often the LISTEN connection is
            checked. Server-side timeouts cannot help when the server never hears
            the statement; make this longer than your slowest statement.
        batch_size: rows per statement for settling, reaping, pruning and purging.
        promote_limit: due scheduled tasks promoted per queue and claim (at least the
            claim's limit).
        enqueue_chunk: messages per INSERT statement in a bulk enqueue.
        prepare_threshold: psycopg's server-side prepare threshold (None disables it,
            needed behind PgBouncer < 1.21 in transaction mode).
        claim_sync_commit: make a claim's commit wait for its WAL flush. Off by
            default: a claim lost in a server crash only returns its tasks to the
            queue (like an expired lease; delivery is at-least-once anyway), and the
            flush was most of an idle worker's wake-up latency. Enqueues and settles
            always wait (the server's ``synchronous_commit``).
        plan_guard: run the pool's sessions with ``enable_bitmapscan = off``, so the
            claim reads the ready and due rows in index order and stops after
            ``limit`` of them whatever the table's statistics say. A backlog that
            grows faster than autovacuum analyzes the table (a bulk load, a burst)
            otherwise makes the planner expect a handful of queued rows and pick a
            bitmap scan that reads and sorts the whole backlog on every claim (58 ms
            instead of 0.9 ms per claim with 180,000 queued rows). Behind a
            transaction-mode pooler, turn it off and set the parameter on the role
            instead (``ALTER ROLE ... SET enable_bitmapscan = off``): a session SET
            there would reach other clients. With it (and ``prepare_threshold``) the
            claim also runs on a generic plan, made once per session and pinned to
            index reads (``claim_plan.sql``), instead of being planned again on every
            call: claims then run on sessions of their own (a second pool of up to
            ``max_size`` connections, opened on the first claim) that keep the pins.
    """

    schema: str = attrs.field(default="taskcore", validator=lambda _i, _a, v: check_schema(v))
    min_size: int = 1
    max_size: int = 10
    migrate_on_start: bool = True
    listen: bool = True
    poll_interval: float = attrs.field(default=1.0, validator=_positive)
    application_name: str = "taskcore"
    timeout: float = attrs.field(default=10.0, validator=_positive)
    operation_timeout: float = attrs.field(default=30.0, validator=_positive)
    batch_size: int = 1000
    promote_limit: int = 1000
    enqueue_chunk: int = 5000
    prepare_threshold: int | None = 5
    claim_sync_commit: bool = False
    plan_guard: bool = True

    def __attrs_post_init__(self) -> None:
        if self.poll_interval > 1.0:
            raise ConfigurationError(
                f"poll_interval={self.poll_interval!r}: the poll fallback must be at most 1 s"
            )
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ConfigurationError(
                f"pool sizes min_size={self.min_size}, max_size={self.max_size}: "
                "need 0 <= min_size <= max_size and max_size >= 1"
            )


_BOOL = {"1": True, "true": True, "yes": True, "on": True,
         "0": False, "false": False, "no": False, "off": False}  # fmt: skip

# URL query parameters that belong to taskcore, not to libpq.
_URL_PARAMS: dict[str, type] = {
    "schema": str,
    "min_size": int,
    "max_size": int,
    "migrate": bool,
    "listen": bool,
    "poll_interval": float,
    "application_name": str,
    "timeout": float,
    "operation_timeout": float,
    "plan_guard": bool,
}


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """Split a ``postgresql://`` URL into the DSN for psycopg and taskcore's settings.

    ``?schema=app&listen=0`` and the other taskcore parameters are removed; every other
    query parameter (``sslmode``, ``connect_timeout``...) stays for libpq.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"not a PostgreSQL URL: {redact_url(url)!r}; use postgresql://user@host:5432/dbname"
        )
    keep: list[tuple[str, str]] = []
    settings: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        kind = _URL_PARAMS.get(key)
        if kind is None:
            keep.append((key, value))
            continue
        name = "migrate_on_start" if key == "migrate" else key
        try:
            if kind is bool:
                settings[name] = _BOOL[value.lower()]
            else:
                settings[name] = kind(value)
        except (KeyError, ValueError):
            raise ConfigurationError(
                f"invalid value {value!r} for ?{key}= in the PostgreSQL URL"
            ) from None
    dsn = urlunsplit(parts._replace(query=urlencode(keep)))
    return dsn, settings
