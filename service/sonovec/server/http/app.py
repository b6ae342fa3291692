"""The FastAPI application: routers over the one core service, errors mapped at this edge."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sonovec.server.core import Service
from sonovec.server.errors import HTTP_STATUS, ErrorKind, SonovecError
from sonovec.server.http.deps import require_api_key
from sonovec.server.http.disconnect import CancelOnDisconnect
from sonovec.server.http.routers import classify, codec, collections, embed, health, models, similarity
from sonovec.server.metrics import Metrics
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

# Base64 in JSON makes a body up to 4/3 the size of the audio it carries.
_BODY_OVERHEAD = 4 / 3


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """Build the REST app. Without ``service``, the lifespan loads the models in the background
    (live at once, ready when loaded and warm) and drains the queue on shutdown."""
    metrics = service.metrics if service is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = None
        if app.state.service is None:
            loader = asyncio.create_task(_load(app, settings, metrics))
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                loader.cancel()
            for hook in app.state.before_close:  # e.g. the gRPC server's graceful stop
                await hook()
            if app.state.service is not None and app.state.owns_service:
                await app.state.service.aclose()

    app = FastAPI(
        title="sonovec",
        version="0.1.0",
        summary="Batched EnCodec embeddings, codes, similarity and classification.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.service = service
    app.state.owns_service = service is None
    app.state.load_error = None
    app.state.before_close = []
    app.state.on_fatal = None

    auth = [Depends(require_api_key)]
    routers = (embed, codec, similarity, models, collections, classify)
    for router in (r.router for r in routers):
        app.include_router(router, prefix="/v1", dependencies=auth)
    app.include_router(health.router)
    _install_error_handlers(app)
    _install_middleware(app, settings, metrics)
    app.add_middleware(CancelOnDisconnect)
    return app


async def _load(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    try:
        service = await asyncio.to_thread(Service.from_settings, settings, metrics=metrics)
        await asyncio.to_thread(service.start)
        await service.collections.open()  # snapshots + logs replayed, or Redis followed, before ready
    except Exception as exc:
        log.exception("loading models failed")
        app.state.load_error = str(exc)
        if app.state.on_fatal is not None:  # `sonovec serve`: exit, so the orchestrator sees it
            app.state.on_fatal()
        raise
    app.state.service = service


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
    service: Service | None = request.app.state.service
    if service is None or not service.ready:
        reason = request.app.state.load_error or ("draining" if service is not None else "models are loading")
        return error_response(SonovecError(ErrorKind.UNAVAILABLE, f"not ready: {reason}", retry_after=5.0))
    return await call_next(request)
