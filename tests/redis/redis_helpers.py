"""Helpers for the Redis service tests (prefixes, key cleanup; the TCP proxy is shared
with the fault suite and lives in tests/faults/proxy.py)."""

from __future__ import annotations

import uuid

from tests.faults.proxy import TcpProxy

import redis as redis_sync

__all__ = ["TcpProxy", "delete_prefix", "new_prefix", "prefix_keys"]


def new_prefix() -> str:
    return f"tctest-{uuid.uuid4().hex[:12]}"


def prefix_keys(client: redis_sync.Redis, prefix: str) -> list[bytes]:
    """Every key a backend with ``prefix`` created."""
    keys: list[bytes] = []
    for pattern in (f"{{{prefix}:*", f"{{{prefix}}}:*"):
        keys += client.scan_iter(match=pattern, count=1000)
    return keys


def delete_prefix(client: redis_sync.Redis, prefix: str) -> int:
    """Delete every key a backend with ``prefix`` created; returns how many."""
    keys = prefix_keys(client, prefix)
    n = 0
    for i in range(0, len(keys), 1000):
        n += int(client.delete(*keys[i : i + 1000]))
    return n
