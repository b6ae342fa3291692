"""``Backend.decode_latents``: the decoder from continuous latents, the quantizer skipped.

Torch (random-init) against the EnCodec model's own decoder on the same latents; ONNX against torch;
the fake's decoder inverts its encoder where a projection can be inverted.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from sonovec.models.base import BackendOptions
from sonovec.models.encodec_torch import TorchBackend
from sonovec.models.fake import FakeBackend
from sonovec.models.registry import get_spec, load_backend

MODELS = ("encodec_48khz", "encodec_24khz")


@functools.cache
def torch_backend(model: str) -> TorchBackend:
    return load_backend("torch", BackendOptions(model=model, weights="random"))  # type: ignore[return-value]


def _audio(model: str, seconds: float, batch: int = 2, seed: int = 0) -> np.ndarray:
    spec = get_spec(model)
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((batch, spec.channels, round(seconds * spec.sample_rate)))).astype(
        np.float32
    )


@pytest.mark.model
@pytest.mark.parametrize("model", MODELS)
def test_torch_decode_latents_is_the_models_own_decoder(model: str) -> None:
    backend = torch_backend(model)
    encoded = backend.encode(_audio(model, 0.5))
    ours = backend.decode_latents(encoded.latents, encoded.scales)
    with torch.inference_mode():
        own = backend.model.decoder(torch.from_numpy(encoded.latents)).numpy()
    if backend.spec.normalize:
        own = own * encoded.scales[:, None, None]
    assert ours.shape == own.shape == (2, backend.spec.channels, encoded.latents.shape[-1] * 320)
    np.testing.assert_allclose(ours, own, rtol=0, atol=1e-6 * float(np.abs(own).max()))


@pytest.mark.model
@pytest.mark.parametrize("model", MODELS)
def test_decode_of_codes_is_decode_latents_of_their_codewords(model: str) -> None:
    """decode(codes) = decode_latents(quantizer lookup of the codes): the two paths share the decoder."""
    backend = torch_backend(model)
    encoded = backend.encode(_audio(model, 0.3), full_precision=True)
    codes = backend.quantize(encoded.latents, 6.0)
    with torch.inference_mode():
        looked_up = backend.model.quantizer.decode(torch.from_numpy(codes).transpose(0, 1)).numpy()
    np.testing.assert_allclose(
        backend.decode_latents(looked_up, encoded.scales), backend.decode(codes, encoded.scales), atol=1e-5
    )


@pytest.mark.model
@pytest.mark.slow
def test_onnx_decode_latents_equals_torch(tmp_path: Path) -> None:
    onnx = load_backend(
        "onnx", BackendOptions(model="encodec_48khz", weights="random", cache_dir=str(tmp_path))
    )
    reference = torch_backend("encodec_48khz")
    encoded = reference.encode(_audio("encodec_48khz", 0.4, batch=3))
    expected = reference.decode_latents(encoded.latents, encoded.scales)
    got = onnx.decode_latents(encoded.latents, encoded.scales)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert (tmp_path / "onnx").is_dir()


def test_fake_decoder_inverts_its_encoder() -> None:
    """encode(decode_latents(z)) = z (24 kHz: no normalisation in between)."""
    fake = FakeBackend(get_spec("encodec_24khz"))
    encoded = fake.encode(_audio("encodec_24khz", 0.2))
    again = fake.encode(fake.decode_latents(encoded.latents, encoded.scales))
    np.testing.assert_allclose(again.latents, encoded.latents, atol=1e-4)


def test_fake_decoder_multiplies_by_the_scale() -> None:
    fake = FakeBackend(get_spec("encodec_48khz"))
    encoded = fake.encode(_audio("encodec_48khz", 0.2))
    unit = fake.decode_latents(encoded.latents, np.ones(2, np.float32))
    np.testing.assert_allclose(
        fake.decode_latents(encoded.latents, encoded.scales), unit * encoded.scales[:, None, None], rtol=1e-5
    )


def test_fake_loudness_dimension_scales_the_output() -> None:
    fake = FakeBackend(get_spec("encodec_24khz"), loudness_dim=3)
    latents = np.full((1, 128, 10), 0.1, np.float32)
    louder = latents.copy()
    louder[:, 3] += 0.5
    ratio = (
        np.abs(fake.decode_latents(louder, np.ones(1, np.float32))).sum()
        / np.abs(fake.decode_latents(latents, np.ones(1, np.float32))).sum()
    )
    assert ratio > 2.0  # exp(2 * 0.5) ~ 2.7, times what the dimension adds through the projection


def test_fake_decode_latents_refuses_wrong_shapes() -> None:
    fake = FakeBackend(get_spec("encodec_24khz"))
    with pytest.raises(ValueError, match="decode_latents takes"):
        fake.decode_latents(np.zeros((1, 7, 3), np.float32), np.ones(1, np.float32))
