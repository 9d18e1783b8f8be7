"""The ready-made binary array parameters (taskcore_pg._arrays): what the server reads
back, and that encoding arrays of many lengths keeps no memory alive."""

from __future__ import annotations

import gc
import math
import struct
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest

from taskcore_pg._arrays import bool_array, float8_array, int2_array, int8_array, jsonb_array

# around the switch from per-element packing to strided slices (_SHORT = 32)
LENGTHS = [0, 1, 2, 31, 32, 33, 100, 1001]


def _values(kind: str, n: int) -> list[Any]:
    if kind == "float8":
        specials = [0.0, -0.0, 1.5, -2.25e300, 5e-324, math.inf, -math.inf, 1.7e9 + 0.125]
        return [specials[i % len(specials)] * (1 if i % 3 else -1) for i in range(n)]
    if kind == "int8":
        specials = [0, 1, -1, 2**63 - 1, -(2**63), 255, 256, 1 << 40]
    else:
        specials = [0, 1, -1, 32767, -32768, 255, 256, 4]
    return [specials[i % len(specials)] for i in range(n)]


ENCODERS: dict[str, Callable[[Sequence[Any]], bytes]] = {
    "float8": float8_array,
    "int8": int8_array,
    "int2": int2_array,
}


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_server_reads_back_every_element(pg_dsn: str, kind: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        for n in LENGTHS:
            values = _values(kind, n)
            row = conn.execute(
                f"SELECT %(a)b::{kind}[], cardinality(%(a)b::{kind}[])",
                {"a": ENCODERS[kind](values)},
            ).fetchone()
            assert row is not None
            got, count = row
            assert count == n
            assert (got or []) == values


def test_float8_array_with_nulls(pg_dsn: str) -> None:
    values = [None, 1.5, None, -3.0] * 20
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT %(a)b::float8[]", {"a": float8_array(values)}).fetchone()
    assert row == (values,)


@pytest.mark.parametrize(
    ("encode", "kind", "values"),
    [
        (float8_array, "float8", [None] * 17),
        (jsonb_array, "jsonb", [None] * 5),
        (jsonb_array, "jsonb", [None, '{"a": 1}', None]),
        (bool_array, "bool", [False] * 9),
        (bool_array, "bool", [False, True, False]),
    ],
    ids=["float8-nulls", "jsonb-nulls", "jsonb-mixed", "bool-false", "bool-mixed"],
)
def test_arrays_of_nulls_and_of_false(
    pg_dsn: str, encode: Callable[[Sequence[Any]], bytes], kind: str, values: list[Any]
) -> None:
    """The shortcuts for a settle's usual columns (no errors, retry times, TTLs; nothing
    late) read back like the general encoding."""
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(f"SELECT %(a)b::{kind}[]", {"a": encode(values)}).fetchone()
    assert row is not None
    expected = [None if v is None else (v if kind != "jsonb" else {"a": 1}) for v in values]
    assert row[0] == expected


def test_arrays_of_new_lengths_keep_no_memory() -> None:
    """A worker settles batches of ever new sizes: encoding them must not leave
    anything behind per length (``struct``'s format cache did, ~64 bytes per element
    of every length seen, up to 100 lengths)."""
    lengths = range(2000, 2030)
    struct._clearcache()  # type: ignore[attr-defined]
    for encode in ENCODERS.values():  # warm up whatever is created once
        encode(_values("int2", 1999))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in lengths:
            for kind, encode in ENCODERS.items():
                encode(_values(kind, n))
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # the old encoder kept 30 lengths x 3 formats x ~128 KB; allow small noise
    assert kept < 64 * 1024
