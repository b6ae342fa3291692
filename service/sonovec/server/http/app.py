"""The FastAPI application: routers over the one core service, errors mapped at this edge."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sonovec.server.errors import HTTP_STATUS, ErrorKind, SonovecError
from sonovec.server.http.deps import require_api_key
from sonovec.server.http.disconnect import CancelOnDisconnect
from sonovec.server.http.routers import classify, codec, collections, embed, health, lab, models, similarity
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
    routers = (embed, codec, similarity, models, collections, classify, lab)
    for router in (r.router for r in routers):
        app.include_router(router, prefix="/v1", dependencies=auth)
    app.include_router(health.router)
    _install_error_handlers(app)
    _install_middleware(app, settings, runtime.metrics)
    app.add_middleware(CancelOnDisconnect)
    return app


def error_response(error: SonovecError) -> JSONResponse:
    headers = {}
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

    @app.exception_handler(Exception)
    async def on_bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(SonovecError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}"))


def _install_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    max_body = int(settings.max_request_bytes * _BODY_OVERHEAD) + 64 * 1024

    @app.middleware("http")
    async def guard_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            response: Response = error_response(
                SonovecError(
                    ErrorKind.TOO_LARGE,
                    f"body of {int(length)} bytes",
                    field="body",
                    allowed=f"at most {settings.max_request_bytes} bytes of audio ({max_body} bytes of body)",
                )
            )
        elif request.url.path.startswith("/v1/") and not request.url.path.startswith("/v1/health"):
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
