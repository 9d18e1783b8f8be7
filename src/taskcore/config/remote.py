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
Writers do not lock: two changes at the same moment may lose one (last writer wins).
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from taskcore.errors import ConfigurationError

from .flags import Flag, Flags, as_flag
from .settings import Source, invalid

if TYPE_CHECKING:
    from taskcore.app import App

__all__ = ["REMOTE_KEY", "SCHEMA", "RemoteConfig", "RemoteDocument"]

log = logging.getLogger("taskcore.config")

REMOTE_KEY = "taskcore:config"
SCHEMA = 1  # bumped when a change would be misread by older versions
REMOTE = Source("remote", f"backend key {REMOTE_KEY!r}")


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

        Returns:
            The document written (its version one above the stored one).

        Raises:
            ConfigurationError: a value out of bounds (nothing is written), or a stored
                document this version cannot read (without ``replace``).
        """
        await self._app.open()
        current = None if replace else await self.get_remote()
        version = current.version if current else 0
        if replace:  # go on counting from an unreadable document's version, if any
            raw = await self._app.backend.kv_get(REMOTE_KEY)
            with contextlib.suppress(msgspec.DecodeError):
                stored = msgspec.json.decode(raw or b"null")
                if isinstance(stored, dict) and isinstance(stored.get("version"), int):
                    version = max(0, stored["version"])
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
            doc = msgspec.convert(data, RemoteDocument)
        except msgspec.ValidationError as exc:
            text, _, where = str(exc).partition(" - at `$.")
            key = where.rstrip("`")
            raise invalid(key, data.get(key), REMOTE, text[:1].lower() + text[1:]) from None
        raw = msgspec.json.encode(doc)
        await self._app.backend.kv_set(REMOTE_KEY, raw)
        self._accept(raw, doc)
        return doc
