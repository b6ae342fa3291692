"""One live server (``sonovec serve``: REST and gRPC on loopback, fake backend) and the same
settings run in process as the reference: each transport must give what the core gives."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from audiofiles import encode, tone
from servers import ServerProcess

from sonovec.client import AsyncClient, Client
from sonovec.server.core import Service
from sonovec.server.errors import SonovecError
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

T = TypeVar("T")

API_KEY = "contract-key"
TRANSPORTS = ("http", "grpc")
# Small limits, so that tests can pass them cheaply. The gRPC server receives at most
# MAX_REQUEST_BYTES + 1 MiB per message.
MAX_REQUEST_BYTES = 2 << 20
LIMITS: dict[str, Any] = {
    "max_request_bytes": MAX_REQUEST_BYTES,
    "max_audio_seconds": 20.0,
    "max_recordings": 8,
}


def clip(seconds: float = 2.0, sample_rate: int = 44_100, channels: int = 2, *, seed: int = 0) -> bytes:
    """A WAV file of a chord plus a little noise; ``seed`` makes it unique (no cache hits)."""
    return encode(tone(seconds, sample_rate, channels, seed=seed), sample_rate, "wav")


class Reference:
    """The core service in process, with the live server's settings: what every transport must match."""

    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.runtime = Runtime(
            Settings(backend="fake", weights="random", grpc_port=0, data_dir=tmp / "data", **settings)
        ).start_sync()
        self.service = self.runtime.service

    def run(self, call: Callable[[Service], Awaitable[T]]) -> T:
        return asyncio.run(call(self.service))

    def error(self, call: Callable[[Service], Awaitable[Any]]) -> SonovecError:
        try:
            self.run(call)
        except SonovecError as exc:
            return exc
        raise AssertionError("the core accepted what should fail")

    def close(self) -> None:
        self.runtime.stop(timeout=10)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("contract")
    process = ServerProcess(tmp, grpc=True, api_keys=API_KEY, max_wait_ms=2, **LIMITS).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    ref = Reference(tmp_path_factory.mktemp("reference"), **LIMITS)
    yield ref
    ref.close()


def url_of(server: ServerProcess, transport: str) -> str:
    return server.url if transport == "http" else f"grpc://127.0.0.1:{server.grpc_port}"


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(server: ServerProcess, transport: str) -> Iterator[Client]:
    with Client(url_of(server, transport), api_key=API_KEY, retries=0, timeout=30.0) as c:
        yield c


@pytest.fixture
def make_client(server: ServerProcess, transport: str) -> Callable[..., Client]:
    """Clients with other options (closed at the end of the test)."""
    made: list[Client] = []

    def make(**options: Any) -> Client:
        options = {"api_key": API_KEY, "retries": 0, "timeout": 30.0, **options}
        made.append(Client(url_of(server, transport), **options))
        return made[-1]

    yield make  # type: ignore[misc]
    for c in made:
        c.close()


@pytest.fixture
def async_client_factory(server: ServerProcess, transport: str) -> Callable[..., AsyncClient]:
    def make(**options: Any) -> AsyncClient:
        return AsyncClient(url_of(server, transport), **{"api_key": API_KEY, "retries": 0, **options})

    return make


def assert_same_array(got: np.ndarray, want: np.ndarray) -> None:
    """Bit-identical: both transports carry float32 exactly (JSON floats round-trip them)."""
    assert got.shape == want.shape
    assert got.dtype == want.dtype or got.dtype.kind == want.dtype.kind
    np.testing.assert_array_equal(got, want)
