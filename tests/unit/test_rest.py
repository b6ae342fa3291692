"""The REST transport in process: every bad input gets its 4xx (never a 500) and the app serves on."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import soundfile as sf
from audiofiles import encode, tone
from fakes import fake_settings

from sonovec.server.http.app import create_app
from sonovec.server.runtime import Runtime

GOOD = encode(tone(1.5, 44_100, 2), 44_100, "wav")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def nan_pcm() -> bytes:
    samples = tone(0.5, 16_000, 1)[0]
    samples[100:110] = np.nan
    return samples.tobytes()


BAD_INPUTS = [
    # (what, request kwargs, status, kind, field)
    ("empty file", {"files": {"audio": ("a.wav", b"")}}, 422, "invalid_argument", "audio"),
    (
        "corrupt wav",
        {"files": {"audio": ("a.wav", b"RIFF\x00\x00\x00\x00WAVEfmt junk")}},
        415,
        "unsupported_media_type",
        "audio",
    ),
    (
        "unknown format",
        {"files": {"audio": ("a.xyz", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)}},
        415,
        "unsupported_media_type",
        "audio",
    ),
    (
        "silence",
        {"files": {"audio": ("a.wav", encode(np.zeros((1, 16_000), np.float32), 16_000, "wav"))}},
        422,
        "invalid_argument",
        "audio",
    ),
    (
        "too many channels",
        {"files": {"audio": ("a.wav", encode(tone(0.2, 16_000, 9), 16_000, "wav"))}},
        413,
        "payload_too_large",
        "audio",
    ),
    (
        "too long",
        {"files": {"audio": ("a.wav", encode(tone(3.0, 8_000, 1), 8_000, "wav"))}},
        413,
        "payload_too_large",
        "audio",
    ),
    (
        "nan pcm",
        {
            "json": {
                "audio": {
                    "data": b64(nan_pcm()),
                    "encoding": "pcm_f32le",
                    "sample_rate": 16_000,
                    "channels": 1,
                }
            }
        },
        422,
        "invalid_argument",
        "audio",
    ),
    (
        "pcm without rate",
        {"json": {"audio": {"data": b64(b"\x00" * 8), "encoding": "pcm_f32le"}}},
        422,
        "invalid_argument",
        "audio",
    ),
    ("not base64", {"json": {"audio": {"data": "***"}}}, 422, "invalid_argument", "audio.data"),
    ("missing audio", {"json": {"pooling": "mean"}}, 422, "invalid_argument", "audio"),
    (
        "unknown field",
        {"json": {"audio": {"data": b64(GOOD)}, "colour": "red"}},
        422,
        "invalid_argument",
        "colour",
    ),
    (
        "unknown pooling",
        {"json": {"audio": {"data": b64(GOOD)}, "pooling": "max"}},
        422,
        "invalid_argument",
        "pooling",
    ),
    (
        "unknown model",
        {"json": {"audio": {"data": b64(GOOD)}, "model": "wav2vec2"}},
        404,
        "not_found",
        "model",
    ),
    (
        "not json",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        422,
        "invalid_argument",
        "body",
    ),
    ("stray file field", {"files": {"sound": ("a.wav", GOOD)}}, 422, "invalid_argument", "body"),
]


@pytest.fixture
async def limited(make_runtime):  # type: ignore[no-untyped-def]
    app = create_app(make_runtime(max_audio_seconds=2.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


@pytest.mark.parametrize(
    ("what", "request_kwargs", "status", "kind", "field"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
async def test_bad_input_gets_a_clear_4xx_and_the_app_serves_on(
    limited, what, request_kwargs, status, kind, field
) -> None:
    response = await limited.post("/v1/embed", **request_kwargs)
    body = response.json()
    assert response.status_code == status, body
    assert body["error"]["kind"] == kind
    assert body["error"]["field"] == field
    assert body["error"]["message"] and body["error"].get("allowed"), body
    ok = await limited.post("/v1/embed", files={"audio": ("a.wav", GOOD)})
    assert ok.status_code == 200


async def test_embed_json_and_multipart_mean_the_same(rest) -> None:
    as_json = await rest.post("/v1/embed", json={"audio": {"data": b64(GOOD)}, "pooling": "mean_std"})
    as_form = await rest.post("/v1/embed", files={"audio": ("a.wav", GOOD)}, data={"pooling": "mean_std"})
    as_options = await rest.post(
        "/v1/embed", files={"audio": ("a.wav", GOOD)}, data={"options": '{"pooling": "mean_std"}'}
    )
    vectors = [r.json()["embedding"] for r in (as_json, as_form, as_options)]
    assert len(vectors[0]) == 256 and vectors[0] == vectors[1] == vectors[2]


async def test_every_response_says_which_weights_made_it(rest) -> None:
    body = (await rest.post("/v1/embed", files={"audio": ("a.wav", GOOD)})).json()
    assert body["model"]["pretrained"] is False and "fake" in body["model"]["warning"]
    assert body["model"]["weights_fingerprint"]
    models = (await rest.get("/v1/models")).json()
    assert models["random_weights"] is True and models["default_model"] == "encodec_48khz"
    assert models["limits"]["max_audio_seconds"] > 0 and "flac" in models["limits"]["formats"]


async def test_raw_pcm_int16(rest) -> None:
    pcm = (tone(1.0, 22_050, 2).T * 20_000).astype("<i2").tobytes()
    response = await rest.post(
        "/v1/embed",
        json={"audio": {"data": b64(pcm), "encoding": "pcm_s16le", "sample_rate": 22_050, "channels": 2}},
    )
    assert response.status_code == 200 and response.json()["duration_s"] == pytest.approx(1.0, abs=1e-3)


async def test_encode_decode_round_trip_over_rest(rest) -> None:
    encoded = (
        await rest.post("/v1/encode", files={"audio": ("a.wav", GOOD)}, data={"bandwidth": "12"})
    ).json()
    assert encoded["num_codebooks"] == 8 and encoded["num_samples"] == 72_000
    reply = await rest.post(
        "/v1/decode", json={"segments": encoded["segments"], "num_samples": encoded["num_samples"]}
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "audio/wav"
    assert reply.headers["x-sonovec-pretrained"] == "false" and reply.headers["x-sonovec-warning"]
    audio, rate = sf.read(io.BytesIO(reply.content), always_2d=True)
    assert rate == 48_000 and audio.shape == (72_000, 2)
    as_is = await rest.post("/v1/decode", json=encoded)  # an encode reply decodes as it is
    assert as_is.content == reply.content
    wrong = await rest.post("/v1/decode", json={**encoded, "sample_rate": 24_000})
    assert wrong.status_code == 422 and wrong.json()["error"]["field"] == "sample_rate"
    bad = await rest.post("/v1/decode", json={"segments": [{"codes": [[5000] * 150] * 4}]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "codes"


async def test_similarity_and_self_similarity_over_rest(rest) -> None:
    pair = await rest.post(
        "/v1/similarity", files=[("recordings", ("a.wav", GOOD)), ("recordings", ("b.wav", GOOD))]
    )
    assert pair.status_code == 200 and pair.json()["matrix"][0][1] == pytest.approx(1.0, abs=1e-5)
    one = await rest.post("/v1/similarity", files=[("recordings", ("a.wav", GOOD))])
    assert one.status_code == 422 and one.json()["error"]["field"] == "recordings"
    self_sim = await rest.post(
        "/v1/similarity/self", files={"audio": ("a.wav", GOOD)}, data={"segment_seconds": "0.5"}
    )
    assert self_sim.status_code == 200 and len(self_sim.json()["matrix"]) == 3


async def test_api_keys(make_runtime) -> None:
    app = create_app(make_runtime(api_keys=["k1", "k2"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        denied = await client.get("/v1/models")
        assert denied.status_code == 401 and denied.json()["error"]["kind"] == "unauthenticated"
        assert (await client.get("/v1/models", headers={"x-api-key": "nope"})).status_code == 401
        assert (await client.get("/v1/models", headers={"authorization": "Bearer k2"})).status_code == 200
        assert (await client.get("/v1/models", headers={"x-api-key": "k1"})).status_code == 200
        assert (await client.get("/v1/health/ready")).status_code == 200  # probes need no key


async def test_body_over_the_limit_is_refused_before_reading(make_runtime) -> None:
    app = create_app(make_runtime(max_request_bytes=1000))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/v1/embed", files={"audio": ("a.wav", GOOD)})
    assert response.status_code == 413 and "1000" in response.json()["error"]["allowed"]


async def test_not_ready_is_503_with_retry_after(tmp_path) -> None:
    app = create_app(Runtime(fake_settings(tmp_path)))  # not started: models still loading
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.post("/v1/embed", files={"audio": ("a.wav", GOOD)})
        assert response.status_code == 503 and response.headers["retry-after"]
        assert (await client.get("/v1/health/ready")).status_code == 503
        assert (await client.get("/v1/health/live")).status_code == 200


async def test_openapi_and_metrics(rest) -> None:
    spec = (await rest.get("/openapi.json")).json()
    assert {"/v1/embed", "/v1/encode", "/v1/decode", "/v1/similarity", "/v1/models"} <= set(spec["paths"])
    await rest.post("/v1/embed", files={"audio": ("a.wav", GOOD)})
    text = (await rest.get("/metrics")).text
    for name in (
        "sonovec_requests_total",
        "sonovec_request_seconds",
        "sonovec_queue_wait_seconds",
        "sonovec_batch_windows",
        "sonovec_batch_audio_seconds",
        "sonovec_queue_depth_seconds",
    ):
        assert name in text


async def test_self_similarity_as_a_picture(rest) -> None:
    reply = await rest.post(
        "/v1/similarity/self", files={"audio": ("a.wav", GOOD)}, headers={"accept": "image/png"}
    )
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert reply.content.startswith(b"\x89PNG") and reply.headers["x-sonovec-pretrained"] == "false"
