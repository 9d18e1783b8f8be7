"""The JSON array reader of ingestion reads a chunk at a time: every element comes out
as the standard library reads it wherever the chunks cut the file, memory follows the
largest element rather than the file, and a document that goes wrong yields the
elements before the problem, then names it and its line."""

from __future__ import annotations

import io
import itertools
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskcore.ingest import sources
from taskcore.ingest.sources import CHUNK, Item, SourceError, read_json

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.sampled_from('ab"\\[]{},: \n\té😀\x01'), max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from('k"]}[{,\\é'), max_size=4), inner, max_size=4
        )
    ),
    max_leaves=12,
)


def read_all(data: bytes, chunk: int | None = None) -> tuple[list[Item], SourceError | None]:
    items: list[Item] = []
    with mock.patch.object(sources, "CHUNK", chunk or CHUNK):
        try:
            items.extend(read_json(io.BytesIO(data)))
        except SourceError as exc:
            return items, exc
    return items, None


@given(
    values=st.lists(JSON, max_size=8),
    indent=st.sampled_from([None, 0, 2, "\t"]),
    chunk=st.integers(min_value=1, max_value=40),
)
def test_every_element_reads_as_json_loads_reads_it_wherever_the_chunks_cut(
    values: list[Any], indent: int | str | None, chunk: int
) -> None:
    text = json.dumps(values, indent=indent, ensure_ascii=False)
    items, error = read_all(text.encode(), chunk)
    assert error is None
    assert [i.value for i in items] == json.loads(text)
    assert [i.number for i in items] == list(range(1, len(values) + 1))


def big_array(records: int) -> tuple[bytes, list[dict[str, Any]]]:
    """A pretty-printed array of records of 100 to 400 bytes."""
    values = [
        {"image_id": i, "name": f"img {i} ]}},{{[", "labels": ["a", "b"], "pad": "x" * (i % 300)}
        for i in range(records)
    ]
    return json.dumps(values, indent=2).encode(), values


def test_a_file_of_many_chunks_reads_whole_with_each_records_line() -> None:
    data, values = big_array(12_000)
    assert len(data) > 40 * CHUNK
    starts = [0]
    for i in range(len(values)):
        starts.append(data.index(b'{\n    "image_id": %d,' % i, starts[-1]))
    del starts[0]
    # records cut by a chunk's end (the reader reads CHUNK bytes at a time while the
    # records are shorter)
    assert sum(a // CHUNK != (b - 1) // CHUNK for a, b in itertools.pairwise(starts)) > 30
    items, error = read_all(data)
    assert error is None
    assert [i.value for i in items] == values
    lines = itertools.accumulate(
        data.count(b"\n", a, b) for a, b in itertools.pairwise([0, *starts])
    )
    assert [i.line for i in items] == [n + 1 for n in lines]


def peak_while_reading(data: bytes) -> tuple[int, int]:
    """(records read, the peak memory traced while reading them, the file excluded)."""
    stream = io.BytesIO(data)
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_json(stream))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return count, peak


def test_memory_follows_the_largest_element_not_the_file() -> None:
    data, values = big_array(40_000)
    assert len(data) > 8_000_000
    count, peak = peak_while_reading(data)
    assert count == len(values)
    assert peak < len(data) / 20  # a few chunks, not the file

    big = json.dumps({"image_id": 0, "blob": "y" * 1_000_000}).encode()
    data = b"[" + big + b"," + data[1:]  # one 1 MB record first, then the 8 MB
    count, peak = peak_while_reading(data)
    assert count == len(values) + 1
    assert peak < 4 * len(big) < len(data) / 2


def items_then_error(text: str, chunk: int) -> tuple[list[tuple[int, Any]], tuple[Any, ...]]:
    items, error = read_all(text.encode(), chunk)
    assert error is not None
    return [(i.line, i.value) for i in items], (error.kind, error.line, error.message)


@pytest.mark.parametrize("chunk", [1, 3, 64 * 1024])
@pytest.mark.parametrize(
    ("text", "read", "kind", "line", "message"),
    [
        ("", [], "not JSON", 1, "the file is empty"),
        (' \n{"a": 1}', [], "not a JSON array", 2, "a JSON object at line 2, not an array"),
        ('"[1]"', [], "not a JSON array", 1, "a JSON string at line 1, not an array"),
        ("nope", [], "not a JSON array", 1, "the document begins with 'n' at line 1"),
        ("true", [], "not a JSON array", 1, "the document begins with 't'"),
        ('[{"a": 1},\n {"b": ', [(1, {"a": 1})], "not JSON", 2, "ends inside record 2"),
        ('[{"a": 1},\n {"b": "x]', [(1, {"a": 1})], "not JSON", 2, "ends inside record 2"),
        ('[{"a": 1},\n', [(1, {"a": 1})], "not JSON", 2, "ends after record 1"),
        ('[{"a": 1}\n{"b": 2}]', [(1, {"a": 1})], "not JSON", 2, "expected ',' or ']'"),
        ('[{"a": 1},\n]', [(1, {"a": 1})], "not JSON", 2, "a ',' after record 1"),
        ('[{"a": 1}]\n[]', [(1, {"a": 1})], "not JSON", 2, "more after the end"),
        ('[1,\n{"a": tru},\n{"b": 2}]', [(1, 1)], "not JSON", 2, "Expecting value (record 2)"),
        ('[{"a": NaN}]', [], "not JSON", 1, "NaN is not JSON; write null or a number"),
    ],
)
def test_a_document_that_goes_wrong_yields_what_came_before_and_names_the_problem(
    chunk: int, text: str, read: list[Any], kind: str, line: int, message: str
) -> None:
    got, (got_kind, got_line, got_message) = items_then_error(text, chunk)
    assert (got, got_kind, got_line) == (read, kind, line)
    assert message in got_message
    if kind == "not JSON" and text:
        assert got_message.startswith(f"the file is not JSON at line {line}: ")


def test_a_byte_order_mark_is_fine_and_bad_utf8_is_named() -> None:
    items, error = read_all('\ufeff[{"a": "é"}]'.encode())
    assert error is None and [i.value for i in items] == [{"a": "é"}]
    items, error = read_all(b'[{"a": 1},\n{"b": "\xff"}]', 4)
    assert [i.value for i in items] == [{"a": 1}]
    assert error is not None and (error.kind, error.line) == ("not UTF-8", 2)
    assert "at line 2 (invalid start byte: b'\\xff'); re-encode it as UTF-8" in error.message
    items, error = read_all(b'[{"a": 1}]\n\xfe', 3)  # after the array: still named
    assert [i.value for i in items] == [{"a": 1}]
    assert error is not None and (error.kind, error.line) == ("not UTF-8", 2)


def test_elements_that_are_not_objects_are_records_all_the_same() -> None:
    items, error = read_all(b'[1, "two", [3], null, {"five": 5}]', 2)
    assert error is None
    assert [(i.number, i.value) for i in items] == [
        (1, 1),
        (2, "two"),
        (3, [3]),
        (4, None),
        (5, {"five": 5}),
    ]


def test_reading_stops_at_the_problem_without_reading_the_rest() -> None:
    """A bad element early in a big file: the error comes after one more chunk, not
    after the whole file was pulled into memory."""
    reads: list[int | None] = []

    class Spied(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            reads.append(size)
            return super().read(size)

    stream = Spied(b'[{"a": 1}, {"a": tru}, ' + b'{"x": 1},' * 200_000 + b"{}]")
    items: Iterator[Item] = read_json(stream)
    assert next(items).value == {"a": 1}
    with pytest.raises(SourceError, match=r"Expecting value \(record 2\)"):
        next(items)
    assert reads == [CHUNK]
