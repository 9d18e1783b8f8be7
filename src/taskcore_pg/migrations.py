"""Versioned schema migrations.

Migrations are the files ``sql/migrations/NNNN_name.sql``; each runs once per schema,
in version order, inside one transaction together with its row in the
``schema_version`` table of that schema. The whole run holds a transaction-level
advisory lock keyed on the schema name, so workers starting at the same time apply
each migration exactly once. Every file is written to be idempotent as well
(``IF NOT EXISTS``, ``CREATE OR REPLACE``).

:func:`migrate` and :func:`check` are blocking helpers for scripts and the CLI;
:func:`migrate_async` and :func:`check_async` take an open async connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from taskcore.errors import BackendUnavailable

from ._config import UNREACHABLE_HINT, libpq_defaults
from ._sql import check_schema, migrations, render

__all__ = ["LATEST_VERSION", "check", "check_async", "current_version", "migrate", "migrate_async"]

LATEST_VERSION = max(version for version, _, _ in migrations())

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('taskcore.migrate'), hashtext(%s))"


async def current_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The schema's applied version (0 if it has none)."""
    check_schema(schema)
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f'"{schema}".schema_version'])
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute(render("SELECT max(version) FROM @schema@.schema_version", schema))
    row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def migrate_async(conn: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    """Apply the pending migrations to ``schema``; returns the versions applied."""
    check_schema(schema)
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute(_LOCK, [schema])
        await conn.execute(render("CREATE SCHEMA IF NOT EXISTS @schema@", schema))
        await conn.execute(
            render(
                "CREATE TABLE IF NOT EXISTS @schema@.schema_version ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())",
                schema,
            )
        )
        done = await current_version(conn, schema)
        for version, name, text in migrations():
            if version <= done:
                continue
            await conn.execute(render(text, schema))
            await conn.execute(
                render(
                    "INSERT INTO @schema@.schema_version (version, name) VALUES (%s, %s)", schema
                ),
                [version, name],
            )
            applied.append(version)
    return applied


async def check_async(conn: psycopg.AsyncConnection[Any], schema: str) -> bool:
    """True if ``schema`` has every migration applied."""
    return await current_version(conn, schema) >= LATEST_VERSION


async def _with_connection(dsn: str, schema: str, apply: bool) -> bool:
    try:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **libpq_defaults(dsn))
    except psycopg.OperationalError as exc:
        cause = " ".join(str(exc).split())
        raise BackendUnavailable(
            f"cannot connect to PostgreSQL to migrate schema {schema!r}: {cause}; "
            f"{UNREACHABLE_HINT}"
        ) from exc
    async with conn:
        if apply:
            await migrate_async(conn, schema)
        return await check_async(conn, schema)


def migrate(dsn: str, schema: str = "taskcore") -> None:
    """Create or upgrade the taskcore tables in ``schema`` (blocking; for scripts/CLI).

    Raises:
        BackendUnavailable: the server cannot be reached.
    """
    asyncio.run(_with_connection(dsn, schema, apply=True))


def check(dsn: str, schema: str = "taskcore") -> bool:
    """True if ``schema`` is at the latest version (blocking; for scripts/CLI).

    Raises:
        BackendUnavailable: the server cannot be reached.
    """
    return asyncio.run(_with_connection(dsn, schema, apply=False))
