"""``sonovec serve``: REST (uvicorn) and gRPC in one event loop over one core service.

SIGTERM/SIGINT: both servers stop accepting, in-flight requests finish, the batch queue drains,
then the process exits.
"""

from __future__ import annotations

import logging

import uvicorn
from prometheus_client import start_http_server

from sonovec.server.http.app import create_app
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

DRAIN_GRACE_S = 30.0


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=app.state.metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    grpc_server = None
    if settings.grpc_port:
        from sonovec.server.grpc.server import GrpcServer

        grpc_server = GrpcServer(settings, lambda: app.state.service)
        await grpc_server.start()
        app.state.before_close.append(lambda: grpc_server.stop(DRAIN_GRACE_S))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(DRAIN_GRACE_S),
        access_log=False,
    )
    log.info("REST on http://%s:%d (docs at /docs)", settings.host, settings.port)
    await uvicorn.Server(config).serve()
