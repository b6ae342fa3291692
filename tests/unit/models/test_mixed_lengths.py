"""Windows of many lengths in one call equal each window alone (torch backend; ONNX in
``test_encodec_onnx.py``): the engine hands the backend a whole batch of mixed lengths.

"Alone" is the unmodified ``EncodecModel`` encoder on that one window (48 kHz: divided by its RMS
scale, as ``EncodecModel._encode_frame`` does), not the backend's own per-window path.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from sonovec.models.base import MIN_PADDED_FRAMES, PADDED_FILL, BackendOptions, ModelSpec, tail_groups
from sonovec.models.encodec_torch import TorchBackend
from sonovec.models.registry import get_spec, load_backend
from sonovec.server.batcher import BatchKey
from sonovec.server.engine import EncodeIn, EncodeOut, Engine

pytestmark = pytest.mark.model

# seconds: 24 kHz tails of every size (0.02 s, 0.075 s: under MIN_PADDED_FRAMES
# frames; the 0.075 s one would otherwise pad to 0.09 s), a full 10 s chunk and a
# chunk with its 2 s of left context; 48 kHz full windows and tails
SECONDS = {
    "encodec_24khz": (0.02, 0.09, 0.4, 1.0, 2.5, 2.2, 4.0, 3.3, 10.0, 12.0, 7.7, 0.35, 0.075),
    "encodec_48khz": (1.0, 1.0, 0.01, 0.19, 0.65, 1.0, 0.65),
}
LATENT_RTOL = 1e-5


@functools.cache
def torch_backend(model: str) -> TorchBackend:
    return load_backend("torch", BackendOptions(model=model, weights="random", threads=2))  # type: ignore[return-value]


def windows(spec: ModelSpec, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for seconds in SECONDS[spec.name]:
        n = round(seconds * spec.sample_rate)
        t = np.arange(n) / spec.sample_rate
        tone = np.sin(2 * np.pi * rng.uniform(100, 3000) * t)
        out.append((0.1 * rng.standard_normal((spec.channels, n)) + 0.3 * tone).astype(np.float32))
    return out


@torch.inference_mode()
def alone(backend: TorchBackend, window: np.ndarray) -> tuple[np.ndarray, float]:
    x = torch.from_numpy(window[None])
    scale = torch.ones(())
    if backend.spec.normalize:
        scale = 1e-8 + x.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
    return backend.model.encoder(x / scale)[0].numpy(), float(scale.reshape(-1)[0])


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_causal_groups_are_padded_at_most_to_the_fill_and_others_are_exact() -> None:
    frames = [900, 750, 750, 700, 610, 540, 480, 40, 7, 7, 5, 3]
    groups = tail_groups(get_spec("encodec_24khz"), frames)
    assert sorted(i for indices, _ in groups for i in indices) == list(range(len(frames)))
    for indices, length in groups:
        assert length == max(frames[i] for i in indices)
        assert min(frames[i] for i in indices) >= PADDED_FILL * length
        if length < MIN_PADDED_FRAMES:
            assert {frames[i] for i in indices} == {length}
    assert len(groups) < len(set(frames))  # padding did merge lengths
    assert sum(frames) / sum(len(i) * f for i, f in groups) >= 0.8
    # non-causal (48 kHz): equal lengths only
    groups_48 = tail_groups(get_spec("encodec_48khz"), frames)
    assert all(len({frames[i] for i in indices}) == 1 for indices, _ in groups_48)


@pytest.mark.parametrize("model", list(SECONDS))
def test_mixed_lengths_in_one_call_equal_each_window_alone(model: str) -> None:
    backend = torch_backend(model)
    wavs = windows(backend.spec)
    frames = [backend.spec.num_frames(w.shape[-1]) for w in wavs]
    if backend.spec.causal:  # the case under test: lengths really share padded calls
        assert len(tail_groups(backend.spec, frames)) < len(set(frames))
    got = backend.encode_windows(wavs)
    worst = 0.0
    for wav, (latents, scale) in zip(wavs, got, strict=True):
        want, want_scale = alone(backend, wav)
        assert latents.shape == want.shape
        worst = max(worst, relative_error(latents, want))
        assert scale == pytest.approx(want_scale, rel=1e-6)
    print(f"\n{model}: {len(wavs)} windows of {len(set(frames))} lengths, max relative error {worst:.2e}")
    assert worst < LATENT_RTOL


def test_engine_codes_from_one_quantize_call_equal_each_window_alone() -> None:
    backend = torch_backend("encodec_24khz")
    wavs = windows(backend.spec, seed=1)
    engine = Engine({"encodec_24khz": backend})
    outs = engine(BatchKey("encodec_24khz", "quantize", 6.0), [EncodeIn(w, 0) for w in wavs])
    agree = []
    for wav, out in zip(wavs, outs, strict=True):
        assert isinstance(out, EncodeOut) and out.codes is not None
        want = backend.quantize(alone(backend, wav)[0][None], 6.0)[0]
        assert out.codes.shape == want.shape
        agree.append(float((out.codes == want).mean()))
    assert min(agree) >= 0.999


def test_engine_drops_context_frames() -> None:
    backend = torch_backend("encodec_24khz")
    spec = backend.spec
    wav = windows(spec)[9]  # 12 s: a 10 s chunk with 2 s of left context
    drop = spec.context // spec.hop_length
    (out,) = Engine({spec.name: backend})(BatchKey(spec.name, "encode"), [EncodeIn(wav, drop)])
    assert isinstance(out, EncodeOut)
    np.testing.assert_allclose(out.latents, alone(backend, wav)[0][:, drop:], rtol=0, atol=1e-4)
