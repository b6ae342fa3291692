"""``sonovec serve``: REST (uvicorn) and gRPC in one event loop over one core service.

SIGTERM/SIGINT: both servers stop accepting, in-flight requests finish, the batch queue drains,
then the process exits.
"""

from __future__ import annotations

import asyncio
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
    grpc_stop: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    if settings.grpc_port:
        from sonovec.server.grpc.server import GrpcServer

        grpc_server = GrpcServer(settings, lambda: app.state.service)
        await grpc_server.start()

        def stop_grpc() -> None:  # both transports stop accepting at the same moment
            if not grpc_stop:
                grpc_stop.append(loop.create_task(grpc_server.stop(DRAIN_GRACE_S)))

        async def grpc_stopped() -> None:
            stop_grpc()
            await grpc_stop[0]

        app.state.on_signal = lambda: loop.call_soon_threadsafe(stop_grpc)
        app.state.before_close.append(grpc_stopped)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(DRAIN_GRACE_S),
        access_log=False,
    )
    log.info("REST on http://%s:%d (docs at /docs)", settings.host, settings.port)
    server = _Server(config, app)

    def give_up() -> None:
        server.should_exit = True

    app.state.on_fatal = give_up
    await server.serve()
    if app.state.load_error is not None:
        raise SystemExit(f"sonovec serve: could not load the models: {app.state.load_error}")


class _Server(uvicorn.Server):
    """uvicorn, telling the app the moment SIGTERM/SIGINT arrives (so gRPC drains alongside HTTP)."""

    def __init__(self, config: uvicorn.Config, app: object) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: object) -> None:
        on_signal = getattr(self._app.state, "on_signal", None)  # type: ignore[attr-defined]
        if on_signal is not None:
            on_signal()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
