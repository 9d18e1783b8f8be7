"""The web API and live dashboard: ``create_app(app, monitor=..., tokens=...)`` builds
an ASGI application; ``taskcore web module:app`` serves it with uvicorn.

Needs the ``web`` extra (Starlette, uvicorn, prometheus_client)."""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    from taskcore.errors import ConfigurationError

    raise ConfigurationError(
        f'taskcore.web needs the web extra ({exc.name} is missing): pip install "taskcore[web]"'
    ) from exc

from .application import create_app
from .audit import AuditEntry, AuditLog
from .auth import Principal, Role, TokenAuth

__all__ = ["AuditEntry", "AuditLog", "Principal", "Role", "TokenAuth", "create_app"]
