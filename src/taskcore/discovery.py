"""Find a backend by URL scheme through the ``taskcore.backends`` entry points."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .backend import Backend
from .clock import Clock
from .errors import ConfigurationError

__all__ = ["backend_from_url", "redact_url"]

_EXTRAS = {"redis": "redis", "rediss": "redis", "postgresql": "pg", "postgres": "pg"}
_SECRET_PARAMS = {"password", "sslpassword", "passfile"}
_SCHEMELESS_USER = re.compile(r"^([^\s/@:=]*):[^\s/@]*@")
_SECRET_KV = re.compile(r"\b(password|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_url(url: str) -> str:
    """``url`` fit for an error or log message: the password in its user part and
    password-like query parameters (or ``key=value`` DSN fields) become ``***``."""
    if "://" not in url:  # a key=value DSN, or a URL that lost its scheme
        url = _SCHEMELESS_USER.sub(r"\1:***@", url)
        return _SECRET_KV.sub(lambda m: f"{m.group(1)}=***", url)
    try:
        parts = urlsplit(url)
        user, at, host = parts.netloc.rpartition("@")
        if at and ":" in user:
            user = f"{user.partition(':')[0]}:***"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(k.lower() in _SECRET_PARAMS for k, _ in pairs):
                query = urlencode(
                    [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
                )
        return urlunsplit(parts._replace(netloc=f"{user}{at}{host}", query=query))
    except ValueError:  # unparseable: say only what kind of URL it was
        return f"{url.partition('://')[0]}://..."


def backend_from_url(url: str, clock: Clock | None = None) -> Backend:
    """Build (not yet open) the backend for ``url``.

    Raises:
        ConfigurationError: unknown scheme, or the extra that provides it is missing.
    """
    scheme = urlsplit(url).scheme
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"backend URL {redact_url(url)!r} has no scheme; use memory://, redis://host:6379/0 or "
            "postgresql://user@host/db"
        )
    if scheme == "memory":
        from .memory import MemoryBackend

        return MemoryBackend.from_url(url, clock=clock)
    found = [ep for ep in entry_points(group="taskcore.backends") if ep.name == scheme]
    if not found:
        known = sorted({ep.name for ep in entry_points(group="taskcore.backends")} | {"memory"})
        raise ConfigurationError(
            f"no taskcore backend for URL scheme {scheme!r}; installed schemes: {', '.join(known)}"
        )
    try:
        cls = found[0].load()
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise ConfigurationError(
            f"the {scheme}:// backend needs extra packages ({exc.name or exc}); "
            f'install them with: pip install "taskcore[{extra}]"'
        ) from exc
    return cast(Backend, cls.from_url(url, clock=clock))
