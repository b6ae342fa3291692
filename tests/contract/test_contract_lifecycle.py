"""Health (NOT_SERVING while loading and draining, SERVING when ready), deadlines, graceful
shutdown on SIGTERM, and the gRPC probe script against a running server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import ServerProcess

from sonovec.client import AsyncClient, Client, SonovecClientError
from sonovec.server.grpc.server import GrpcServer
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

from .conftest import API_KEY, TRANSPORTS, clip, url_of

pytestmark = pytest.mark.contract

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROBE = Path(__file__).resolve().parents[2] / "scripts" / "grpc_probe.py"
SLOW_WAIT_MS = 1000  # every batch waits this long for company: calls take about a second


async def _status(stub: health_pb2_grpc.HealthStub, service: str = "") -> int:
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status


async def test_health_follows_loading_and_draining(tmp_path: Path) -> None:
    settings = Settings(backend="fake", weights="random", grpc_port=0, data_dir=tmp_path, max_wait_ms=600)
    runtime = Runtime(settings)
    server = GrpcServer(runtime)
    await server.start()
    target = f"127.0.0.1:{server.port}"
    try:
        async with (
            grpc.aio.insecure_channel(target) as channel,
            AsyncClient(f"grpc://{target}", retries=0) as client,
        ):
            stub = health_pb2_grpc.HealthStub(channel)
            assert (
                await _status(stub) == NOT_SERVING
                and await _status(stub, "sonovec.v1.Sonovec") == NOT_SERVING
            )
            with pytest.raises(SonovecClientError) as raised:  # models still loading
                await client.models()
            assert (raised.value.kind, raised.value.status, raised.value.retry_after) == (
                "unavailable",
                "UNAVAILABLE",
                5.0,
            )

            await runtime.start()
            for _ in range(50):
                if await _status(stub) == SERVING:
                    break
                await asyncio.sleep(0.1)
            assert await _status(stub, "sonovec.v1.Sonovec") == SERVING

            watch = stub.Watch(health_pb2.HealthCheckRequest(service="sonovec.v1.Sonovec"))
            assert (await watch.read()).status == SERVING
            in_flight = asyncio.ensure_future(client.embed(clip(1.0, 16_000, 1, seed=50)))
            await asyncio.sleep(0.2)  # the call now waits in the batcher
            stopping = asyncio.ensure_future(server.stop(10.0))
            assert (await watch.read()).status == NOT_SERVING  # draining
            watch.cancel()
            assert (await in_flight).vector.shape == (128,)  # the call in flight finished
            await stopping
            with pytest.raises(SonovecClientError) as raised:  # and new calls are refused
                await client.models()
            assert raised.value.kind == "unavailable"
    finally:
        await server.stop(0)
        await runtime.drain()


def test_probe_prints_health_and_services(server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, str(PROBE), f"127.0.0.1:{server.grpc_port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("(server): SERVING") and lines[1] == "health sonovec.v1.Sonovec: SERVING"
    assert "reflection: 4 services" in lines
    listed = {line.split(":")[0].strip(): line for line in lines if line.startswith("  ")}
    assert set(listed) == {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "sonovec.v1.Sonovec",
        "inference.GRPCInferenceService",  # the Open Inference Protocol
    }
    assert "Embed, EmbedStream, EmbedMany, Encode, Decode" in listed["sonovec.v1.Sonovec"]
    refused = subprocess.run(
        [sys.executable, str(PROBE), "127.0.0.1:1", "--no-list", "--timeout", "1"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "unreachable" in refused.stdout


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("slow"), grpc=True, max_wait_ms=SLOW_WAIT_MS)
    # Not polled through REST first: the probe waits for gRPC health to say SERVING.
    with open(process.log, "ab") as log:
        process.proc = subprocess.Popen(
            [sys.executable, "-m", "sonovec.server.cli", "serve"], env=process.env, stdout=log, stderr=log
        )
    waited = subprocess.run(
        [sys.executable, str(PROBE), f"127.0.0.1:{process.grpc_port}", "--wait", "120", "--no-list"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert waited.returncode == 0, waited.stdout + process.log.read_text()[-2000:]
    process.wait_ready(30)
    yield process
    process.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deadline_exceeded(slow_server: ServerProcess, transport: str) -> None:
    with Client(url_of(slow_server, transport), retries=0) as client:
        with pytest.raises(SonovecClientError) as raised:
            client.embed(clip(1.0, 16_000, 1, seed=60), timeout=0.3)
        assert raised.value.kind == "deadline_exceeded"
        assert raised.value.status == (504 if transport == "http" else "DEADLINE_EXCEEDED")
        assert client.embed(clip(1.0, 16_000, 1, seed=61), timeout=30).vector.shape == (128,)  # serves on


def test_sigterm_finishes_calls_in_flight(slow_server: ServerProcess) -> None:
    results: dict[str, Any] = {}

    def call(transport: str, seed: int) -> None:
        with Client(url_of(slow_server, transport), retries=0, timeout=30) as client:
            try:
                results[transport] = client.embed(clip(1.0, 16_000, 1, seed=seed))
            except SonovecClientError as exc:
                results[transport] = exc

    threads = [threading.Thread(target=call, args=(t, 70 + i)) for i, t in enumerate(TRANSPORTS)]
    for thread in threads:
        thread.start()
    assert slow_server.proc is not None
    threading.Event().wait(0.4)  # both calls are now waiting in the batcher
    slow_server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(30)
    # uvicorn re-raises the captured SIGTERM once everything has drained: the exit status is the signal's.
    assert slow_server.proc.wait(30) in (0, -signal.SIGTERM)
    for transport in TRANSPORTS:
        assert not isinstance(results[transport], SonovecClientError), results[transport]
        assert results[transport].vector.shape == (128,)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{slow_server.url}/v1/health/live", timeout=2)


def test_api_key_is_not_needed_for_health(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v1/health/ready").status_code == 200
    done = subprocess.run(
        [sys.executable, str(PROBE), f"127.0.0.1:{server.grpc_port}", "--no-list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert API_KEY  # the server has keys; health and reflection answer without one
