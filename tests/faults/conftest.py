from __future__ import annotations

from tests.e2e.conftest import pg_dsn, redis_url

__all__ = ["pg_dsn", "redis_url"]
