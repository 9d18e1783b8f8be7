"""The web API and live dashboard: ``create_app(app, monitor=..., tokens=...)`` builds
an ASGI application; ``taskcore web module:app`` serves it with uvicorn.

Needs the ``web`` extra (Starlette, uvicorn, prometheus_client). They are imported
on first use of a name from here, so ``taskcore.web.cli`` (the command's parser) loads
without them and the ``taskcore`` command stays light for its other subcommands.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from taskcore.errors import ConfigurationError

if TYPE_CHECKING:
    from .application import create_app
    from .audit import AuditEntry, AuditLog
    from .auth import Principal, Role, TokenAuth

__all__ = ["AuditEntry", "AuditLog", "Principal", "Role", "TokenAuth", "create_app"]

_WHERE = {
    "create_app": "application",
    "AuditEntry": "audit",
    "AuditLog": "audit",
    "Principal": "auth",
    "Role": "auth",
    "TokenAuth": "auth",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'taskcore.web' has no attribute {name!r}")
    try:
        return getattr(importlib.import_module(f"{__name__}.{module}"), name)
    except ImportError as exc:
        if exc.name not in ("starlette", "prometheus_client", "uvicorn"):
            raise
        raise ConfigurationError(
            f'taskcore.web needs the web extra ({exc.name} is missing): pip install "taskcore[web]"'
        ) from exc
