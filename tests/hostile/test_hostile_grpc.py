"""The same hostile inputs over gRPC: the core's rules give the same refusals, with
``sonovec-error-kind`` trailing metadata; nothing answers INTERNAL or UNKNOWN."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2

from hostile.bombs import constant
from hostile.conftest import MAX_AUDIO_SECONDS, MAX_REQUEST_BYTES, Live, PeakProbe
from sonovec.v1 import collections_pb2 as cpb
from sonovec.v1 import common_pb2 as pb
from sonovec.v1 import sonovec_pb2 as spb
from sonovec.v1 import sonovec_pb2_grpc as spb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stub(live: Live) -> Iterator[spb_grpc.SonovecStub]:
    options = [("grpc.max_send_message_length", 64 << 20)]
    with grpc.insecure_channel(live.grpc, options=options) as channel:
        yield spb_grpc.SonovecStub(channel)


def refusal(call: object, request: object) -> tuple[grpc.StatusCode, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)  # type: ignore[operator]
    error = caught.value
    metadata = {k: v for k, v in (error.trailing_metadata() or ())}  # type: ignore[attr-defined]
    return error.code(), metadata  # type: ignore[attr-defined]


def pcm(value: float, frames: int = 48_000) -> pb.Audio:
    data = np.full((frames, 2), value, "<f4").tobytes()
    return pb.Audio(data=data, encoding="pcm_f32le", sample_rate=48_000, channels=2)


@pytest.mark.parametrize("value", [3e38, 1e30, float("nan"), float("inf")])
def test_huge_and_non_finite_samples_are_invalid(stub: spb_grpc.SonovecStub, value: float) -> None:
    code, metadata = refusal(stub.Embed, spb.EmbedRequest(audio=pcm(value)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert metadata["sonovec-error-kind"] == "invalid_argument"
    assert metadata.get("sonovec-error-field") in (None, "audio")


def test_a_recording_over_the_limit_is_refused_while_decoding(
    stub: spb_grpc.SonovecStub, peak: PeakProbe
) -> None:
    data = constant(MAX_AUDIO_SECONDS + 10, 48_000, 2, "flac")
    code, metadata = refusal(stub.Embed, spb.EmbedRequest(audio=pb.Audio(data=data)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert metadata["sonovec-error-kind"] == "payload_too_large"
    peak.assert_below(32 * 2**20)


def test_an_upload_over_the_size_limit_is_refused(stub: spb_grpc.SonovecStub, peak: PeakProbe) -> None:
    """Over the message limit gRPC itself refuses (RESOURCE_EXHAUSTED, before any handler runs);
    between the audio limit and the message limit the core does (payload_too_large)."""
    code, _ = refusal(
        stub.Embed, spb.EmbedRequest(audio=pb.Audio(data=b"\0" * (MAX_REQUEST_BYTES + (2 << 20))))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, metadata = refusal(
        stub.Embed, spb.EmbedRequest(audio=pb.Audio(data=b"\0" * (MAX_REQUEST_BYTES + 1)))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert metadata["sonovec-error-kind"] == "payload_too_large"
    peak.assert_below(32 * 2**20)


@pytest.fixture(scope="module")
def collection(stub: spb_grpc.SonovecStub) -> str:
    name = f"g-{uuid.uuid4().hex[:8]}"
    stub.CreateCollection(cpb.CreateCollectionRequest(name=name), timeout=30)
    return name


def item(**fields: object) -> cpb.ItemIn:
    vector = cpb.Vector(values=[((i * 13) % 7) / 7 - 0.3 for i in range(128)])
    return cpb.ItemIn(vector=vector, **fields)  # type: ignore[arg-type]


def deep_struct(depth: int) -> struct_pb2.Struct:
    inner = struct_pb2.Struct()
    inner["leaf"] = 1
    for _ in range(depth):
        outer = struct_pb2.Struct()
        outer["a"] = inner
        inner = outer
    return inner


@pytest.mark.parametrize(
    ("field", "fields"),
    [
        ("items[0].id", {"id": "line\nbreak"}),
        ("items[0].id", {"id": "../../x"}),
        ("items[0].id", {"id": ""}),
        ("items[0].labels[0]", {"id": "l", "labels": ["a\tb"]}),
        ("items[0].metadata", {"id": "m", "metadata": deep_struct(17)}),
    ],
)
def test_unservable_items_are_invalid(
    stub: spb_grpc.SonovecStub, collection: str, field: str, fields: dict
) -> None:
    request = cpb.AddItemsRequest(collection=collection, items=[item(**fields)])
    code, metadata = refusal(stub.AddItems, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, metadata
    assert metadata["sonovec-error-kind"] == "invalid_argument"
    assert metadata.get("sonovec-error-field") == field


@pytest.mark.parametrize("name", ["abc\n", "../x", "a" * 65])
def test_bad_collection_names_are_invalid(stub: spb_grpc.SonovecStub, name: str) -> None:
    code, metadata = refusal(stub.CreateCollection, cpb.CreateCollectionRequest(name=name))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert metadata.get("sonovec-error-field") == "name"
