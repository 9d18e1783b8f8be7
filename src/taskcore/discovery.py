"""Find a backend by URL scheme through the ``taskcore.backends`` entry points."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import cast
from urllib.parse import urlsplit

from .backend import Backend
from .clock import Clock
from .errors import ConfigurationError

__all__ = ["backend_from_url"]

_EXTRAS = {"redis": "redis", "rediss": "redis", "postgresql": "pg", "postgres": "pg"}


def backend_from_url(url: str, clock: Clock | None = None) -> Backend:
    """Build (not yet open) the backend for ``url``.

    Raises:
        ConfigurationError: unknown scheme, or the extra that provides it is missing.
    """
    scheme = urlsplit(url).scheme
    if not scheme or "://" not in url:
        raise ConfigurationError(
            f"backend URL {url!r} has no scheme; use memory://, redis://host:6379/0 or "
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
