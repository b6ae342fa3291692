"""The CUDA paths against CPU fp32: skipped on machines without a CUDA device (CI has none).

Run them on a GPU machine with ``pytest -m model tests/unit/models/test_cuda.py -s`` (the figures are
printed); ``benchmarks/gpu.sh`` runs them before the GPU benchmarks.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from audiofiles import chord_batch

from sonovec.models.base import BackendOptions
from sonovec.models.encodec_torch import TorchBackend
from sonovec.models.registry import load_backend
from sonovec.server.batcher import BatchKey
from sonovec.server.engine import EncodeIn, Engine

pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

MODELS = ("encodec_48khz", "encodec_24khz")
SECONDS = {"encodec_48khz": (1.0, 0.3, 0.01), "encodec_24khz": (0.5, 3.0, 10.0)}


@functools.cache
def backend(model: str, device: str = "cpu", precision: str = "fp32") -> TorchBackend:
    options = BackendOptions(model=model, weights="random", device=device, precision=precision)
    return load_backend("torch", options)  # type: ignore[return-value]


def make_audio(model: str, seconds: float, batch: int, seed: int) -> np.ndarray:
    spec = backend(model).spec
    return chord_batch(seconds, spec.sample_rate, spec.channels, batch, seed)


def pooled_cosine(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    a, b = got.mean(-1), want.mean(-1)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("model", MODELS)
def test_cuda_fp32_matches_cpu_fp32(model: str) -> None:
    """IEEE fp32 on the GPU (TF32 is switched off): latents, codes and decoded audio match the CPU."""
    cpu, gpu = backend(model), backend(model, "cuda")
    for seconds in SECONDS[model]:
        audio = make_audio(model, seconds, 4, 1)
        want, got = cpu.encode(audio), gpu.encode(audio)
        error = float(np.abs(got.latents - want.latents).max() / np.abs(want.latents).max())
        print(f"{model} {seconds:g} s: cuda fp32 vs cpu max rel. error {error:.2e}")
        assert error <= 1e-4
        np.testing.assert_allclose(got.scales, want.scales, rtol=1e-5)
        bandwidth = cpu.spec.bandwidths[0]
        codes = cpu.quantize(want.latents, bandwidth)
        assert float((gpu.quantize(want.latents, bandwidth) == codes).mean()) >= 0.999
        decoded_cpu, decoded_gpu = cpu.decode(codes, want.scales), gpu.decode(codes, want.scales)
        snr = 10 * np.log10((decoded_cpu**2).sum() / max(((decoded_gpu - decoded_cpu) ** 2).sum(), 1e-30))
        assert snr >= 60.0


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("model", MODELS)
def test_reduced_precision_within_the_bars(model: str, precision: str) -> None:
    """Pooled cosine >= 0.999 vs fp32; the service's codes (fp32 latents) equal fp32's."""
    fp32, low = backend(model, "cuda"), backend(model, "cuda", precision)
    audio = make_audio(model, 1.0, 8, 2)
    cosine = pooled_cosine(low.encode(audio).latents, fp32.encode(audio).latents)
    bandwidth = fp32.spec.bandwidths[0]
    raw = float((low.quantize(low.encode(audio).latents, bandwidth)
                 == fp32.quantize(fp32.encode(audio).latents, bandwidth)).mean())
    items = [EncodeIn(window, 0) for window in audio]
    key = BatchKey(model, "quantize", bandwidth)
    got, want = Engine({model: low})(key, items), Engine({model: fp32})(key, items)
    served = float(np.mean([np.mean(g.codes == w.codes) for g, w in zip(got, want, strict=True)]))  # type: ignore[attr-defined]
    print(f"{model} {precision}: pooled cosine min {cosine.min():.6f}; codes at {bandwidth:g} kbps: "
          f"raw {precision} latents {raw:.4f}, as served (fp32 latents) {served:.4f}")
    assert cosine.min() >= 0.999
    assert served >= 0.99


def test_two_workers_on_one_gpu_give_the_sequential_results() -> None:
    """Each thread runs on its own stream with pinned, non-blocking copies: results must not mix."""
    gpu = backend("encodec_48khz", "cuda")
    batches = [make_audio("encodec_48khz", 1.0, 16, seed) for seed in range(8)]
    want = [gpu.encode(batch).latents for batch in batches]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda batch: gpu.encode(batch).latents, batches))
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)
        assert not torch.from_numpy(g).is_pinned()  # copied out: results never hold page-locked memory


@pytest.mark.skipif("CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
                    reason="needs onnxruntime-gpu")
def test_onnx_cuda_matches_torch_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    onnx = load_backend("onnx", BackendOptions(model="encodec_48khz", weights="random", device="cuda",
                                               cache_dir=str(tmp_path)))
    cpu = backend("encodec_48khz")
    for seconds in SECONDS["encodec_48khz"]:
        audio = make_audio("encodec_48khz", seconds, 4, 3)
        want, got = cpu.encode(audio).latents, onnx.encode(audio).latents
        error = float(np.abs(got - want).max() / np.abs(want).max())
        print(f"onnx cuda {seconds:g} s: max rel. error vs torch cpu {error:.2e}")
        assert error <= 1e-3
