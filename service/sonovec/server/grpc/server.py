"""``GrpcServer``: the grpc.aio server beside REST, over the same core service.

It serves ``sonovec.v1.Sonovec``, the Open Inference Protocol (``inference.GRPCInferenceService``,
``grpc/inference.py``), standard health checking (``grpc.health.v1``: follows the
runtime's state, SERVING when ready, NOT_SERVING while loading and draining) and server
reflection. Message size limits come from the settings and are reported by ``Info``.
``stop(grace)`` turns health NOT_SERVING, stops accepting calls, and lets calls in flight finish
within ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sonovec.inference import grpc_service_pb2_grpc as ipb_grpc
from sonovec.models.registry import MODEL_SPECS
from sonovec.server.grpc import inference
from sonovec.server.grpc.servicer import SERVICE_NAME, SonovecServicer
from sonovec.server.runtime import Runtime, State
from sonovec.server.settings import Settings
from sonovec.v1 import sonovec_pb2 as spb
from sonovec.v1 import sonovec_pb2_grpc as spb_grpc

log = logging.getLogger(__name__)

GRPC_MAX_MESSAGE = 2**31 - 1  # gRPC's own ceiling (int32)
HEADROOM_BYTES = 1 << 20  # message fields around the audio
MAX_CHUNK_BYTES = 4 << 20  # EmbedStream chunks we ask clients to stay under


def message_limits(settings: Settings) -> spb.GrpcLimits:
    """Receive: the largest upload plus headroom. Send: enough for the longest decode (float WAV
    at the largest configured model's rate and channels), at least the receive limit."""
    receive = min(GRPC_MAX_MESSAGE, settings.max_request_bytes + HEADROOM_BYTES)
    largest_wav = max(
        int(settings.max_audio_seconds * MODEL_SPECS[m].sample_rate) * MODEL_SPECS[m].channels * 4
        for m in settings.models
    )
    send = min(GRPC_MAX_MESSAGE, max(receive, largest_wav + HEADROOM_BYTES))
    return spb.GrpcLimits(
        max_receive_message_bytes=receive,
        max_send_message_bytes=send,
        max_chunk_bytes=min(MAX_CHUNK_BYTES, receive - HEADROOM_BYTES // 2),
    )


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


class GrpcServer:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.limits = message_limits(self.settings)
        self.port: int | None = None  # bound port, once started (settings.grpc_port may be 0: any free port)
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._stopping = False
        self._health_updates: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.limits.max_receive_message_bytes),
                ("grpc.max_send_message_length", self.limits.max_send_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on a taken port fails instead of sharing it
            ]
        )
        spb_grpc.add_SonovecServicer_to_server(SonovecServicer(self.runtime, self.limits), server)
        ipb_grpc.add_GRPCInferenceServiceServicer_to_server(inference.InferenceServicer(self.runtime), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (SERVICE_NAME, inference.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
        address = _address(self.settings.host, self.settings.grpc_port)
        self.port = server.add_insecure_port(address)
        await self._set_health(serving=self.runtime.ready)
        loop = asyncio.get_running_loop()

        def follow(state: State) -> None:  # from any thread: on the server's loop
            loop.call_soon_threadsafe(self._follow, state)

        self.runtime.on_change(follow)
        await server.start()
        self._server = server
        log.info("gRPC on %s (health, reflection)", _address(self.settings.host, self.port))

    async def stop(self, grace_s: float) -> None:
        """NOT_SERVING, refuse new calls, let calls in flight finish (at most ``grace_s``)."""
        if self._stopping or self._server is None:
            return
        self._stopping = True
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
        log.info("gRPC stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # ---- health ----

    def _follow(self, state: State) -> None:
        """The runtime's state changed: SERVING once ready, NOT_SERVING otherwise (on the loop)."""
        if self._stopping:
            return
        task = asyncio.create_task(self._set_health(serving=state is State.READY))
        self._health_updates.add(task)  # a reference until done, in order
        task.add_done_callback(self._health_updates.discard)

    async def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):  # "" is the whole server
            await self._health.set(name, status)
