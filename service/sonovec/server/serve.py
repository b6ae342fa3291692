"""``sonovec serve``: REST (uvicorn) and gRPC in one event loop over one runtime.

Start: both servers listen at once (live; /v1 answers 503 and gRPC health NOT_SERVING while the
runtime loads), then the runtime loads and warms the models and opens the collections (ready).
A load that fails ends the process with exit 1, so an orchestrator sees it.
SIGTERM/SIGINT: both servers stop accepting at the same moment, in-flight requests finish, the
runtime drains (queued windows finish, collections snapshot), then the process exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import uvicorn
from prometheus_client import start_http_server

from sonovec.server.http.app import create_app
from sonovec.server.runtime import Runtime, State
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

DRAIN_GRACE_S = 30.0


async def serve(settings: Settings) -> None:
    runtime = Runtime(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host, registry=runtime.metrics.registry)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
    loop = asyncio.get_running_loop()
    stop_grpc = await _start_grpc(runtime)
    config = uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(DRAIN_GRACE_S),
        access_log=False,
    )
    log.info("REST on http://%s:%d (docs at /docs)", settings.host, settings.port)
    server = _Server(config, on_signal=lambda: loop.call_soon_threadsafe(stop_grpc))
    loading = asyncio.create_task(runtime.start(), name="runtime-start")
    loading.add_done_callback(lambda task: _exit_if_failed(task, server))
    try:
        await server.serve()
    finally:
        await stop_grpc()
        await runtime.drain()
    if runtime.state is State.FAILED:
        raise SystemExit(f"sonovec serve: could not load the models: {runtime.error}")


async def _start_grpc(runtime: Runtime) -> Callable[[], asyncio.Future[None]]:
    """Start gRPC (when configured); returns its stop, which is idempotent and awaitable."""
    stopping: list[asyncio.Future[None]] = []
    if not runtime.settings.grpc_port:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return lambda: done
    from sonovec.server.grpc.server import GrpcServer

    grpc_server = GrpcServer(runtime)
    await grpc_server.start()

    def stop() -> asyncio.Future[None]:
        if not stopping:
            stopping.append(asyncio.ensure_future(grpc_server.stop(DRAIN_GRACE_S)))
        return stopping[0]

    return stop


def _exit_if_failed(task: asyncio.Task[None], server: uvicorn.Server) -> None:
    if not task.cancelled() and task.exception() is not None:
        server.should_exit = True  # the runtime logged why; serve() exits 1 after shutting down


class _Server(uvicorn.Server):
    """uvicorn, calling ``on_signal`` the moment SIGTERM/SIGINT arrives (so gRPC stops alongside HTTP)."""

    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], object]) -> None:
        super().__init__(config)
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: object) -> None:
        self._on_signal()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]
