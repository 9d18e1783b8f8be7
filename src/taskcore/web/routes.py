"""Endpoints as data: one table that builds both the Starlette routes and the OpenAPI
document, so no route can be served without being described."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import attrs
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from taskcore.errors import BackendError, TaskcoreError

from .auth import Role
from .context import ApiError, WebContext

__all__ = ["Endpoint", "Param", "build_routes", "openapi_document"]

logger = logging.getLogger("taskcore.web")

Handler = Callable[[Request], Awaitable[Response]]


@attrs.frozen
class Param:
    name: str
    description: str
    where: str = "query"
    type: str = "string"
    required: bool = False


@attrs.frozen
class Endpoint:
    """One route: method, Starlette path, handler, the role it needs (None: public)."""

    method: str
    path: str
    handler: Handler
    role: Role | None
    summary: str
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    """JSON schema of the request body."""
    media_type: str = "application/json"
    audit: str | None = None
    """The audit action name of a mutating endpoint (refusals are audited too)."""
    responses: tuple[tuple[str, str], ...] = ()
    """Further responses for the OpenAPI document: (status, description)."""
    media_types: tuple[str, ...] = ()
    """Further media types of the 200 response (a ``format=`` query parameter)."""
    html: bool = False
    """A page: without a login, redirect to /login instead of answering 401."""
    tag: str = "api"


def error_response(exc: ApiError) -> Response:
    return Response(exc.body(), exc.status, exc.headers, media_type="application/json")


def _guard(ctx: WebContext, ep: Endpoint) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            if ep.role is not None:
                try:
                    request.state.principal = ctx.require(request, ep.role)
                except ApiError as exc:
                    if ep.audit is not None:
                        await ctx.audit.record(
                            ctx.principal(request),
                            ep.audit,
                            _targets(request),
                            f"refused ({exc.status}): {exc.message}",
                            ok=False,
                            client=ctx.client(request),
                        )
                    if ep.html and exc.status == 401:
                        target = quote(request.url.path, safe="/")
                        return RedirectResponse(f"/login?next={target}", 303)
                    raise
            return await ep.handler(request)
        except ApiError as exc:
            return error_response(exc)
        except BackendError as exc:
            logger.warning("%s %s: backend error: %s", request.method, request.url.path, exc)
            return error_response(
                ApiError(503, f"the backend failed: {exc}; retry once it is reachable")
            )
        except TaskcoreError as exc:
            return error_response(ApiError(400, str(exc)))

    endpoint.__name__ = ep.handler.__name__
    endpoint.__doc__ = ep.summary
    return endpoint


def _targets(request: Request) -> list[str]:
    return [str(v) for v in request.path_params.values()]


def build_routes(ctx: WebContext, endpoints: Sequence[Endpoint]) -> list[Route]:
    return [
        Route(ep.path, _guard(ctx, ep), methods=[ep.method], name=f"{ep.method} {ep.path}")
        for ep in endpoints
    ]


_CONVERTER = re.compile(r":\w+}")


def openapi_path(path: str) -> str:
    """``/api/queues/{queue:path}/pause`` -> ``/api/queues/{queue}/pause``."""
    return _CONVERTER.sub("}", path)


def openapi_document(endpoints: Sequence[Endpoint], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "summary": ep.summary.split("\n", 1)[0],
            "description": ep.summary,
            "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
            "tags": [ep.tag],
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "description": p.description,
                    "schema": {"type": p.type},
                }
                for p in ep.params
            ],
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {t: {} for t in (ep.media_type, *ep.media_types)},
                }
            },
        }
        for status, text in ep.responses:
            op["responses"][status] = {"description": text}
        if ep.role is not None:
            op["security"] = [{"bearer": []}, {"cookie": []}]
            op["x-taskcore-role"] = ep.role.label
            op["responses"]["401"] = {"description": "no token, or an unknown one"}
            op["responses"]["403"] = {"description": f"the token's role is below {ep.role.label}"}
        if ep.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ep.body}},
            }
            op["responses"]["413"] = {"description": "request body over the size limit"}
        op["responses"]["429"] = {"description": "rate limited; see Retry-After"}
        paths.setdefault(openapi_path(ep.path), {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskcore",
            "version": version,
            "description": "Queues, workers, tasks, dead letters, schedules and alerts of a "
            "taskcore application. Roles: viewer < operator < admin.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "taskcore_token"},
            }
        },
    }
