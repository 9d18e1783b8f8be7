"""What every web handler shares: the taskcore App, the monitor, auth and the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import anyio
import anyio.abc
import attrs
import msgspec
from starlette.requests import Request

from taskcore.app import App
from taskcore.monitor.snapshot import Alert, Snapshot

from .audit import AuditLog
from .auth import COOKIE, Principal, Role, TokenAuth

__all__ = ["ApiError", "MonitorSource", "WebContext"]


class MonitorSource(Protocol):
    """What the web layer reads from :class:`taskcore.monitor.Monitor`."""

    @property
    def latest(self) -> Snapshot | None: ...
    @property
    def history(self) -> Sequence[Snapshot]: ...
    @property
    def alert_log(self) -> Sequence[Alert]: ...
    async def sample(self) -> Snapshot: ...
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None: ...
    def subscribe(
        self, buffer: int = 16
    ) -> AbstractContextManager[anyio.abc.ObjectReceiveStream[Snapshot]]: ...


class ApiError(Exception):
    """A request the API refuses: the status and a message naming the problem and the fix."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    def body(self) -> bytes:
        return msgspec.json.encode({"error": self.message, "status": self.status})


# a browser sends this on the dashboard's fetch() calls; a cross-site form cannot set it
# and a cross-site fetch() with it needs a CORS preflight that nothing here answers
CSRF_HEADER = "x-requested-with"


@attrs.define
class WebContext:
    app: App
    monitor: MonitorSource | None
    auth: TokenAuth
    audit: AuditLog

    def principal(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization", "")
        scheme, _, bearer = header.partition(" ")
        if header and scheme.lower() != "bearer":
            return None
        return self.auth.identify(bearer.strip() or None, request.cookies.get(COOKIE))

    def require(self, request: Request, role: Role) -> Principal:
        """The request's principal if its role is at least ``role``.

        Raises:
            ApiError: 401 without a valid token, 403 with too low a role or a
                cookie-authenticated change without the dashboard's header.
        """
        principal = self.principal(request)
        if principal is None:
            given = "an unknown token" if _has_credentials(request) else "no token"
            raise ApiError(
                401,
                f"authentication required: the request carried {given}; send "
                "'Authorization: Bearer <token>' or log in at /login",
                {"WWW-Authenticate": 'Bearer realm="taskcore"'},
            )
        if principal.role < role:
            raise ApiError(
                403,
                f"this needs the {role.label} role; the token has {principal.role.label}",
            )
        if (
            principal.via == "cookie"
            and request.method not in ("GET", "HEAD")
            and CSRF_HEADER not in request.headers
        ):
            raise ApiError(
                403,
                f"a change authenticated by the login cookie must carry an "
                f"'{CSRF_HEADER}' header (the dashboard sends it); API clients use a bearer "
                "token",
            )
        return principal

    def client(self, request: Request) -> str:
        return request.client.host if request.client else ""

    async def audited(
        self, request: Request, action: str, targets: Sequence[str], result: str, *, ok: bool
    ) -> None:
        """Record a change made through ``request`` in the audit trail."""
        principal: Principal | None = getattr(request.state, "principal", None)
        await self.audit.record(
            principal, action, targets, result, ok=ok, client=self.client(request)
        )


def _has_credentials(request: Request) -> bool:
    return "authorization" in request.headers or COOKIE in request.cookies
