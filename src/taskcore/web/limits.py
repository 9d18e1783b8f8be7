"""Request limits as ASGI middleware: a body-size limit (413) and a per-client rate
limit (429 with ``Retry-After``) drawn from the backend's cluster-wide token bucket, so
every web process behind a load balancer shares one budget per client."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskcore.backend import Backend
from taskcore.task import RateLimit

__all__ = ["BodyLimit", "ClientRateLimit", "json_error"]

logger = logging.getLogger("taskcore.web")

# probes must answer even when a client floods the API
EXEMPT = frozenset({"/healthz", "/readyz"})


async def json_error(
    send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = msgspec.json.encode({"error": message, "status": status})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over ``max_body`` bytes with 413, by ``Content-Length`` up
    front or by counting a streamed body."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def _message(self, size: int | None) -> str:
        got = f"{size} bytes" if size is not None else "more"
        return (
            f"request body is {got}, over the limit of {self.max_body} bytes; send less per "
            "request (split the batch) or raise create_app(max_body=...)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await json_error(send, 400, f"invalid Content-Length {value.decode()!r}")
                    return
                if length > self.max_body:
                    await json_error(send, 413, self._message(length))
                    return
        total = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_body:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await json_error(send, 413, self._message(None))


class ClientRateLimit:
    """At most ``limit`` requests per client (its address; behind a proxy, run uvicorn
    with ``--proxy-headers`` so that is the real client's), through
    ``backend.take_tokens``. If the backend cannot answer, the request goes through (the
    limit protects the backend; refusing everyone while it is down helps no one)."""

    def __init__(self, app: ASGIApp, backend: Callable[[], Backend], limit: RateLimit) -> None:
        self.app = app
        self.backend = backend
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("unknown", 0)
        try:
            wait = await self.backend().take_tokens(
                f"web:client:{client[0]}", self.limit.rate, self.limit.burst
            )
        except Exception as exc:  # the limiter must not take the API down with the backend
            logger.warning("rate limit not applied (backend error: %s)", exc)
            wait = 0.0
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            await json_error(
                send,
                429,
                f"too many requests from {client[0]}: the limit is {self.limit.rate:g} per "
                f"second (bursts of {self.limit.burst:g}); retry after {retry_after} s",
                [(b"retry-after", str(retry_after).encode())],
            )
            return
        await self.app(scope, receive, send)
