"""``sonovec serve`` as a real process on loopback: overload, memory, bad input, graceful drain."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from audiofiles import encode, tone
from servers import ServerProcess

pytestmark = pytest.mark.integration

CLIP = encode(tone(3.0, 44_100, 2), 44_100, "wav")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def flood(url: str, count: int, clip: bytes) -> list[tuple[int, float, dict[str, str]]]:
    async with httpx.AsyncClient(
        base_url=url, timeout=60.0, limits=httpx.Limits(max_connections=count)
    ) as client:

        async def one() -> tuple[int, float, dict[str, str]]:
            started = time.monotonic()
            response = await client.post("/v1/embed", files={"audio": ("a.wav", clip)})
            return response.status_code, time.monotonic() - started, dict(response.headers)

        return await asyncio.gather(*(one() for _ in range(count)))


async def test_overload_is_a_prompt_429_and_memory_stays_bounded(tmp_path: Path) -> None:
    # A slow model (0.05 s per audio second) and a queue of 12 audio seconds: 48 requests of 3 s overflow it.
    with ServerProcess(
        tmp_path, max_queue_seconds=12, fake_seconds_per_audio_second=0.05, cache_entries=0
    ) as server:
        before = rss_mb(server.proc.pid)
        results = await flood(server.url, 48, CLIP)
        codes = [code for code, _, _ in results]
        assert set(codes) <= {200, 429}, codes
        assert codes.count(429) >= 10 and codes.count(200) >= 4
        refused = [(seconds, headers) for code, seconds, headers in results if code == 429]
        assert all(int(headers["retry-after"]) >= 1 for _, headers in refused)
        assert max(seconds for seconds, _ in refused) < 5.0  # refused at admission, not after queueing
        for _ in range(3):
            await flood(server.url, 48, CLIP)
        assert rss_mb(server.proc.pid) - before < 300  # bounded queue: no growth with load
        async with httpx.AsyncClient(base_url=server.url) as client:
            metrics = (await client.get("/metrics")).text
            assert 'sonovec_requests_total{code="429",method="/v1/embed"}' in metrics.replace(
                'method="/v1/embed",code="429"', 'code="429",method="/v1/embed"'
            )
            assert (await client.post("/v1/embed", files={"audio": ("a.wav", CLIP)})).status_code == 200


async def test_bad_inputs_never_500_and_the_server_keeps_serving(tmp_path: Path) -> None:
    junk = [
        b"",
        b"RIFF",
        b"\x00" * 4096,
        b"fLaC\x00\x00\x00\x22" + b"\xff" * 64,
        b"OggS" + b"\x00" * 100,
        encode(tone(0.5, 8_000, 1) * 0, 8_000, "wav"),
    ]
    with ServerProcess(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
            for body in junk:
                for route in ("/v1/embed", "/v1/encode", "/v1/similarity/self"):
                    response = await client.post(route, files={"audio": ("x", body)})
                    assert 400 <= response.status_code < 500, (route, body[:8], response.text)
                    assert response.json()["error"]["message"]
            assert (await client.post("/v1/embed", files={"audio": ("a.wav", CLIP)})).status_code == 200


async def test_sigterm_finishes_in_flight_requests_then_exits(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, fake_seconds_per_audio_second=0.1, max_batch_seconds=2).start()
    long_clip = encode(tone(20.0, 48_000, 2), 48_000, "wav")  # about 2 s of model work
    async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as client:
        in_flight = asyncio.create_task(client.post("/v1/embed", files={"audio": ("a.wav", long_clip)}))
        await asyncio.sleep(0.8)
        server.proc.send_signal(signal.SIGTERM)
        response = await in_flight
    assert response.status_code == 200 and response.json()["num_windows"] == 21
    # uvicorn re-raises the captured SIGTERM once it has drained, so the exit status is the signal's.
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v1/health/live", timeout=2.0)


async def test_a_client_that_hangs_up_has_its_queued_windows_dropped(tmp_path: Path) -> None:
    # 60 windows of 1 s at 0.05 s each, one window per model call: about 3 s of model work.
    with ServerProcess(
        tmp_path, fake_seconds_per_audio_second=0.05, max_batch_seconds=1, cache_entries=0
    ) as server:
        clip = encode(tone(60.0, 48_000, 2), 48_000, "wav")
        async with httpx.AsyncClient(base_url=server.url, timeout=0.5) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/v1/embed", files={"audio": ("a.wav", clip)})
        await asyncio.sleep(3.5)
        async with httpx.AsyncClient(base_url=server.url) as client:
            metrics = (await client.get("/metrics")).text
            assert (await client.post("/v1/embed", files={"audio": ("a.wav", CLIP)})).status_code == 200
    processed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('sonovec_audio_processed_seconds_total{model="encodec_48khz",op="encode"}')
    )
    assert processed < 30, f"{processed} s of a hung-up 60 s request still ran"


def test_a_server_that_cannot_load_its_models_exits_instead_of_hanging(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, allow_random_weights="false", grpc_port=0)
    with pytest.raises(RuntimeError, match="refusing random-init weights"):
        server.start(timeout=60)
    assert server.proc.returncode == 1
