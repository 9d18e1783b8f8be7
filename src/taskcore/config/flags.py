"""Feature flags: on, off, or on for a percentage of keys.

A flag's value comes from the process's settings (``[flags]`` in the file) unless the
remote configuration, stored in the backend, names it: the remote value wins. Reading
a flag never does I/O: it looks at the last remote document the process has (a
worker refreshes it at every maintenance tick).

A percentage rollout is keyed by a stable id (a customer, an account): the key and the
flag's name hash to a bucket in ``[0, 100)`` and the flag is on for buckets below the
percentage, so raising the percentage only adds keys, and every process agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from taskcore.errors import ConfigurationError

__all__ = ["Flag", "Flags", "as_flag", "bucket"]


class Flag(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A feature flag's value.

    Args:
        enabled: False turns the flag off for everyone.
        percent: the share of keys (0-100) the flag is on for; 100: everyone.
    """

    enabled: bool = True
    percent: Annotated[float, msgspec.Meta(ge=0, le=100)] = 100.0


def as_flag(value: bool | Flag | Mapping[str, Any]) -> Flag:
    """A :class:`Flag` from ``True``/``False``, a mapping (``{"percent": 25}``) or a Flag.

    Raises:
        ConfigurationError: anything else, or a percentage outside 0-100.
    """
    if isinstance(value, Flag):
        return value
    if isinstance(value, bool):
        return Flag(enabled=value)
    try:
        return msgspec.convert(value, Flag)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(
            f"flag value {value!r}: {exc}; use true, false or {{percent = 0-100}}"
        ) from None


def bucket(name: str, key: str | int) -> float:
    """The rollout bucket of ``key`` for flag ``name``: a stable number in [0, 100)."""
    import hashlib  # not at start-up: hashlib loads OpenSSL's digests

    digest = hashlib.blake2b(f"{name}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100


class Flags:
    """The feature flags a process sees: ``app.flags``.

    ``local`` comes from the settings, ``remote`` from the last remote configuration
    the process read; a flag named in both takes the remote value.
    """

    def __init__(self, local: Mapping[str, Flag] | None = None) -> None:
        self.local: dict[str, Flag] = dict(local or {})
        self.remote: dict[str, Flag] = {}

    def __repr__(self) -> str:
        return f"<Flags {sorted(self.current())}>"

    def get(self, name: str) -> Flag | None:
        """The flag's current value, or None when neither source names it."""
        flag = self.remote.get(name)
        return self.local.get(name) if flag is None else flag

    def current(self) -> dict[str, Flag]:
        """Every flag the process knows, remote values over local ones."""
        return {**self.local, **self.remote}

    def enabled(self, name: str, key: str | int | None = None, *, default: bool = False) -> bool:
        """Whether flag ``name`` is on (no I/O: safe in sync and async tasks).

        Args:
            name: the flag.
            key: a stable id (customer, account...) for percentage rollouts. A flag
                rolled out to less than 100 % is off when no key is given.
            default: the answer when no source names the flag.
        """
        flag = self.get(name)
        if flag is None:
            return default
        if not flag.enabled or flag.percent <= 0:
            return False
        if flag.percent >= 100:
            return True
        return key is not None and bucket(name, key) < flag.percent
