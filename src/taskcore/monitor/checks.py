"""Health checks the monitor runs on its schedule: the backend, HTTP endpoints, TCP ports.

A check is a :class:`Check` whose :meth:`~Check.probe` raises when the thing checked is
unhealthy. :meth:`Check.run` times the probe, bounds it by the check's ``timeout``
(real seconds: 0.5 by default, the specification's health-check response limit) and
turns every outcome into a :class:`~taskcore.monitor.CheckResult`; it never raises.
Write your own check by subclassing :class:`Check` and overriding ``probe``.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import anyio

from taskcore.errors import ConfigurationError

from .snapshot import CheckResult

if TYPE_CHECKING:
    from taskcore.app import App

__all__ = ["DEFAULT_TIMEOUT", "BackendCheck", "Check", "HttpCheck", "TcpCheck"]

DEFAULT_TIMEOUT = 0.5
"""Seconds: the specification wants health checks to answer within 500 ms."""


class Check:
    """A named health check. Subclasses override :meth:`probe`.

    Args:
        name: how the check appears in snapshots and alerts (unique per monitor).
        timeout: seconds the probe may take before it counts as failed (> 0).
    """

    kind = "custom"

    def __init__(self, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"check name {name!r}: give a non-empty string")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not 0 < timeout < math.inf
        ):
            raise ConfigurationError(f"check {name!r}: timeout={timeout!r} must be seconds > 0")
        self.name = name
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} timeout={self.timeout}>"

    async def probe(self, app: App) -> None:
        """Raise if unhealthy (any exception; its text becomes the result's ``error``)."""

    async def run(self, app: App) -> CheckResult:
        """Run the probe once, within the timeout. Never raises (except cancellation)."""
        at = app.clock.now()
        start = time.perf_counter()
        error: str | None = None
        try:
            with anyio.fail_after(self.timeout):
                await self.probe(app)
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return CheckResult(
            name=self.name,
            kind=self.kind,
            ok=error is None,
            latency=time.perf_counter() - start,
            at=at,
            error=error,
        )


class BackendCheck(Check):
    """Times a cheap backend call (``backend.workers()``, one round trip).

    Every monitor runs one, named ``backend``, unless given a check of this kind.
    """

    kind = "backend"

    def __init__(self, name: str = "backend", *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(name, timeout=timeout)

    async def probe(self, app: App) -> None:
        await app.backend.workers()


class HttpCheck(Check):
    """Requests ``url`` and expects ``expect_status`` (uses httpx: the ``monitor`` extra).

    Args:
        name: the check's name.
        url: ``http://`` or ``https://`` URL.
        expect_status: the status code of a healthy answer (default 200).
        timeout: seconds for the whole request (default 0.5).
        method: HTTP method (default ``GET``).
        headers: extra request headers (an auth token, say).

    Raises:
        ConfigurationError: httpx is not installed, or the URL is not HTTP(S).
    """

    kind = "http"

    def __init__(
        self,
        name: str,
        url: str,
        expect_status: int = 200,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        method: str = "GET",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"HttpCheck {name!r}: url={url!r} must start with http:// or https://"
            )
        require_httpx(f"HttpCheck {name!r}")
        self.url = url
        self.expect_status = expect_status
        self.method = method.upper()
        self.headers = dict(headers or {})

    async def probe(self, app: App) -> None:
        import httpx  # imported (or refused) by the constructor already

        # a client per probe: nothing to close when the monitor stops, and each probe
        # measures a fresh connection, as a client arriving at the service would see it
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            response = await client.request(self.method, self.url, headers=self.headers)
        if response.status_code != self.expect_status:
            raise CheckFailed(
                f"{self.method} {self.url} answered {response.status_code}, "
                f"expected {self.expect_status}"
            )


class TcpCheck(Check):
    """Opens a TCP connection to ``host:port`` and closes it."""

    kind = "tcp"

    def __init__(
        self, name: str, host: str, port: int, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        super().__init__(name, timeout=timeout)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"TcpCheck {name!r}: port={port!r} must be 1-65535")
        self.host = host
        self.port = port

    async def probe(self, app: App) -> None:
        stream = await anyio.connect_tcp(self.host, self.port)
        await stream.aclose()


class CheckFailed(Exception):
    """A probe's answer was not the healthy one (not an error of taskcore itself)."""


def require_httpx(what: str) -> None:
    """Import httpx, or say which extra installs it.

    Raises:
        ConfigurationError: httpx is not installed.
    """
    try:
        import httpx  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            f'{what} needs httpx, which is not installed: pip install "taskcore[monitor]"'
        ) from None
