"""The latent lab through the core and REST: decode from latents, interpolation, mixes, offsets,
style, with the fake backend (and the real random-init EnCodec for the decoder equivalence)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fakes import fake_settings

from sonovec.server.core import AudioSource
from sonovec.server.http.app import create_app
from sonovec.server.lab import Lab, LabOptions, LatentsIn
from sonovec.server.runtime import Runtime

RATE = 48_000


def noise(seconds: float, level: float, seed: int, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal((channels, round(seconds * RATE)))).astype(np.float32)


def wav(x: np.ndarray, rate: int = RATE) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, x.T, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def read_wav(b64: str) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(base64.b64decode(b64)), dtype="float32", always_2d=True)
    return audio.T


async def test_decode_latents_equals_the_backends_decoder(make_runtime: Callable[..., Runtime]) -> None:
    """One segment (0.6 s): the service's decode of a recording's latents is the backend's own
    decoder on those latents, times the segment's scale, cut to the recording's length."""
    service = make_runtime().service
    x = noise(0.6, 0.3, 0)
    z = await service.latents(AudioSource(array=x, sample_rate=RATE))
    assert z.frames.shape == (90, 128) and z.scales.shape == (1,) and z.num_samples == 28_800
    decoded = await service.decode_latents(z.frames, z.scales.tolist(), model=None, num_samples=z.num_samples)
    backend = service.backend(None)
    own = backend.decode_latents(z.frames.T[None], z.scales)[0]
    np.testing.assert_allclose(decoded.audio, own[:, : z.num_samples], rtol=1e-6, atol=1e-9)  # / OLA weight


async def test_long_latents_decode_by_segments(make_runtime: Callable[..., Runtime]) -> None:
    """2.3 s: three 1 s segments of 150, 150 and the rest, each with its own scale, overlap-added."""
    service = make_runtime().service
    x = np.concatenate([noise(1.0, 0.05, 1), noise(1.3, 0.5, 2)], axis=1)
    z = await service.latents(AudioSource(array=x, sample_rate=RATE))
    assert len(z.scales) == 3 and z.scales[0] < z.scales[2] / 3
    decoded = await service.decode_latents(z.frames, z.scales.tolist(), model=None, num_samples=z.num_samples)
    assert decoded.audio.shape == x.shape
    quiet, loud = (
        np.sqrt(np.mean(decoded.audio[:, :40_000] ** 2)),
        np.sqrt(np.mean(decoded.audio[:, -40_000:] ** 2)),
    )
    assert loud > 3 * quiet  # the scales put each segment back at its level


async def test_requantized_decode_is_the_codes_decode(make_runtime: Callable[..., Runtime]) -> None:
    service = make_runtime().service
    source = AudioSource(array=noise(1.4, 0.2, 3), sample_rate=RATE)
    z = await service.latents(source)
    via_latents = await service.decode_latents(
        z.frames, z.scales.tolist(), model=None, bandwidth=6.0, num_samples=z.num_samples
    )
    codes = await service.encode(source, model=None, bandwidth=6.0)
    via_codes = await service.decode(codes.codes, codes.scales, model=None, num_samples=codes.num_samples)
    np.testing.assert_array_equal(via_latents.audio, via_codes.audio)


async def test_interpolation_endpoints_are_the_inputs_decodes(make_runtime: Callable[..., Runtime]) -> None:
    lab = Lab(make_runtime().service)
    options = LabOptions()
    a = AudioSource(array=noise(1.5, 0.1, 4), sample_rate=RATE)
    b = AudioSource(array=noise(1.5, 0.4, 5), sample_rate=RATE)
    decoded_a, decoded_b = await lab.decode_input(a, options), await lab.decode_input(b, options)
    at0, at1 = await lab.interpolate(a, b, 0.0, options), await lab.interpolate(a, b, 1.0, options)
    np.testing.assert_allclose(at0.audio.audio, decoded_a.audio.audio, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(at1.audio.audio, decoded_b.audio.audio, rtol=1e-5, atol=1e-7)
    half = await lab.interpolate(a, b, 0.5, options)
    np.testing.assert_allclose(half.latents.frames, (at0.latents.frames + at1.latents.frames) / 2, atol=1e-6)
    np.testing.assert_allclose(
        half.latents.scales, np.sqrt(at0.latents.scales * at1.latents.scales), rtol=1e-5
    )


async def test_unequal_lengths_use_the_shared_frames(make_runtime: Callable[..., Runtime]) -> None:
    lab = Lab(make_runtime().service)
    a = AudioSource(array=noise(2.5, 0.1, 6), sample_rate=RATE)
    b = AudioSource(array=noise(1.2, 0.1, 7), sample_rate=RATE)
    result = await lab.interpolate(a, b, 0.3, LabOptions())
    assert result.audio.audio.shape == (2, round(1.2 * RATE))
    assert result.latents.frames.shape[0] == 150 + 32 and len(result.latents.scales) == 2


async def test_results_chain(make_runtime: Callable[..., Runtime]) -> None:
    """A result's latents are a valid input: decoding them again gives the same audio."""
    lab = Lab(make_runtime().service)
    a = AudioSource(array=noise(1.1, 0.2, 8), sample_rate=RATE)
    b = AudioSource(array=noise(1.1, 0.2, 9), sample_rate=RATE)
    first = await lab.style(a, b, 1.0, LabOptions())
    z = first.latents
    again = await lab.decode_input(LatentsIn(z.frames, z.scales.tolist(), z.num_samples), LabOptions())
    np.testing.assert_array_equal(again.audio.audio, first.audio.audio)
    frames = first.latents.frames
    style_frames = (await lab.latents(b, LabOptions())).frames
    np.testing.assert_allclose(frames.std(axis=0), style_frames.std(axis=0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(frames.mean(axis=0), style_frames.mean(axis=0), atol=1e-4)


async def test_offset_and_mix(make_runtime: Callable[..., Runtime]) -> None:
    lab = Lab(make_runtime().service)
    sources = [AudioSource(array=noise(0.8, 0.1 * (i + 1), 10 + i), sample_rate=RATE) for i in range(3)]
    za, zb, zc = [await lab.latents(s, LabOptions()) for s in sources]
    shifted = await lab.offset(*sources, 0.5, LabOptions())
    expected = zc.frames + 0.5 * (za.frames.mean(axis=0) - zb.frames.mean(axis=0))
    np.testing.assert_allclose(shifted.latents.frames, expected, atol=1e-6)
    np.testing.assert_array_equal(shifted.latents.scales, zc.scales)
    mixed = await lab.mix(sources, [1.0, 1.0, 2.0], LabOptions())
    np.testing.assert_allclose(mixed.latents.frames, (za.frames + zb.frames + 2 * zc.frames) / 4, atol=1e-6)


@pytest.mark.model
async def test_torch_service_decode_latents_equals_encodecs_decoder(tmp_path: Path) -> None:
    """The real (random-init) EnCodec: through the batcher, decode(latents of x) is the model's own
    ``decoder`` on the same latents, times the scale (one segment), for both models."""
    import torch

    settings = fake_settings(tmp_path, backend="torch", models=["encodec_48khz", "encodec_24khz"])
    runtime = Runtime(settings).start_sync()
    try:
        service = runtime.service
        for name, channels, rate in (("encodec_48khz", 2, 48_000), ("encodec_24khz", 1, 24_000)):
            x = np.random.default_rng(0).standard_normal((channels, rate // 2)).astype(np.float32) * 0.2
            z = await service.latents(AudioSource(array=x, sample_rate=rate), model=name)
            out = await service.decode_latents(
                z.frames, z.scales.tolist(), model=name, num_samples=z.num_samples
            )
            model = service.backend(name).model  # type: ignore[attr-defined]
            with torch.inference_mode():
                own = model.decoder(torch.from_numpy(z.frames.T[None].copy()))[0].numpy() * z.scales[0]
            np.testing.assert_allclose(out.audio, own[:, : z.num_samples], atol=1e-5 * np.abs(own).max())
    finally:
        runtime.stop(timeout=10)


# ---- REST ----


@pytest.fixture
async def lab_rest(make_runtime: Callable[..., Runtime]) -> httpx.AsyncClient:
    app = create_app(make_runtime())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sonovec") as client:
        yield client


async def test_rest_interpolate_multipart_and_chain(lab_rest: httpx.AsyncClient) -> None:
    a, b = wav(noise(1.2, 0.1, 20)), wav(noise(1.2, 0.3, 21))
    reply = await lab_rest.post(
        "/v1/lab/interpolate", files={"a": a, "b": b}, data={"t": "1", "subtype": "FLOAT"}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    decoded_b = await lab_rest.post("/v1/lab/latents", files={"input": b})
    again = await lab_rest.post(
        "/v1/lab/decode", json={"latents": decoded_b.json()["latents"], "subtype": "FLOAT"}
    )
    np.testing.assert_allclose(read_wav(body["audio"]), read_wav(again.json()["audio"]), rtol=1e-5, atol=1e-7)
    chained = await lab_rest.post(
        "/v1/lab/mix",
        json={
            "inputs": [{"latents": body["latents"]}, {"audio": {"data": base64.b64encode(a).decode()}}],
            "weights": [1, 1],
        },
    )
    assert chained.status_code == 200 and chained.json()["latents"]["num_samples"] == round(1.2 * RATE)


async def test_rest_path_gives_each_step(lab_rest: httpx.AsyncClient) -> None:
    a, b = wav(noise(0.5, 0.1, 22)), wav(noise(0.5, 0.3, 23))
    reply = await lab_rest.post("/v1/lab/path", files={"a": a, "b": b}, data={"steps": "4"})
    assert reply.status_code == 200
    assert reply.json()["t"] == pytest.approx([0, 1 / 3, 2 / 3, 1]) and len(reply.json()["steps"]) == 4


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/lab/decode", {"latents": {"frames": [[0.0] * 5]}}, "latents.frames"),
        ("/v1/lab/decode", {"latents": {"frames": [[0.0] * 128] * 200, "scales": [1.0]}}, "latents.scales"),
        (
            "/v1/lab/decode",
            {"latents": {"frames": [[0.0] * 128] * 20, "num_samples": 99_999}},
            "latents.num_samples",
        ),
        ("/v1/lab/decode", {"latents": {"frames": [[0.0] * 128] * 20}, "bandwidth": 5.0}, "bandwidth"),
        (
            "/v1/lab/interpolate",
            {
                "a": {"latents": {"frames": [[0.0] * 128]}},
                "b": {"latents": {"frames": [[0.0] * 128]}},
                "t": 1.5,
            },
            "t",
        ),
        (
            "/v1/lab/path",
            {
                "a": {"latents": {"frames": [[0.0] * 128]}},
                "b": {"latents": {"frames": [[0.0] * 128]}},
                "steps": 1,
            },
            "steps",
        ),
        (
            "/v1/lab/mix",
            {"inputs": [{"latents": {"frames": [[0.0] * 128]}}] * 2, "weights": [1, -1]},
            "weights",
        ),
        ("/v1/lab/style", {"content": {}, "style": {}}, "content"),
    ],
)
async def test_rest_bad_input_is_a_clear_422(
    lab_rest: httpx.AsyncClient, path: str, body: dict, field: str
) -> None:
    reply = await lab_rest.post(path, json=body)
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["field"].startswith(field)


async def test_rest_sensitivity_ablation_statistics(lab_rest: httpx.AsyncClient, tmp_path: Path) -> None:
    x = wav(noise(0.5, 0.2, 30))
    reply = await lab_rest.post(
        "/v1/lab/sensitivity",
        files={"input": x},
        data={"options": '{"dims": [0, 5, 9], "k": 1.5, "listen": 1}'},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [row["dim"] for row in body["table"]["rows"]] == [0, 5, 9] and len(body["listen"]) == 1
    (tmp_path / "sensitivity.png").write_bytes(base64.b64decode(body["png"]))
    ablation = await lab_rest.post("/v1/lab/ablation", files={"input": x}, data={"mode": "mean"})
    assert ablation.status_code == 200 and len(ablation.json()["table"]["rows"]) == 128
    stats = await lab_rest.post(
        "/v1/lab/statistics", json={"inputs": [{"data": base64.b64encode(x).decode()}] * 2}
    )
    assert stats.status_code == 200 and stats.json()["table"]["num_frames"] == 2 * 75
    bad = await lab_rest.post("/v1/lab/ablation", files={"input": x}, data={"mode": "half"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "mode"
