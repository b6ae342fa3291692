"""gRPC request bodies count in the process's memory budget, as REST bodies do; and an accepted
request's caveats (``warnings``) reach gRPC callers too."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from audiofiles import encode, tone

from sonovec.server.grpc.server import GrpcServer
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings
from sonovec.v1 import common_pb2 as pb
from sonovec.v1 import sonovec_pb2 as spb
from sonovec.v1 import sonovec_pb2_grpc as spb_grpc

pytestmark = pytest.mark.contract

MiB = 2**20


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, spb_grpc.SonovecStub]]:
    settings = Settings(backend="fake", weights="random", grpc_port=0, data_dir=tmp_path,
                        models=["encodec_48khz"], cache_entries=0, max_request_bytes=4 * MiB)
    runtime = Runtime(settings).start_sync()
    server = GrpcServer(runtime)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield runtime, spb_grpc.SonovecStub(channel)
    finally:
        await server.stop(1)
        runtime.stop(timeout=10)


def high_rate_wav(nbytes: int) -> bytes:
    """A 384 kHz, 8-channel WAV of about ``nbytes``: a big body whose audio, resampled to 48 kHz
    stereo, is small (a fifth of a second), so a refusal can only come from the body itself."""
    frames = nbytes // (8 * 2)
    samples = (0.1 * np.sin(np.arange(frames) / 7.0))[:, None].repeat(8, 1)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 384_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def test_a_grpc_body_holds_its_size_of_the_memory_budget(
    served: tuple[Runtime, spb_grpc.SonovecStub],
) -> None:
    runtime, stub = served
    request = spb.EmbedRequest(audio=pb.Audio(data=high_rate_wav(3 * MiB)))
    budget = runtime.service.memory
    # everything but 1 MiB of the budget held by others: the 3 MiB body does not fit
    with budget.holding("others", budget.max_bytes - MiB):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Embed(request, timeout=30)
        error = raised.value
        metadata = dict(error.trailing_metadata() or ())
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert metadata["sonovec-error-kind"] == "overloaded"
        assert float(metadata["retry-after"]) >= 1
        assert "memory budget" in (error.details() or "")
    # with the budget free again the same request is served, and returns what it held
    reply = await stub.Embed(request, timeout=30)
    assert reply.dim > 0
    assert budget.held == 0


async def test_grpc_embed_replies_carry_warnings(served: tuple[Runtime, spb_grpc.SonovecStub]) -> None:
    _, stub = served
    data = encode(tone(4.0, 48_000, 2, seed=3), 48_000, "wav")
    cut = await stub.Embed(spb.EmbedRequest(audio=pb.Audio(data=data[: len(data) // 2])), timeout=30)
    assert cut.warnings and "truncated" in cut.warnings[0], list(cut.warnings)
    whole = await stub.Embed(spb.EmbedRequest(audio=pb.Audio(data=data)), timeout=30)
    assert list(whole.warnings) == []
