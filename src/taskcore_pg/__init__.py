"""taskcore's PostgreSQL backend (psycopg 3 async + psycopg_pool; asyncio only).

``App("postgresql://user@host/db?schema=taskcore")`` finds :class:`PostgresBackend`
through the ``taskcore.backends`` entry point. Schema management: :func:`migrate` and
:func:`check` (or ``taskcore pg migrate [--check]``).
"""

from __future__ import annotations

from .backend import PostgresBackend
from .migrations import LATEST_VERSION, check, check_async, migrate, migrate_async

__all__ = [
    "LATEST_VERSION",
    "PostgresBackend",
    "check",
    "check_async",
    "migrate",
    "migrate_async",
]
