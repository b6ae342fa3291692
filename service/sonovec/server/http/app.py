"""The FastAPI application: routers over the one core service, errors mapped at this edge."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from sonovec.server.budget import MemoryBudget
from sonovec.server.errors import HTTP_STATUS, ErrorKind, SonovecError
from sonovec.server.http import explore, v2
from sonovec.server.http.deps import require_api_key
from sonovec.server.http.disconnect import CancelOnDisconnect
from sonovec.server.http.guard import BodyLimit, CatchAll
from sonovec.server.http.routers import (
    classify,
    codec,
    collections,
    embed,
    health,
    lab,
    maps,
    models,
    similarity,
)
from sonovec.server.http.routers._docs import install_openapi
from sonovec.server.metrics import Metrics
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

# Base64 in JSON makes a body up to 4/3 the size of the audio it carries.
_BODY_OVERHEAD = 4 / 3


def create_app(runtime: Runtime) -> FastAPI:
    """The REST app over ``runtime``. It starts nothing: whoever owns the runtime (``sonovec serve``,
    a test) starts and drains it; until it is ready, /v1 answers 503 with Retry-After."""
    settings = runtime.settings
    app = FastAPI(
        title="sonovec",
        version="0.1.0",
        summary="Batched EnCodec embeddings, codes, similarity and classification.",
    )
    app.state.runtime = runtime

    auth = [Depends(require_api_key)]
    # maps before collections: the item audio route first
    routers = (embed, codec, similarity, models, maps, collections, classify, lab)
    for router in (r.router for r in routers):
        app.include_router(router, prefix="/v1", dependencies=auth)
    app.include_router(health.router)
    app.include_router(v2.router)  # the Open Inference Protocol: its own errors, key and readiness checks
    app.include_router(explore.router)  # the page; its API calls go to /v1 with the key
    _install_error_handlers(app)
    _install_middleware(app, settings, runtime.metrics)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(CatchAll)  # outermost of ours: nothing escapes to the server
    install_openapi(app)
    return app


def error_response(error: SonovecError, extra: Mapping[str, str] | None = None) -> JSONResponse:
    headers = dict(extra or {})
    if error.kind == ErrorKind.METHOD_NOT_ALLOWED and error.allowed:
        headers["Allow"] = error.allowed
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return JSONResponse(error.to_dict(), status_code=HTTP_STATUS[error.kind], headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SonovecError)
    async def on_error(_: Request, exc: SonovecError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return error_response(SonovecError(ErrorKind.INVALID, first["msg"], field=where, allowed="see /docs"))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(_http_error(request, exc), exc.headers)
    # Any other exception: ``guard.CatchAll`` answers it (500 ``internal`` with a request id)


def _http_error(request: Request, exc: StarletteHTTPException) -> SonovecError:
    """Starlette's own 404/405 (and any other HTTPException) in the project's error shape."""
    if exc.status_code == 404:
        return SonovecError(ErrorKind.NOT_FOUND, f"no route {request.url.path}", field="path",
                            allowed="see /docs")
    if exc.status_code == 405:
        return SonovecError(
            ErrorKind.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {request.url.path}",
            field="method",
            allowed=", ".join(_allowed_methods(request)),
        )
    kind = next((k for k, code in HTTP_STATUS.items() if code == exc.status_code), ErrorKind.INVALID)
    return SonovecError(kind, str(exc.detail))


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API takes on this path, from the OpenAPI document (Starlette's own Allow
    names only the first route that matched the path)."""
    app = request.app
    if getattr(app.state, "allowed_methods", None) is None:
        app.state.allowed_methods = [
            (compile_path(path)[0], {method.upper() for method in operations})
            for path, operations in app.openapi().get("paths", {}).items()
        ]
    methods: set[str] = set()
    for pattern, verbs in app.state.allowed_methods:
        if pattern.match(request.url.path):
            methods |= verbs | ({"HEAD"} if "GET" in verbs else set())
    return sorted(methods)


def _install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    max_body = int(settings.max_request_bytes * _BODY_OVERHEAD) + 64 * 1024

    runtime: Runtime = app.state.runtime

    def budget() -> MemoryBudget | None:
        return runtime.service.memory if runtime.ready else None

    # innermost of ours, so that its 413s and 429s are measured below
    app.add_middleware(BodyLimit, max_body=max_body, max_audio=settings.max_request_bytes, get_budget=budget)

    @app.middleware("http")
    async def guard_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response: Response
        if request.url.path.startswith("/v1/") and not request.url.path.startswith("/v1/health"):
            response = await _when_ready(request, call_next)
        else:
            response = await call_next(request)
        method = _route_template(request)
        metrics.requests.labels(method, str(response.status_code)).inc()
        metrics.latency.labels(method).observe(time.perf_counter() - started)
        return response


def _route_template(request: Request) -> str:
    """The matched route's template (``/v1/collections/{name}``), never the raw path: bounded labels."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    if request.url.path.startswith("/v1/") and not path.startswith("/v1/"):
        path = "/v1" + path  # routers included under the /v1 prefix report their own paths
    return str(path)


async def _when_ready(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    runtime: Runtime = request.app.state.runtime
    if not runtime.ready:
        return error_response(runtime.unavailable())
    return await call_next(request)
