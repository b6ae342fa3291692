"""Same bad input, same error: kind, field and allowed as the core raises them, and each
transport's status for that kind (errors.HTTP_STATUS, errors.GRPC_CODE)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from audiofiles import encode, tone

from sonovec.client import AudioData, Client, SonovecClientError
from sonovec.server.core import AudioSource, EmbedOptions, Service
from sonovec.server.errors import GRPC_CODE, HTTP_STATUS, ErrorKind

from .conftest import API_KEY, MAX_REQUEST_BYTES, Reference, clip, url_of

pytestmark = pytest.mark.contract

GOOD = clip(1.0, 16_000, 1, seed=40)
TOO_LONG = encode(tone(21.0, 8_000, 1), 8_000, "wav")  # the server takes 20 s at most
CORRUPT = b"RIFF\x00\x00\x00\x00WAVEfmt junk"
SILENT = encode(np.zeros((1, 16_000), np.float32), 16_000, "wav")
OVER_BYTES = b"\x00" * (MAX_REQUEST_BYTES + 4)  # over the audio limit, under the message limit


def _embed(data: bytes, **options: Any) -> Callable[[Service], Any]:
    return lambda s: s.embed(AudioSource(data=data), EmbedOptions(**options))


# (what, client call, the same request made to the core)
CASES = [
    ("corrupt audio", lambda c: c.embed(CORRUPT), _embed(CORRUPT)),
    (
        "not audio",
        lambda c: c.embed(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
        _embed(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
    ),
    ("empty", lambda c: c.embed(b""), _embed(b"")),
    ("silent", lambda c: c.embed(SILENT), _embed(SILENT)),
    ("too long", lambda c: c.embed(TOO_LONG), _embed(TOO_LONG)),
    ("too many bytes", lambda c: c.embed(OVER_BYTES), _embed(OVER_BYTES)),
    ("unknown model", lambda c: c.embed(GOOD, model="encodec_96khz"), _embed(GOOD, model="encodec_96khz")),
    ("unknown pooling", lambda c: c.embed(GOOD, pooling="max"), _embed(GOOD, pooling="max")),
    (
        "bad bandwidth",
        lambda c: c.encode(GOOD, bandwidth=5.0),
        lambda s: s.encode(AudioSource(data=GOOD), model=None, bandwidth=5.0),
    ),
    (
        "one recording to compare",
        lambda c: c.similarity([GOOD]),
        lambda s: s.similarity([AudioSource(data=GOOD)], EmbedOptions()),
    ),
    (
        "codes off the codebook",
        lambda c: c.decode([np.full((8, 10), 5000)]),
        lambda s: s.decode([np.full((8, 10), 5000)], None, model=None),
    ),
    (
        "self-similarity segments too short",
        lambda c: c.self_similarity(GOOD, segment_seconds=0.001),
        lambda s: s.self_similarity(AudioSource(data=GOOD), segment_seconds=0.001),
    ),
    (
        "nan samples",
        lambda c: c.embed(np.full((1, 800), np.nan, np.float32), sample_rate=8_000),
        lambda s: s.embed(
            AudioSource(data=np.full(800, np.nan, "<f4").tobytes(), pcm=_pcm(8_000, 1)), EmbedOptions()
        ),
    ),
]


def _pcm(rate: int, channels: int):  # type: ignore[no-untyped-def]
    from sonovec.server.audio import PcmFormat

    return PcmFormat("f32le", rate, channels)


@pytest.mark.parametrize("what, call, core_call", CASES, ids=[c[0] for c in CASES])
def test_same_error_as_the_core(client: Client, reference: Reference, what: str, call, core_call) -> None:  # type: ignore[no-untyped-def]
    want = reference.error(core_call)
    with pytest.raises(SonovecClientError) as raised:
        call(client)
    got = raised.value
    assert (got.kind, got.field) == (want.kind.value, want.field)
    if client.transport == "http" and got.allowed != want.allowed:
        # REST's request schema (pydantic Literal) may answer before the core, pointing at the schema.
        assert got.allowed is not None and "schema" in got.allowed
    else:
        assert (got.allowed, got.message) == (want.allowed, want.message)
    expected_status = HTTP_STATUS[want.kind] if client.transport == "http" else GRPC_CODE[want.kind]
    assert got.status == expected_status
    assert not got.retryable


def test_raw_pcm_without_its_format(client: Client) -> None:
    with pytest.raises(SonovecClientError) as raised:
        client.embed(AudioData(b"\x00" * 16, "pcm_f32le"))
    assert (raised.value.kind, raised.value.field) == ("invalid_argument", "audio")


def test_a_message_over_the_transport_limit(make_client) -> None:  # type: ignore[no-untyped-def]
    """Beyond the audio limit and the message limit (limit + 1 MiB): REST refuses the body
    (413), gRPC the message (RESOURCE_EXHAUSTED); both are payload_too_large, and not retried."""
    client = make_client(stream_bytes=1 << 30, retries=3)  # force one unary message
    with pytest.raises(SonovecClientError) as raised:
        client.embed(b"\x00" * (MAX_REQUEST_BYTES + (2 << 20)))
    assert raised.value.kind == "payload_too_large"
    assert raised.value.status == (413 if client.transport == "http" else "RESOURCE_EXHAUSTED")


def test_streamed_audio_over_the_limit_is_refused(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(stream_bytes=1 << 20, chunk_bytes=256 << 10)
    with pytest.raises(SonovecClientError) as raised:
        client.embed(OVER_BYTES)
    assert (raised.value.kind, raised.value.field) == ("payload_too_large", "audio")


def test_the_client_refuses_what_the_server_would(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    client.models()  # learns the limits
    with pytest.raises(SonovecClientError) as raised:
        client.embed(OVER_BYTES)
    assert raised.value.kind == "payload_too_large" and raised.value.status is None


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_api_key_required(server, transport: str, key: str | None) -> None:  # type: ignore[no-untyped-def]
    with Client(url_of(server, transport), api_key=key, retries=0) as client:
        with pytest.raises(SonovecClientError) as raised:
            client.embed(GOOD)
        assert raised.value.kind == ErrorKind.UNAUTHENTICATED.value
        assert raised.value.status == (401 if transport == "http" else "UNAUTHENTICATED")


def test_api_key_as_x_api_key(server, transport: str) -> None:  # type: ignore[no-untyped-def]
    import grpc
    import httpx

    from sonovec.v1 import sonovec_pb2, sonovec_pb2_grpc

    if transport == "http":
        response = httpx.get(f"{server.url}/v1/models", headers={"x-api-key": API_KEY})
        assert response.status_code == 200
        return
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = sonovec_pb2_grpc.SonovecStub(channel)
        reply = stub.Models(sonovec_pb2.ModelsRequest(), metadata=(("x-api-key", API_KEY),), timeout=10)
        assert reply.default_model == "encodec_48khz"
