"""Connection settings from a ``redis://`` / ``rediss://`` URL plus keyword arguments."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from redis.asyncio.connection import parse_url

from taskcore.discovery import redact_url
from taskcore.errors import ConfigurationError

__all__ = ["DEFAULT_URL", "LONGEST_BLOCK", "RedisConfig"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "taskcore"
DEFAULT_POOL_SIZE = 64

# Query parameters that are ours, not redis-py's.
_OWN = {"prefix", "retries", "pool_timeout"}

# The longest a command blocks in the server on purpose (the BLPOP of ``wait()`` and
# ``wait_done()``). redis-py applies ``socket_timeout`` to blocking commands too
# (redis/redis-py#2807), so the socket timeout must be longer than this.
LONGEST_BLOCK = 1.0


def _keepalive_options() -> dict[int, int]:
    """TCP keepalive probing after 15 s idle, every 5 s, 3 probes (where the OS lets
    us tune it): an idle connection to a vanished host is dropped within ~30 s."""
    names = {"TCP_KEEPIDLE": 15, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, n): v for n, v in names.items() if hasattr(socket, n)}


# Dead-peer detection (docs/redis.md, "Dead connections"): redis-py 5 waits forever
# by default on a connection whose peer vanished without a FIN or RST.
_TCP_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 10.0,  # every read and write; BackendUnavailable after retries
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "health_check_interval": 15,  # PING a connection idle this long before using it
}


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
        shown = redact_url(url)
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(
                f"Redis backend URL {shown!r} has scheme {parts.scheme!r}: use redis://, "
                "rediss:// (TLS) or unix://"
            )
        query = parse_qsl(parts.query, keep_blank_values=True)
        own = {k: v for k, v in query if k in _OWN}
        rest = urlencode([(k, v) for k, v in query if k not in _OWN])
        try:
            connection: dict[str, Any] = dict(parse_url(urlunsplit(parts._replace(query=rest))))
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {shown!r}: {exc}") from None
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
                f"invalid retries/pool_timeout for Redis URL {shown!r}: {exc}"
            ) from None
        connection.update(overrides)
        max_connections = int(connection.pop("max_connections", DEFAULT_POOL_SIZE))
        if max_connections < 1 or retries < 0:
            raise ConfigurationError(
                f"Redis URL {shown!r}: max_connections must be >= 1 and retries >= 0"
            )
        _dead_peer_defaults(connection, shown)
        return cls(url, str(prefix), max_connections, pool_timeout, retries, connection)


def _dead_peer_defaults(connection: dict[str, Any], shown: str) -> None:
    """Fill in the timeouts and keepalive the URL and keywords left out, and check
    that ``socket_timeout`` outlasts the blocking reads."""
    tcp = "path" not in connection  # unix sockets have no keepalive
    for key, value in _TCP_DEFAULTS.items():
        if tcp or (key.startswith("socket_") and "keepalive" not in key):
            connection.setdefault(key, value)
    if tcp and connection.get("socket_keepalive"):
        connection.setdefault("socket_keepalive_options", _keepalive_options())
    timeout = connection.get("socket_timeout")
    if timeout is not None and not float(timeout) > LONGEST_BLOCK:
        raise ConfigurationError(
            f"Redis URL {shown!r}: socket_timeout={timeout} must be longer than the "
            f"{LONGEST_BLOCK:g} s that waiting workers block in BLPOP (use e.g. "
            f"socket_timeout={_TCP_DEFAULTS['socket_timeout']:g})"
        )
