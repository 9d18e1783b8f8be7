"""Remote configuration: the few settings safe to change while workers run, stored in
the backend and hot-reloaded.

One versioned document under one key of the backend's key/value store holds them:
the workers' ``concurrency`` (each worker keeps it within its own autoscaling bounds),
``paused`` (workers stop claiming and finish what they run) and the feature ``flags``.
``app.config.set_remote(...)`` (or ``taskcore config set``) checks a change, bumps the
version and writes the document; every worker reads it once at start and once per
maintenance tick (one ``kv_get``), and reading a flag costs no round trip.

A document this version cannot read (another taskcore version wrote it, or someone
wrote the key by hand) is logged once and ignored: the process keeps the last good one.

Writers do not lock; they compare and set (``kv_replace``): a write stores its document
only if the stored one is still the one it read, and otherwise reads again and applies
its change to the newer document (up to ``WRITE_ATTEMPTS`` times). So changes made at
the same moment all survive, and every write gets its own version, one above the last.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from taskcore.errors import BackendError, ConfigurationError

from .flags import Flag, Flags, as_flag
from .settings import Source, invalid

if TYPE_CHECKING:
    from taskcore.app import App

__all__ = ["REMOTE_KEY", "SCHEMA", "RemoteConfig", "RemoteDocument"]

log = logging.getLogger("taskcore.config")

REMOTE_KEY = "taskcore:config"
SCHEMA = 1  # bumped when a change would be misread by older versions
REMOTE = Source("remote", f"backend key {REMOTE_KEY!r}")
# How many times a write reads and tries again when another writer stored a document
# between its read and its write: that many writers at once all succeed.
WRITE_ATTEMPTS = 10


class RemoteDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The remote configuration as stored (JSON).

    Attributes:
        schema: the document format (``SCHEMA``).
        version: bumped by every write; workers apply a document once per version.
        updated_at: clock time of the last write.
        concurrency: every worker's slot count (None: each keeps its own).
        paused: workers stop claiming (and finish what they run) while True.
        flags: feature flags, over the processes' own.
    """

    schema: int = SCHEMA
    version: Annotated[int, msgspec.Meta(ge=0)] = 0
    updated_at: float = 0.0
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    paused: bool = False
    flags: dict[str, Flag] = {}


class _Unset(enum.Enum):
    UNSET = enum.auto()


UNSET = _Unset.UNSET


def decode(raw: bytes) -> RemoteDocument:
    """A stored document, checked.

    Raises:
        ConfigurationError: not a document this version can read.
    """
    try:
        probe = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"{REMOTE} is not JSON: {exc}") from None
    schema = probe.get("schema") if isinstance(probe, dict) else None
    if schema != SCHEMA:
        raise ConfigurationError(
            f"{REMOTE} has schema {schema!r}, this taskcore reads schema {SCHEMA}; "
            "upgrade taskcore, or overwrite it with 'taskcore config set --replace'"
        )
    try:
        return msgspec.convert(probe, RemoteDocument)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"{REMOTE} is invalid: {exc}") from None


class RemoteConfig:
    """The remote configuration of an app: ``app.config``.

    ``document`` is the last good document read or written by this process (None before
    the first read, or when the backend holds none).
    """

    def __init__(self, app: App, flags: Flags) -> None:
        self._app = app
        self._flags = flags
        self.document: RemoteDocument | None = None
        self._raw: bytes | None = None  # what the last read found (good or not)

    def __repr__(self) -> str:
        version = None if self.document is None else self.document.version
        return f"<RemoteConfig version={version}>"

    def _accept(self, raw: bytes | None, doc: RemoteDocument | None) -> None:
        self._raw = raw
        self.document = doc
        self._flags.remote = {} if doc is None else dict(doc.flags)

    async def refresh(self) -> RemoteDocument | None:
        """Read the stored document (one ``kv_get``) and make it current if it is good;
        a bad one is logged (once) and ignored. Returns the current document.

        Raises:
            BackendError: the backend could not be read (the current document stays).
        """
        raw = await self._app.backend.kv_get(REMOTE_KEY)
        if raw == self._raw:
            return self.document
        if raw is None:
            self._accept(None, None)
            return None
        try:
            doc = decode(raw)
        except ConfigurationError as exc:
            self._raw = raw  # logged once per bad document, not at every tick
            log.warning(
                "ignoring the remote configuration: %s; keeping version %s",
                exc,
                None if self.document is None else self.document.version,
            )
            return self.document
        self._accept(raw, doc)
        return doc

    async def get_remote(self) -> RemoteDocument | None:
        """The stored document (None when there is none).

        Raises:
            ConfigurationError: the stored document is not one this version can read.
        """
        await self._app.open()
        raw = await self._app.backend.kv_get(REMOTE_KEY)
        return None if raw is None else decode(raw)

    async def set_remote(
        self,
        *,
        concurrency: int | _Unset | None = UNSET,
        paused: bool | _Unset = UNSET,
        flags: Mapping[str, bool | Flag | Mapping[str, Any] | None] | None = None,
        replace: bool = False,
    ) -> RemoteDocument:
        """Change the remote configuration; workers apply it at their next maintenance.

        Args:
            concurrency: every worker's slot count; None: each worker's own again.
            paused: True: workers stop claiming; False: they claim again.
            flags: flags to set (``True``, ``False``, ``{"percent": 25}``, a
                :class:`Flag`) or, with None, to remove.
            replace: start from an empty document instead of the stored one (to
                overwrite one this version cannot read).

        The change is applied to the stored document and written only if that is
        still the stored one (compare-and-set); when another writer got there first,
        it is applied again to the newer document, up to ``WRITE_ATTEMPTS`` times.

        Returns:
            The document written (its version one above the one it replaced).

        Raises:
            ConfigurationError: a value out of bounds (nothing is written), or a stored
                document this version cannot read (without ``replace``).
            BackendError: other writers got there first ``WRITE_ATTEMPTS`` times in a
                row (nothing was written), or the backend failed (a
                :class:`~taskcore.errors.BackendUnavailable` during the write may or
                may not have stored it: read it back).
        """
        await self._app.open()
        backend = self._app.backend
        for _ in range(WRITE_ATTEMPTS):
            stored = await backend.kv_get(REMOTE_KEY)
            doc = self._changed(stored, concurrency, paused, flags, replace)
            raw = msgspec.json.encode(doc)
            if await backend.kv_replace(REMOTE_KEY, stored, raw):
                self._accept(raw, doc)
                return doc
            # another writer stored a document since the read: apply the change to it
        raise BackendError(
            f"{REMOTE} changed under this write {WRITE_ATTEMPTS} times in a row (other "
            "writers got there first each time); nothing was written by this call: "
            "read the configuration and try again"
        )

    def _changed(
        self,
        stored: bytes | None,
        concurrency: int | _Unset | None,
        paused: bool | _Unset,
        flags: Mapping[str, bool | Flag | Mapping[str, Any] | None] | None,
        replace: bool,
    ) -> RemoteDocument:
        """The document ``stored`` (raw, None: none) becomes with the change, one
        version above it."""
        current = None if replace or stored is None else decode(stored)
        version = current.version if current else 0
        if replace:  # go on counting from an unreadable document's version, if any
            with contextlib.suppress(msgspec.DecodeError):
                old = msgspec.json.decode(stored or b"null")
                if isinstance(old, dict) and isinstance(old.get("version"), int):
                    version = max(0, old["version"])
        data = msgspec.to_builtins(current or RemoteDocument())
        if concurrency is not UNSET:
            data["concurrency"] = concurrency
        if paused is not UNSET:
            data["paused"] = paused
        for name, value in (flags or {}).items():
            if value is None:
                data["flags"].pop(name, None)
                continue
            if not isinstance(name, str) or not name:
                raise invalid("flags", name, REMOTE, "a flag name is a non-empty string")
            try:
                data["flags"][name] = msgspec.to_builtins(as_flag(value))
            except ConfigurationError as exc:
                raise invalid(f"flags.{name}", value, REMOTE, str(exc)) from None
        data["version"] = version + 1
        data["updated_at"] = self._app.clock.now()
        data["schema"] = SCHEMA
        try:
            return msgspec.convert(data, RemoteDocument)
        except msgspec.ValidationError as exc:
            text, _, where = str(exc).partition(" - at `$.")
            key = where.rstrip("`")
            raise invalid(key, data.get(key), REMOTE, text[:1].lower() + text[1:]) from None
