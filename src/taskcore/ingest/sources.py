"""Readers that turn a file into records: CSV, JSON Lines, JSON arrays and XML.

Each reader is a generator of :class:`Item`: a record (a mapping) or the reason the
record could not be read, with its record number and the line it starts on. A
problem that ends the reading (a JSON array that does not parse, XML that is not
well-formed or declares entities, undecodable text) raises :class:`SourceError`
naming the line; what was read before it stands.

Every reader reads a chunk at a time (JSON arrays too: an incremental reader over the
standard library's ``raw_decode``), so memory follows the largest record, not the file.

XML is parsed with the standard library's expat binding, refusing every entity
declaration, external DTD and external reference, as defusedxml does: no "billion laughs"
expansion, no external entity (file or URL) is ever resolved, and nothing is fetched.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from typing import IO, Any, Final, Literal

import attrs
import msgspec

__all__ = [
    "SOURCE_FORMATS",
    "Item",
    "SourceError",
    "SourceFormat",
    "format_of",
    "read_csv",
    "read_json",
    "read_jsonl",
    "read_xml",
    "records",
]

SourceFormat = Literal["csv", "jsonl", "json", "xml"]
SOURCE_FORMATS: Final[tuple[SourceFormat, ...]] = ("csv", "jsonl", "json", "xml")
_SUFFIXES: Final[dict[str, SourceFormat]] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".xml": "xml",
}
CHUNK = 64 * 1024


@attrs.frozen
class Item:
    """One record as read: ``value`` (a mapping) or ``error`` (why it could not be read)."""

    number: int
    """1-based position of the record in the source."""
    line: int | None
    """The line the record starts on (None where the source has no lines)."""
    value: Any = None
    error: str | None = None
    kind: str | None = None
    """A short, low-cardinality name of the error (per-reason counts)."""


class SourceError(Exception):
    """The source cannot be read past ``line``: ``kind`` and ``message`` say why."""

    def __init__(self, kind: str, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.line = line


def format_of(name: str) -> SourceFormat | None:
    """The format a file name's suffix implies (``.csv``, ``.jsonl``/``.ndjson``,
    ``.json``, ``.xml``), or None."""
    lower = name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if lower.endswith(suffix):
            return fmt
    return None


def records(
    stream: IO[bytes], format: SourceFormat, *, record_tag: str | None = None
) -> Iterator[Item]:
    """The records of a binary stream in ``format``."""
    if format == "csv":
        return read_csv(stream)
    if format == "jsonl":
        return read_jsonl(stream)
    if format == "json":
        return read_json(stream)
    return read_xml(stream, record_tag=record_tag)


# -- CSV ----------------------------------------------------------------------------
def read_csv(stream: IO[bytes]) -> Iterator[Item]:
    """The first row names the fields; each later row is one record of text values
    (a row with fewer values leaves the rest out; blank lines are skipped). UTF-8,
    with or without a byte-order mark."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    number = 0
    try:
        try:
            header = next(reader)
        except StopIteration:
            return
        names = [h.strip() for h in header]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes or "" in names:
            raise SourceError(
                "bad CSV header",
                f"the header row {header!r} has "
                + (f"duplicate columns {dupes}" if dupes else "an unnamed column")
                + "; give each column the name of one of the task's parameters",
                1,
            )
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line is not a record
            number += 1
            if len(row) > len(names):
                yield Item(
                    number,
                    start,
                    row,
                    f"{len(row)} values for {len(names)} columns {names}; quote values "
                    "that contain a comma",
                    "too many values",
                )
                continue
            yield Item(number, start, dict(zip(names, row, strict=False)))
    except UnicodeDecodeError as exc:
        raise SourceError(
            "not UTF-8", f"the file is not UTF-8 text ({exc}); re-encode it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise SourceError("bad CSV", f"unreadable CSV: {exc}", reader.line_num) from None


# -- JSON ---------------------------------------------------------------------------
def read_jsonl(stream: IO[bytes]) -> Iterator[Item]:
    """One JSON object per line; blank lines are skipped. A line that is not JSON is
    one rejected record; the next line is read as usual."""
    number = 0
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        number += 1
        try:
            value = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            yield Item(
                number, lineno, line.decode(errors="replace"), f"not JSON: {exc}", "not JSON"
            )
            continue
        yield Item(number, lineno, value)


def read_json(stream: IO[bytes]) -> Iterator[Item]:
    """A JSON array: each element is one record (with the line it starts on), read as
    the stream is, a chunk at a time: memory holds the element being read and a chunk,
    never the whole document. An element that is not an object is a record all the
    same (rejected by the pipeline); a document that ends early, is not an array or
    holds something that is not JSON raises :class:`SourceError` once the elements
    before it have been yielded."""
    reader = _JsonArray(stream)
    first = reader.peek()
    if first != "[":
        raise reader.not_array(first)
    reader.pos += 1
    number = 0
    if reader.peek() != "]":
        while True:
            if not reader.peek():
                raise reader.cut_short(f"after record {number}" if number else "right after '['")
            number += 1
            line = reader.line_at(reader.pos)
            yield Item(number, line, reader.value(number))
            after = reader.peek()
            if after == "]":
                break
            if not after:
                raise reader.cut_short(f"after record {number}")
            if after != ",":
                raise reader.bad(f"expected ',' or ']' after record {number}, found {after!r}")
            reader.pos += 1
            if reader.peek() == "]":
                raise reader.bad(f"a ',' after record {number} and no record before ']'")
    reader.pos += 1
    if reader.peek():
        raise reader.bad("more after the end of the array (give one array per file)")


_JSON_SPACE: Final = re.compile(r"[ \t\n\r]*")
_TAIL: Final = 16
"""A value that ends, or fails to decode, this near the end of what was read may be one
the chunk cut (``12`` of ``123``, ``tru``, ``1.``, ``\\u12``): it is decoded again with
the next chunk."""
_KINDS: Final = {"{": "object", '"': "string"}
_NUMBER_START: Final = frozenset("-0123456789")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON; write null or a number")


class _JsonArray:
    """A JSON document read from a binary stream one chunk at a time. ``buf[pos:]`` is
    what is not consumed yet; a value is decoded with the standard library's
    ``raw_decode`` where it starts, and when the chunk ends inside it (a decoding error
    at the end of the buffer, or a value that ends there: ``12`` may be ``123``) the
    next chunk is added and it is decoded again. Each read is at least as long as what
    is pending, so a long value costs a few reads, not one per chunk."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.text = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.line = 1  # the line of buf[seen]
        self.seen = 0
        self.decoder = json.JSONDecoder(parse_constant=_no_constant)
        self.started = False
        self.broken: SourceError | None = None
        """Bytes that are not UTF-8: the text ends before them, and reaching its end
        raises this instead of saying that the document is cut short."""

    def more(self) -> bool:
        """Add the next chunk to the buffer (dropping what was consumed); False at the end."""
        if self.eof:
            return False
        data = self.stream.read(max(CHUNK, len(self.buf) - self.pos))
        self.line_at(self.pos)
        try:
            text = self.text.decode(data, final=not data)
        except UnicodeDecodeError as exc:  # the text before the bad bytes still counts
            text = exc.object[: exc.start].decode("utf-8" if self.started else "utf-8-sig")
            line = self.line + self.buf.count("\n", self.seen) + text.count("\n")
            self.broken = SourceError(
                "not UTF-8",
                f"the file is not UTF-8 text at line {line} ({exc.reason}: "
                f"{exc.object[exc.start : exc.end]!r}); re-encode it as UTF-8",
                line,
            )
        self.started = True
        self.buf = self.buf[self.pos :] + text
        self.pos = self.seen = 0
        self.eof = not data or self.broken is not None
        return True

    def line_at(self, index: int) -> int:
        """The line of ``buf[index]`` (``index`` at or after the last one asked)."""
        if index > self.seen:
            self.line += self.buf.count("\n", self.seen, index)
            self.seen = index
        return self.line

    def peek(self) -> str:
        """The next character that is not whitespace (moving ``pos`` to it), or ""."""
        while True:
            match = _JSON_SPACE.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                if self.broken is not None:
                    raise self.broken
                return ""

    def value(self, number: int) -> Any:
        """Decode the value at ``pos`` (record ``number``) and move past it."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                unterminated = exc.msg.startswith("Unterminated")
                if (unterminated or exc.pos >= len(self.buf) - _TAIL) and self.more():
                    continue
                if unterminated or exc.pos >= len(self.buf):  # at the end of the file
                    raise self.cut_short(f"inside record {number}") from None
                raise self.bad(f"{exc.msg} (record {number})", exc.pos) from None
            except ValueError as exc:  # NaN, Infinity; an integer of over 4300 digits
                raise self.bad(f"{exc} (record {number})") from None
            # a number the chunk cut may look whole (12 of 123, 2 of 2.5): read on
            if end < len(self.buf) - _TAIL or not self.more():
                self.pos = end
                return value

    def bad(self, problem: str, at: int | None = None) -> SourceError:
        line = self.line_at(self.pos if at is None else at)
        return SourceError("not JSON", f"the file is not JSON at line {line}: {problem}", line)

    def cut_short(self, where: str) -> SourceError:
        if self.broken is not None:  # the text ends early, at bytes that are not UTF-8
            return self.broken
        line = self.line_at(len(self.buf))
        return SourceError(
            "not JSON",
            f"the file is not JSON at line {line}: it ends {where}, before the array is "
            "closed; was it cut short? Complete it (the records before were read)",
            line,
        )

    def not_array(self, first: str) -> SourceError:
        if not first:
            return SourceError("not JSON", "the file is empty; send a JSON array of objects", 1)
        kind = _KINDS.get(first, "number" if first in _NUMBER_START else None)
        line = self.line_at(self.pos)
        return SourceError(
            "not a JSON array",
            (f"the document is a JSON {kind}" if kind else f"the document begins with {first!r}")
            + f" at line {line}, not an array; send [{{...}}, {{...}}] (or JSON Lines: one "
            "object per line)",
            line,
        )


# -- XML ----------------------------------------------------------------------------
class _Unsafe(Exception):
    pass


class _XmlRecords:
    """expat handlers building one record per child element of the document element."""

    def __init__(self, record_tag: str | None) -> None:
        self.record_tag = record_tag
        self.depth = 0
        self.skip = 0  # depth of a child of the root that is not a record (record_tag)
        # per open element: its tag, fields (attributes, then children), text, and the
        # names of its children seen more than once (their values are lists)
        self.stack: list[tuple[str, dict[str, Any], list[str], set[str]]] = []
        self.done: list[Item] = []
        self.number = 0
        self.line = 0

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth == 1 or self.skip:
            return
        if self.depth == 2 and self.record_tag is not None and tag != self.record_tag:
            self.skip = self.depth
            return
        if self.depth == 2:
            self.line = self.parser.CurrentLineNumber
        self.stack.append((tag, dict(attrs), [], set()))

    def end(self, tag: str) -> None:
        depth = self.depth
        self.depth -= 1
        if depth == 1:
            return
        if self.skip:
            if depth == self.skip:
                self.skip = 0
            return
        name, fields, text, _ = self.stack.pop()
        if depth == 2:
            self.number += 1
            self.done.append(Item(self.number, self.line, fields))
            return
        value: Any = fields if fields else "".join(text).strip()
        _, parent, _, repeated = self.stack[-1]
        if name in repeated:
            parent[name].append(value)
        elif name in parent:  # a repeated element: a list of its values
            repeated.add(name)
            parent[name] = [parent[name], value]
        else:
            parent[name] = value

    def chars(self, data: str) -> None:
        if self.stack and not self.skip:
            self.stack[-1][2].append(data)

    parser: Any = None


def _refuse_entity(name: str, *_: object) -> None:
    raise _Unsafe(
        f"the document declares the entity {name!r}; taskcore refuses XML with entity "
        "declarations (they allow 'billion laughs' expansion and reading local files or "
        "URLs): remove the DOCTYPE's entities"
    )


def _refuse_external(context: object, base: object, system_id: object, *_: object) -> int:
    raise _Unsafe(
        f"the document refers to an external resource {system_id!r}; taskcore never "
        "resolves external entities or DTDs"
    )


def _refuse_external_dtd(
    name: str, system_id: str | None, public_id: str | None, has_internal_subset: bool
) -> None:
    if system_id or public_id:
        _refuse_external(None, None, system_id or public_id)


def _refuse_skipped(name: str, is_parameter_entity: bool) -> None:
    # expat skips an entity it has no declaration for when the document has an external
    # DTD it did not read: its text would silently be lost
    raise _Unsafe(f"the document uses the entity {name!r}, which it does not declare")


def read_xml(stream: IO[bytes], *, record_tag: str | None = None) -> Iterator[Item]:
    """Every child element of the document element is one record (only those named
    ``record_tag`` when given): its attributes and child elements are its fields.

    A field element holding only text is that text (whitespace around it removed); one
    with attributes or children is an object of them, built the same way; an element
    repeated under one parent is a list of its values. Text beside child elements is
    ignored. Entity declarations, external DTDs and external references are refused
    (:class:`SourceError`), so nothing is expanded or fetched."""
    from xml.parsers import expat

    handlers = _XmlRecords(record_tag)
    parser = expat.ParserCreate()
    handlers.parser = parser
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.StartDoctypeDeclHandler = _refuse_external_dtd
    parser.SkippedEntityHandler = _refuse_skipped
    parser.StartElementHandler = handlers.start
    parser.EndElementHandler = handlers.end
    parser.CharacterDataHandler = handlers.chars
    while True:
        chunk = stream.read(CHUNK)
        error: SourceError | None = None
        try:
            parser.Parse(chunk, not chunk)
        except _Unsafe as exc:
            error = SourceError("unsafe XML", str(exc), parser.CurrentLineNumber)
        except expat.ExpatError as exc:
            error = SourceError(
                "XML not well-formed",
                f"the XML is not well-formed: {expat.errors.messages[exc.code]} at line "
                f"{exc.lineno}, column {exc.offset}",
                exc.lineno,
            )
        yield from handlers.done  # the records completed before an error stand
        handlers.done.clear()
        if error is not None:
            raise error
        if not chunk:
            return
