"""Export formats: task records and their results as JSON, CSV, XML or MessagePack.

:func:`task_rows` turns :class:`~taskcore.backend.TaskRecord`\\ s into plain rows
(arguments and results decoded with the app's codec); :func:`render` writes rows in
one of :data:`FORMATS`. The web API (``GET /api/tasks?format=csv``) and the
``taskcore export`` command use both.

- **json**, **msgpack** (msgspec): a list of objects, values as they are.
- **csv** (stdlib :mod:`csv`): a header row, then one row per record; ``None`` is an
  empty cell, lists and objects (arguments, results) are JSON text in their cell.
  Spreadsheet-safe by default (``spreadsheet_safe=True``): a text cell starting with
  ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, which Excel, LibreOffice and
  Google Sheets would run as a formula ("CSV injection", OWASP), is written with a
  leading ``'`` so that it shows as text. Numbers are written as they are. Pass
  ``spreadsheet_safe=False`` (``--no-spreadsheet-safe``, ``?spreadsheet_safe=false``)
  for the exact values, for a program to read back.
- **xml** (stdlib :mod:`xml.sax.saxutils` escaping): ``<tasks><task>...</task></tasks>``,
  one child element per field. A value that is ``None`` is an empty element with
  ``null="true"``; a list is ``<item>`` children; an object has one child per key
  (named by the key when it is a valid XML name, else ``<entry key="...">``). XML 1.0
  cannot carry most control characters, not even escaped: those are written as
  U+FFFD (the JSON and MessagePack exports keep them).

Not imported by workers.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal
from xml.sax.saxutils import escape, quoteattr

import msgspec

from taskcore.errors import ConfigurationError, TaskcoreError

if TYPE_CHECKING:
    from taskcore.app import App
    from taskcore.backend import TaskRecord

__all__ = [
    "CONTENT_TYPES",
    "FORMATS",
    "Format",
    "decoded",
    "parse_format",
    "render",
    "task_row",
    "task_rows",
]

Format = Literal["json", "csv", "xml", "msgpack"]
FORMATS: Final[tuple[Format, ...]] = ("json", "csv", "xml", "msgpack")
CONTENT_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
    "msgpack": "application/vnd.msgpack",
}

COLUMNS: Final = (
    "id",
    "task",
    "queue",
    "priority",
    "state",
    "attempt",
    "enqueued_at",
    "eligible_at",
    "updated_at",
    "started_at",
    "finished_at",
    "deadline",
    "worker",
    "unique_key",
    "fairness_key",
    "cancel_requested",
    "last_error",
    "args",
    "result",
)
"""The fields of an exported task, in column order."""


def parse_format(text: str) -> Format:
    """``"CSV"`` -> ``"csv"``.

    Raises:
        ConfigurationError: not one of :data:`FORMATS`.
    """
    value = text.strip().lower()
    for fmt in FORMATS:
        if value == fmt:
            return fmt
    raise ConfigurationError(f"unknown format {text!r}: use one of {', '.join(FORMATS)}")


def decoded(app: App, rec: TaskRecord) -> tuple[Any, Any]:
    """The task's arguments (by parameter name) and result as values, decoded with
    ``app``'s codec (None where there is none or it cannot be decoded)."""
    args = result = None
    try:
        env = app.codec.decode_envelope(rec.body)
        args = app.codec.decode(bytes(env.args))
    except (TaskcoreError, TypeError, ValueError):
        pass
    if rec.result is not None:
        try:
            result = app.codec.decode(rec.result)
        except TaskcoreError:
            pass
    return args, result


def task_row(app: App, rec: TaskRecord, *, values: bool = True) -> dict[str, Any]:
    """One record as a row of the :data:`COLUMNS` (times in epoch seconds, the state as
    its name); ``values=False`` leaves out the decoded ``args`` and ``result``."""
    last = rec.errors[-1] if rec.errors else None
    row: dict[str, Any] = {
        "id": rec.id,
        "task": rec.task,
        "queue": rec.queue,
        "priority": rec.priority,
        "state": str(rec.state),
        "attempt": rec.attempt,
        "enqueued_at": rec.enqueued_at,
        "eligible_at": rec.eligible_at,
        "updated_at": rec.updated_at,
        "started_at": rec.started_at,
        "finished_at": rec.finished_at,
        "deadline": rec.deadline,
        "worker": rec.worker,
        "unique_key": rec.unique_key,
        "fairness_key": rec.fairness_key,
        "cancel_requested": rec.cancel_requested,
        "last_error": None if last is None else f"{last.type}: {last.message}",
    }
    if values:
        row["args"], row["result"] = decoded(app, rec)
    return row


def task_rows(app: App, records: Iterable[TaskRecord]) -> list[dict[str, Any]]:
    """One row per record with the :data:`COLUMNS` (:func:`task_row`)."""
    return [task_row(app, rec) for rec in records]


def render(
    rows: Sequence[Mapping[str, Any]],
    format: Format,
    *,
    root: str = "tasks",
    element: str = "task",
    spreadsheet_safe: bool = True,
) -> bytes:
    """Write ``rows`` (flat mappings of builtin values) in ``format``.

    Args:
        rows: the records; every row should have the same keys (CSV takes its header
            from the keys of all rows, in the order first seen).
        format: ``json``, ``csv``, ``xml`` or ``msgpack``.
        root, element: the XML document and row element names.
        spreadsheet_safe: CSV: write a text cell that a spreadsheet would run as a
            formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
            return) with a leading ``'``; False writes every value exactly.

    Raises:
        ConfigurationError: an unknown format, or a bad XML element name.
    """
    if format == "json":
        return msgspec.json.encode(rows)
    if format == "msgpack":
        return msgspec.msgpack.encode(rows)
    if format == "csv":
        return _csv(rows, spreadsheet_safe)
    if format == "xml":
        for name in (root, element):
            if not _is_name(name):
                raise ConfigurationError(f"{name!r} is not a valid XML element name")
        return _xml(rows, root, element)
    raise ConfigurationError(f"unknown format {format!r}: use one of {', '.join(FORMATS)}")


# -- CSV ----------------------------------------------------------------------------
def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return value
    return msgspec.json.encode(value).decode()


# the first characters that make a spreadsheet read a cell as a formula (OWASP "CSV
# injection"); tab and CR because some applications strip them before looking
FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _safe_cell(value: Any) -> Any:
    cell = _cell(value)
    if isinstance(cell, str) and cell.startswith(FORMULA_START):
        return "'" + cell
    return cell


def _csv(rows: Sequence[Mapping[str, Any]], spreadsheet_safe: bool) -> bytes:
    header = list(dict.fromkeys(key for row in rows for key in row)) if rows else list(COLUMNS)
    out = io.StringIO()
    # QUOTE_MINIMAL quotes every cell holding the delimiter, a quote or a line break,
    # and doubles the quotes inside: any text survives a round trip through csv.reader
    writer = csv.writer(out, lineterminator="\r\n")
    cell = _safe_cell if spreadsheet_safe else _cell
    writer.writerow([cell(key) for key in header])
    writer.writerows([cell(row.get(key)) for key in header] for row in rows)
    return out.getvalue().encode()


# -- XML ----------------------------------------------------------------------------
# the characters XML 1.0 allows (https://www.w3.org/TR/xml/#charsets)
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NAME = re.compile(r"[A-Za-z_][\w.\-]*\Z")


def _is_name(key: str) -> bool:
    return bool(_NAME.match(key)) and not key.lower().startswith("xml")


def _text(value: str) -> str:
    # \r is escaped so that a parser's newline normalisation does not turn it into \n
    return escape(_NOT_XML_CHAR.sub("\ufffd", value), {"\r": "&#13;"})


def _attr(value: str) -> str:
    return quoteattr(_NOT_XML_CHAR.sub("\ufffd", value), {"\r": "&#13;", "\n": "&#10;"})


def _element(out: list[str], name: str, value: Any, attrs: str = "") -> None:
    if value is None:
        out.append(f'<{name}{attrs} null="true"/>')
    elif isinstance(value, bool):
        out.append(f"<{name}{attrs}>{'true' if value else 'false'}</{name}>")
    elif isinstance(value, (int, float)):
        out.append(f"<{name}{attrs}>{value!r}</{name}>")
    elif isinstance(value, str):
        out.append(f"<{name}{attrs}>{_text(value)}</{name}>")
    elif isinstance(value, Mapping):
        out.append(f"<{name}{attrs}>")
        for key, item in value.items():
            key = str(key)
            if _is_name(key):
                _element(out, key, item)
            else:
                _element(out, "entry", item, f" key={_attr(key)}")
        out.append(f"</{name}>")
    elif isinstance(value, (list, tuple)):
        out.append(f"<{name}{attrs}>")
        for item in value:
            _element(out, "item", item)
        out.append(f"</{name}>")
    else:  # anything else msgspec can encode (datetime, UUID...): its JSON text form
        _element(out, name, msgspec.to_builtins(value), attrs)


def _xml(rows: Sequence[Mapping[str, Any]], root: str, element: str) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n', f"<{root}>"]
    for row in rows:
        _element(out, element, row)
        out.append("\n")
    out.append(f"</{root}>\n")
    return "".join(out).encode()
