"""Connection settings from a ``redis://`` / ``rediss://`` URL plus keyword arguments."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from redis.asyncio.connection import parse_url

from taskcore.errors import ConfigurationError

__all__ = ["DEFAULT_URL", "RedisConfig"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "taskcore"
DEFAULT_POOL_SIZE = 64

# Query parameters that are ours, not redis-py's.
_OWN = {"prefix", "retries", "pool_timeout"}


@attrs.frozen
class RedisConfig:
    """Where and how to connect.

    ``connection`` holds the redis-py connection-pool arguments (host, port, db,
    password, ``connection_class`` for TLS, timeouts...).
    """

    url: str = attrs.field(repr=False)  # may carry a password
    prefix: str
    max_connections: int
    pool_timeout: float | None
    retries: int
    connection: dict[str, Any] = attrs.field(repr=False)

    @classmethod
    def parse(cls, url: str, **overrides: Any) -> RedisConfig:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"Redis backend URL {url!r} has scheme {parts.scheme!r}: use redis://, "
                "rediss:// (TLS) or unix://"
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        own = {k: v for k, v in query if k in _OWN}
        rest = urlencode([(k, v) for k, v in query if k not in _OWN])
        try:
            connection: dict[str, Any] = dict(parse_url(urlunsplit(parts._replace(query=rest))))
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {url!r}: {exc}") from exc
        prefix = overrides.pop("prefix", None) or own.get("prefix") or DEFAULT_PREFIX
        retries_raw = overrides.pop("retries") if "retries" in overrides else own.get("retries", 3)
        timeout_raw = (
            overrides.pop("pool_timeout")
            if "pool_timeout" in overrides
            else own.get("pool_timeout", 20.0)
        )
        try:
            retries = int(retries_raw)
            pool_timeout = None if timeout_raw in (None, "", "none") else float(timeout_raw)
        except ValueError as exc:
            raise ConfigurationError(
                f"invalid retries/pool_timeout for Redis URL {url!r}: {exc}"
            ) from exc
        connection.update(overrides)
        max_connections = int(connection.pop("max_connections", DEFAULT_POOL_SIZE))
        if max_connections < 1 or retries < 0:
            raise ConfigurationError(
                f"Redis URL {url!r}: max_connections must be >= 1 and retries >= 0"
            )
        return cls(url, str(prefix), max_connections, pool_timeout, retries, connection)
