"""Unique tasks under a race: 100 concurrent enqueues of one key from 4 processes
give exactly one task, on Redis and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

import redis as redis_sync

ROOT = Path(__file__).resolve().parents[2]


def _race(url: str, key: str) -> list[str]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.faults.race_child", url, key, "25"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        lines.append(out.strip())
    created = sum(int(line.split()[1]) for line in lines)
    ids = {tid for line in lines for tid in line.split()[3:]}
    assert created == 1, lines
    assert len(ids) == 1, lines  # every caller got the handle of the one task
    return sorted(ids)


def test_unique_race_redis(redis_url: str) -> None:
    prefix = f"tcrace{uuid.uuid4().hex[:10]}"
    url = f"{redis_url}?prefix={prefix}" if "?" not in redis_url else f"{redis_url}&prefix={prefix}"
    client = redis_sync.Redis.from_url(redis_url)
    try:
        _race(url, "order-42")
    finally:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def test_unique_race_postgres(pg_dsn: str) -> None:
    schema = f"tcrace_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in pg_dsn else "?"
    try:
        [tid] = _race(f"{pg_dsn}{sep}schema={schema}", "order-42")
        with psycopg.connect(pg_dsn) as conn:
            count = conn.execute(
                f'SELECT count(*) FROM "{schema}".tasks WHERE unique_key = %s', ("order-42",)
            ).fetchone()
        assert count == (1,)
        assert tid
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_race_child_on_memory() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.faults.race_child", "memory://", "k", "20"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    assert out[:2] == ["created", "1"] and len(out) == 4
