"""One-dimensional arrays as ready-made binary parameters.

psycopg dumps a Python list element by element in Python (``types/array.py``); for
the 11 arrays of a bulk enqueue that was about 8 us per task, a third of the
client's time. These helpers build PostgreSQL's binary array format directly
(header, then a length-prefixed value per element, -1 for NULL); the statement's casts
(``%(x)b::text[]``) name the type.

Fixed-width arrays are packed with :mod:`array` and strided slice assignments, never
with a format string that depends on the length (``">" + "id" * n``): ``struct``
compiles and caches every such format (up to 100 of them, about 64 bytes per element
each), so settle batches of ever new sizes kept megabytes alive in a long-running
worker (docs/benchmarks.md, the PostgreSQL soak).
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Sequence
from itertools import repeat

from psycopg import adapters
from psycopg.adapt import Dumper
from psycopg.pq import Format

__all__ = [
    "bool_array",
    "bytea_array",
    "float8_array",
    "int2_array",
    "int8_array",
    "jsonb_array",
    "text_array",
]

_HEAD = struct.Struct(">iiiii")  # ndim, has nulls, element oid, length, lower bound
_NULL = b"\xff\xff\xff\xff"
_LEN8 = b"\x00\x00\x00\x08"
_F8 = struct.Struct(">d")


class _Array(bytes):
    """A binary array value; ``oid`` is the array type's oid."""

    oid = 0


class _TextArray(_Array):
    oid = 1009  # text[]


class _ByteaArray(_Array):
    oid = 1001  # bytea[]


class _Float8Array(_Array):
    oid = 1022  # float8[]


class _Int2Array(_Array):
    oid = 1005  # int2[]


class _Int8Array(_Array):
    oid = 1016  # int8[]


class _BoolArray(_Array):
    oid = 1000  # bool[]


class _JsonbArray(_Array):
    oid = 3807  # jsonb[]


def _dumper(cls: type[_Array]) -> type[Dumper]:
    class _D(Dumper):
        format = Format.BINARY
        oid = cls.oid

        def dump(self, obj: object) -> bytes:
            return obj  # type: ignore[return-value]

    _D.__name__ = f"{cls.__name__}Dumper"
    return _D


for _cls in (
    _TextArray,
    _ByteaArray,
    _Float8Array,
    _Int2Array,
    _Int8Array,
    _BoolArray,
    _JsonbArray,
):
    adapters.register_dumper(_cls, _dumper(_cls))


def _all_null(cls: type[_Array], elem_oid: int, n: int) -> _Array:
    """An array of ``n`` NULLs (a settle's errors, retry times and TTLs, most often)."""
    return cls(_HEAD.pack(1, 1, elem_oid, n, 1) + _NULL * n)


def _varlen(cls: type[_Array], elem_oid: int, values: Sequence[bytes | None]) -> _Array:
    parts = [b""]
    nulls = 0
    for v in values:
        if v is None:
            parts.append(_NULL)
            nulls = 1
        else:
            parts.append(len(v).to_bytes(4, "big"))
            parts.append(v)
    parts[0] = _HEAD.pack(1, nulls, elem_oid, len(values), 1)
    return cls(b"".join(parts))


def text_array(values: Sequence[str | None]) -> _Array:
    return _varlen(_TextArray, 25, [None if v is None else v.encode() for v in values])


def bytea_array(values: Sequence[bytes | None]) -> _Array:
    return _varlen(_ByteaArray, 17, values)


# (element type oid, array type code, one length-prefixed element)
_F8_ELEM = (701, "d", struct.Struct(">id"))
_I2_ELEM = (21, "h", struct.Struct(">ih"))
_I8_ELEM = (20, "q", struct.Struct(">iq"))
_SHORT = 32  # below this many elements one pack per element is faster than the slices


def _fixed(
    cls: type[_Array], elem: tuple[int, str, struct.Struct], values: Sequence[float]
) -> _Array:
    """A NULL-free array of fixed-width values: each element is its big-endian length,
    then its big-endian value. Long arrays take a constant number of C-level
    operations (one :mod:`array` conversion, one strided slice assignment per byte of
    the width); nothing is compiled or cached per length."""
    oid, code, one = elem
    n = len(values)
    width = one.size - 4
    if n < _SHORT:
        return cls(_HEAD.pack(1, 0, oid, n, 1) + b"".join(map(one.pack, repeat(width, n), values)))
    data = array(code, values)
    if sys.byteorder == "little":
        data.byteswap()
    raw = data.tobytes()
    stride = one.size
    buf = bytearray(_HEAD.size + stride * n)
    _HEAD.pack_into(buf, 0, 1, 0, oid, n, 1)
    start = _HEAD.size
    buf[start + 3 :: stride] = bytes((width,)) * n  # the lengths' low bytes (< 256)
    for k in range(width):
        buf[start + 4 + k :: stride] = raw[k::width]
    return cls(buf)


def float8_array(values: Sequence[float | None]) -> _Array:
    if values.count(None) == len(values) and values:
        return _all_null(_Float8Array, 701, len(values))
    if None not in values:
        return _fixed(_Float8Array, _F8_ELEM, values)  # type: ignore[arg-type]
    parts = [_HEAD.pack(1, 1, 701, len(values), 1)]
    parts += [_NULL if v is None else _LEN8 + _F8.pack(v) for v in values]
    return _Float8Array(b"".join(parts))


def int2_array(values: Sequence[int]) -> _Array:
    return _fixed(_Int2Array, _I2_ELEM, values)


def int8_array(values: Sequence[int]) -> _Array:
    return _fixed(_Int8Array, _I8_ELEM, values)


def bool_array(values: Sequence[bool]) -> _Array:
    n = len(values)
    if not any(values):
        return _BoolArray(_HEAD.pack(1, 0, 16, n, 1) + b"\x00\x00\x00\x01\x00" * n)
    body = b"".join(b"\x00\x00\x00\x01\x01" if v else b"\x00\x00\x00\x01\x00" for v in values)
    return _BoolArray(_HEAD.pack(1, 0, 16, n, 1) + body)


def jsonb_array(values: Sequence[str | None]) -> _Array:
    """JSON texts as jsonb[] (binary jsonb is a version byte, 1, then the text)."""
    if values.count(None) == len(values) and values:
        return _all_null(_JsonbArray, 3802, len(values))
    return _varlen(_JsonbArray, 3802, [None if v is None else b"\x01" + v.encode() for v in values])
