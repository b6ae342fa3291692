"""The Open Inference Protocol's wire details against a live server, with plain HTTP and the
generated ``sonovec.inference`` stubs (tritonclient itself: test_v2_protocol.py): encode/decode
round trips, batches, parameters, binary framing, limits, readiness, metrics."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from audiofiles import encode, tone
from servers import ServerProcess

from sonovec.client import Client
from sonovec.inference import grpc_service_pb2 as ipb
from sonovec.inference import grpc_service_pb2_grpc as ipb_grpc
from sonovec.server.http.app import create_app
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

from .conftest import API_KEY, MAX_REQUEST_BYTES, url_of

pytestmark = pytest.mark.contract

KEY = {"x-api-key": API_KEY}
EMBED = "encodec_48khz_embed"


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[ipb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        yield ipb_grpc.GRPCInferenceServiceStub(channel)


def infer_binary(server: ServerProcess, model: str, tensors: dict[str, np.ndarray], **params: object) -> dict:
    """POST with every input binary and every output asked binary; the outputs as arrays."""
    header = {
        "inputs": [
            {
                "name": n,
                "datatype": _v2type(a),
                "shape": list(a.shape),
                "parameters": {"binary_data_size": a.nbytes},
            }
            for n, a in tensors.items()
        ],
        "parameters": {"binary_data_output": True, **params},
    }
    text = json.dumps(header).encode()
    body = text + b"".join(np.ascontiguousarray(a).tobytes() for a in tensors.values())
    reply = httpx.post(
        f"{server.url}/v2/models/{model}/infer",
        content=body,
        headers={**KEY, "Inference-Header-Content-Length": str(len(text))},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    length = int(reply.headers["inference-header-content-length"])
    described, offset, out = json.loads(reply.content[:length]), length, {}
    for o in described["outputs"]:
        size = o["parameters"]["binary_data_size"]
        dtype = {"FP32": np.float32, "INT64": np.int64}[o["datatype"]]
        out[o["name"]] = np.frombuffer(reply.content[offset : offset + size], dtype).reshape(o["shape"])
        offset += size
    return out


def _v2type(array: np.ndarray) -> str:
    return {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}[array.dtype]


def grpc_infer(stub: ipb_grpc.GRPCInferenceServiceStub, model: str, tensors: dict[str, np.ndarray]) -> dict:
    request = ipb.ModelInferRequest(model_name=model)
    for name, array in tensors.items():
        request.inputs.add(name=name, datatype=_v2type(array), shape=array.shape)
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    reply = stub.ModelInfer(request, metadata=list(KEY.items()), timeout=60)
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    return {
        o.name: np.frombuffer(raw, dtypes[o.datatype]).reshape(o.shape)
        for o, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }


def test_encode_decode_round_trip_equals_v1(
    server: ServerProcess, stub: ipb_grpc.GRPCInferenceServiceStub
) -> None:
    wave = tone(2.5, 48_000, 2, seed=150)[None]  # [1, 2, T]: three segments
    codes = infer_binary(server, "encodec_48khz_encode", {"WAVEFORM": wave}, bandwidth=3.0)
    with Client(url_of(server, "http"), api_key=API_KEY) as client:
        want = client.encode(wave[0], sample_rate=48_000, bandwidth=3.0)
        audio = client.decode(want).audio
    np.testing.assert_array_equal(codes["CODES"], np.concatenate(want.segments, axis=1))
    np.testing.assert_allclose(codes["SCALES"], want.scales, rtol=1e-6)
    assert codes["NUM_SAMPLES"].tolist() == [wave.shape[-1]]
    decoded = grpc_infer(stub, "encodec_48khz_decode", codes)
    assert decoded["WAVEFORM"].shape == (1, 2, wave.shape[-1])
    np.testing.assert_allclose(decoded["WAVEFORM"][0], audio, atol=1 / 32768 + 1e-6)  # /v1 sends PCM_16


def test_batch_of_recordings_equals_each_alone(
    server: ServerProcess, stub: ipb_grpc.GRPCInferenceServiceStub
) -> None:
    batch = np.stack([tone(1.5, 48_000, 1, seed=160 + i)[0] for i in range(3)])  # [3, T] mono
    together = grpc_infer(stub, EMBED, {"WAVEFORM": batch})["EMBEDDING"]
    assert together.shape == (3, 128)
    for i in range(3):
        alone = infer_binary(server, EMBED, {"WAVEFORM": batch[i : i + 1]})["EMBEDDING"]
        np.testing.assert_allclose(alone[0], together[i], atol=1e-6)


def test_parameters_pooling_and_sample_rate(server: ServerProcess) -> None:
    wave = tone(1.5, 44_100, 2, seed=170)
    out = infer_binary(server, EMBED, {"WAVEFORM": wave[None]}, pooling="mean_std", sample_rate=44_100)
    with Client(url_of(server, "grpc"), api_key=API_KEY) as client:
        want = client.embed(wave, sample_rate=44_100, pooling="mean_std").vector
    assert out["EMBEDDING"].shape == (1, 256)
    np.testing.assert_allclose(out["EMBEDDING"][0], want, atol=1e-6)


def test_grpc_typed_contents_and_bytes(
    server: ServerProcess, stub: ipb_grpc.GRPCInferenceServiceStub
) -> None:
    wav = encode(tone(1.0, 22_050, 1, seed=180), 22_050, "wav")
    request = ipb.ModelInferRequest(model_name=EMBED)
    request.inputs.add(name="AUDIO", datatype="BYTES", shape=[1]).contents.bytes_contents.append(wav)
    got = np.frombuffer(
        stub.ModelInfer(request, metadata=list(KEY.items())).raw_output_contents[0], np.float32
    )
    with Client(url_of(server, "http"), api_key=API_KEY) as client:
        np.testing.assert_allclose(got, client.embed(wav).vector, atol=1e-6)


BINARY_16 = json.dumps(
    {
        "inputs": [
            {"name": "WAVEFORM", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}
        ]
    }
).encode()
JSON_2 = b'{"inputs": [{"name": "WAVEFORM", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}]}'


@pytest.mark.parametrize(
    ("header", "tail", "framed", "words"),
    [
        (BINARY_16, b"\0" * 16, False, "not JSON"),  # binary data without the extension's header
        (BINARY_16, b"\0" * 8, True, "runs past the body"),
        (JSON_2, b"\0" * 4, True, "belong to no input"),
        (JSON_2.replace(b"[1, 2]", b"[1, 3]"), b"", False, "2 elements for shape [1, 3]"),
        (
            b'{"inputs": [{"name": "AUDIO", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]}',
            b"",
            False,
            "base64",
        ),
        (b'{"inputs": []}', b"", False, "exactly one of WAVEFORM and AUDIO"),
        (
            b'{"inputs": [{"name": "NOISE", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            b"",
            False,
            "no input",
        ),
    ],
)
def test_malformed_requests_get_400_in_the_protocol_shape(
    server: ServerProcess, header: bytes, tail: bytes, framed: bool, words: str
) -> None:
    headers = dict(KEY)
    if framed:
        headers["Inference-Header-Content-Length"] = str(len(header))
    reply = httpx.post(f"{server.url}/v2/models/{EMBED}/infer", content=header + tail, headers=headers)
    assert reply.status_code == 400, reply.text
    assert set(reply.json()) == {"error"} and words in reply.json()["error"]


def test_undecodable_audio_and_too_large_bodies(server: ServerProcess) -> None:
    element = b"RIFF junk"
    raw = struct.pack("<I", len(element)) + element
    spec = {"name": "AUDIO", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(raw)}}
    header = json.dumps({"inputs": [spec]}).encode()
    out = httpx.post(
        f"{server.url}/v2/models/{EMBED}/infer",
        content=header + raw,
        headers={**KEY, "Inference-Header-Content-Length": str(len(header))},
    )
    assert out.status_code == 415 and "error" in out.json()

    def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
        for _ in range(MAX_REQUEST_BYTES // (1 << 20) * 2):
            yield b" " * (1 << 20)

    big = httpx.post(f"{server.url}/v2/models/{EMBED}/infer", content=chunks(), headers=KEY)
    assert big.status_code == 413 and "bytes of body" in big.json()["error"]


def test_versions_readiness_and_metrics(
    server: ServerProcess, stub: ipb_grpc.GRPCInferenceServiceStub
) -> None:
    assert httpx.get(f"{server.url}/v2/models/{EMBED}/versions/1/ready", headers=KEY).json()["ready"] is True
    assert httpx.get(f"{server.url}/v2/models/{EMBED}/versions/2", headers=KEY).status_code == 404
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    stats = httpx.get(f"{server.url}/v2/models/{EMBED}/stats", headers=KEY)
    assert stats.status_code == 404 and "is not served" in stats.json()["error"]
    assert stub.ServerLive(ipb.ServerLiveRequest()).live and stub.ServerReady(ipb.ServerReadyRequest()).ready
    config = stub.ModelConfig(ipb.ModelConfigRequest(name="encodec_24khz_decode"), metadata=list(KEY.items()))
    assert [o.name for o in config.config.output] == ["WAVEFORM"] and list(config.config.output[0].dims) == [
        1,
        1,
        -1,
    ]
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelMetadata(ipb.ModelMetadataRequest(name=EMBED))
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    infer_binary(server, EMBED, {"WAVEFORM": tone(0.5, 48_000, 1, seed=190)})
    text = httpx.get(f"{server.url}/metrics").text
    assert 'method="/v2/models/{model_name}/infer"' in text
    assert 'method="/inference.GRPCInferenceService/ModelConfig"' in text


async def test_not_ready_is_503(tmp_path: Path) -> None:
    """Before the runtime is ready, /v2/health/ready and inference say 503 (its one state)."""
    runtime = Runtime(Settings(backend="fake", weights="random", data_dir=tmp_path))
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/v2/health/live")).status_code == 200
        ready = await client.get("/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        body = {"inputs": [{"name": "WAVEFORM", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.2]}]}
        infer = await client.post(f"/v2/models/{EMBED}/infer", json=body)
        assert infer.status_code == 503 and "not ready" in infer.json()["error"]
        assert infer.headers["retry-after"]
