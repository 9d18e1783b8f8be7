"""Where alert transitions go: the log, a webhook, or a function of yours.

The monitor calls every notifier once per transition (an alert starting to fire, or
resolving), never again while an alert keeps firing. A notifier that raises or hangs
is logged and skipped: the other notifiers and the monitor go on. Write your own by
subclassing :class:`Notifier` and overriding :meth:`~Notifier.notify`.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Mapping

import anyio
import msgspec

from taskcore.errors import ConfigurationError

from .checks import require_httpx
from .snapshot import Alert, AlertState

__all__ = ["CallableNotifier", "LogNotifier", "Notifier", "WebhookNotifier"]

log = logging.getLogger("taskcore.monitor")

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.CRITICAL}


class Notifier:
    """Receives alert transitions. Subclasses override :meth:`notify`."""

    async def notify(self, alert: Alert) -> None:
        """Deliver one transition (``alert.state`` is ``firing`` or ``resolved``)."""


class LogNotifier(Notifier):
    """Logs each transition to the ``taskcore.monitor`` logger: a firing alert at its
    severity's level (info, warning, critical), a resolved one at info."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    async def notify(self, alert: Alert) -> None:
        if alert.state == AlertState.RESOLVED:
            self.logger.info("resolved [%s] %s: %s", alert.severity, alert.rule, alert.summary)
        else:
            self.logger.log(
                _LEVELS.get(alert.severity, logging.WARNING),
                "%s [%s] %s: %s",
                alert.state,
                alert.severity,
                alert.rule,
                alert.summary,
            )


class WebhookNotifier(Notifier):
    """POSTs each transition as JSON (the :class:`~taskcore.monitor.Alert`'s fields) to
    ``url``. A failed delivery (no answer, a status >= 400) is logged, not retried.

    Args:
        url: ``http://`` or ``https://`` endpoint.
        headers: extra headers (an ``Authorization`` token, say).
        timeout: seconds for the whole request (default 5).

    Raises:
        ConfigurationError: httpx is not installed (``pip install "taskcore[monitor]"``),
            or the URL or timeout is invalid.
    """

    def __init__(
        self, url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 5.0
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"WebhookNotifier: url={url!r} must start with http:// or https://"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ConfigurationError(f"WebhookNotifier: timeout={timeout!r} must be seconds > 0")
        if not 0 < timeout < math.inf:
            raise ConfigurationError(f"WebhookNotifier: timeout={timeout!r} must be seconds > 0")
        require_httpx("WebhookNotifier")
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = float(timeout)

    def __repr__(self) -> str:
        return f"<WebhookNotifier {self.url!r}>"

    async def notify(self, alert: Alert) -> None:
        import httpx  # imported (or refused) by the constructor already

        body = msgspec.json.encode(alert)
        headers = {"content-type": "application/json", **self.headers}
        try:
            with anyio.fail_after(self.timeout):
                async with httpx.AsyncClient(timeout=self.timeout) as client:
                    response = await client.post(self.url, content=body, headers=headers)
        except (TimeoutError, httpx.HTTPError, OSError) as exc:
            log.warning(
                "webhook %s: alert %s (%s) not delivered: %s",
                self.url,
                alert.rule,
                alert.state,
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
            return
        if response.status_code >= 400:
            log.warning(
                "webhook %s: alert %s (%s) refused with status %d",
                self.url,
                alert.rule,
                alert.state,
                response.status_code,
            )


class CallableNotifier(Notifier):
    """Calls ``fn(alert)`` for each transition; ``fn`` may be sync or ``async``.

    A sync function runs in the event loop's thread, so it should be quick (hand
    anything slow to a thread or a task yourself).
    """

    def __init__(
        self, fn: Callable[[Alert], object] | Callable[[Alert], Awaitable[object]]
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"CallableNotifier: {fn!r} is not callable")
        self.fn = fn

    def __repr__(self) -> str:
        return f"<CallableNotifier {self.fn!r}>"

    async def notify(self, alert: Alert) -> None:
        result = self.fn(alert)
        if inspect.isawaitable(result):
            await result


NOTIFY_TIMEOUT = 10.0
"""Seconds one notifier may take over one transition before the monitor gives up."""


async def deliver(notifiers: tuple[Notifier, ...], alerts: list[Alert]) -> None:
    """Hand the alerts to every notifier: the notifiers concurrently, each one the
    alerts in order. A notifier's failure (or hang) is logged and costs only its own
    delivery of that alert."""
    if not alerts or not notifiers:
        return

    async def each(notifier: Notifier) -> None:
        for alert in alerts:
            try:
                with anyio.fail_after(NOTIFY_TIMEOUT):
                    await notifier.notify(alert)
            except Exception:
                log.exception(
                    "notifier %r failed on alert %s (%s, %s)",
                    notifier,
                    alert.rule,
                    alert.subject,
                    alert.state,
                )

    async with anyio.create_task_group() as tg:
        for notifier in notifiers:
            tg.start_soon(each, notifier)
