"""SQL text: the statements in ``sql/queries`` and the migrations in ``sql/migrations``.

Every file names its schema ``@schema@``; :func:`render` substitutes the quoted schema
name. Schema names are restricted to plain identifiers (:func:`check_schema`), so the
substitution can never change a statement's meaning. A few statements come in variants
(e.g. ``enqueue`` with or without ``ON CONFLICT``): their other ``@name@`` markers are
filled from fixed SQL fragments given by the backend (:meth:`Statements.variant`).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from taskcore.errors import ConfigurationError

__all__ = ["Statements", "check_schema", "migrations", "query", "render", "strip_comments"]

_SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def check_schema(schema: str) -> str:
    """Return ``schema`` if it is a plain identifier, else raise ConfigurationError."""
    if not _SCHEMA_RE.fullmatch(schema):
        raise ConfigurationError(
            f"invalid PostgreSQL schema name {schema!r}: use 1-48 letters, digits or "
            "underscores, not starting with a digit (e.g. 'taskcore')"
        )
    return schema


def render(text: str, schema: str) -> str:
    return text.replace("@schema@", f'"{check_schema(schema)}"')


@cache
def _read(folder: str, name: str) -> str:
    return resources.files("taskcore_pg").joinpath("sql", folder, name).read_text("utf-8")


def strip_comments(text: str) -> str:
    """``text`` without its ``--`` comments, indentation and blank lines.

    They are for the reader of the files; sent along, they would make every statement
    longer, and psycopg caches the parsing of a query's text only up to 4 KiB (claim.sql
    is twice that with them). Quoted text (``'...'``, ``"..."``, on one line) is kept
    as it is.
    """
    lines = []
    for line in text.splitlines():
        quote = ""
        cut = len(line)
        for i, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif line.startswith("--", i):
                cut = i
                break
        kept = line[:cut].strip()
        if kept:
            lines.append(kept)
    return "\n".join(lines)


def query(name: str, schema: str, **fragments: str) -> str:
    """The statement ``sql/queries/<name>.sql`` for ``schema``, without its comments,
    its ``@key@`` markers replaced by ``fragments[key]`` (which may name ``@schema@``)."""
    text = strip_comments(_read("queries", f"{name}.sql"))
    for key, fragment in fragments.items():
        marker = f"@{key}@"
        if marker not in text:
            raise ValueError(f"{name}.sql has no marker {marker}")
        text = text.replace(marker, fragment)
    text = render(text, schema)  # (a fragment may name @schema@ too)
    leftover = re.search(r"@\w+@", text)
    if leftover:
        raise ValueError(f"{name}.sql: no fragment given for {leftover[0]}")
    return text


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of every migration file, in version order."""
    folder = resources.files("taskcore_pg").joinpath("sql", "migrations")
    out = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_(\w+)\.sql", entry.name)
        if match:
            out.append((int(match[1]), match[2], entry.read_text("utf-8")))
    return sorted(out)


class Statements:
    """All statements rendered for one schema (rendered once per backend)."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._cache: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        text = self._cache.get(name)
        if text is None:
            text = self._cache[name] = query(name, self.schema)
        return text

    def variant(self, name: str, **fragments: str) -> str:
        """The statement ``name`` with its markers filled from ``fragments``."""
        key = f"{name}:{sorted(fragments.items())}"
        text = self._cache.get(key)
        if text is None:
            text = self._cache[key] = query(name, self.schema, **fragments)
        return text
