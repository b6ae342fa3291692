"""64 concurrent calls against a deliberately tiny queue: without retries some get a clean
429 / RESOURCE_EXHAUSTED with Retry-After (and nothing else goes wrong); with the client's
retries every call succeeds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from servers import ServerProcess

from sonovec.client import AsyncClient, Client, Embedding, SonovecClientError

from .conftest import TRANSPORTS, clip, url_of

pytestmark = pytest.mark.contract

CALLS = 64
# Room for four 1 s recordings, each waiting up to 50 ms for a batch: most of 64 concurrent
# calls find the queue full. Each call uses its own recording (no cache hits skip the queue).
TINY_QUEUE = {"max_queue_seconds": 4.0, "max_wait_ms": 50, "max_batch_seconds": 16}


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("busy"), grpc=True, **TINY_QUEUE).start()
    yield process
    process.stop()


def _recordings(first_seed: int) -> list[bytes]:
    return [clip(1.0, 16_000, 1, seed=first_seed + i) for i in range(CALLS)]


async def _concurrently(
    url: str, recordings: list[bytes], retries: int
) -> list[Embedding | SonovecClientError]:
    async with AsyncClient(url, retries=retries, timeout=60) as client:

        async def one(audio: bytes) -> Embedding | SonovecClientError:
            try:
                return await client.embed(audio)
            except SonovecClientError as exc:
                return exc

        return await asyncio.gather(*(one(r) for r in recordings))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_without_retries_overload_is_a_clean_429(busy_server: ServerProcess, transport: str) -> None:
    seed = 1000 if transport == "http" else 2000
    results = asyncio.run(_concurrently(url_of(busy_server, transport), _recordings(seed), retries=0))
    refused = [r for r in results if isinstance(r, SonovecClientError)]
    assert refused, "a queue of 4 audio seconds should not take 64 concurrent seconds"
    assert len(refused) < CALLS
    for error in refused:
        assert error.kind == "overloaded" and error.retryable, error
        assert error.status == (429 if transport == "http" else "RESOURCE_EXHAUSTED")
        assert error.retry_after is not None and error.retry_after >= 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_with_retries_every_call_succeeds(busy_server: ServerProcess, transport: str) -> None:
    seed = 3000 if transport == "http" else 4000
    results = asyncio.run(_concurrently(url_of(busy_server, transport), _recordings(seed), retries=30))
    assert all(isinstance(r, Embedding) for r in results), [
        r for r in results if not isinstance(r, Embedding)
    ][:3]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_embed_many_rides_out_overload(busy_server: ServerProcess, transport: str) -> None:
    # Sync client, bounded concurrency above what the queue holds, retries honouring Retry-After.
    with Client(url_of(busy_server, transport)) as client:
        seed = 5000 if transport == "http" else 6000
        results = client.embed_many(_recordings(seed)[:24], concurrency=16, retries=30, progress=False)
    assert len(results) == 24 and all(isinstance(r, Embedding) for r in results)
