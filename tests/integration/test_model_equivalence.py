"""The service on real EnCodec (random-init, seeded) equals ``EncodecModel.encode`` of each file alone.

16+ concurrent requests of mixed lengths (some shorter than one window) go through the batcher,
so full windows of different requests share model calls; each result is compared with the
unmodified EnCodec path on that file alone (``sonovec.models.reference``).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from audiofiles import tone
from fakes import fake_settings

pytest.importorskip("torch")
from sonovec.models.reference import reference_decode, reference_encode, reference_latents
from sonovec.server.core import AudioSource, EmbedOptions, Service
from sonovec.server.runtime import Runtime

pytestmark = [pytest.mark.integration, pytest.mark.model]

LENGTHS_S = {
    "encodec_48khz": [0.02, 0.4, 0.99, 1.0, 1.6, 2.3, 3.1, 0.7],
    "encodec_24khz": [0.02, 0.4, 1.0, 2.5, 4.0, 7.3, 0.9, 3.3],
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Service:
    settings = fake_settings(
        tmp_path_factory.mktemp("eq"),
        backend="torch",
        threads=2,
        max_wait_ms=30.0,
        max_batch_seconds=8.0,
        cache_entries=0,
        max_queue_wait_s=3600.0,  # every file is queued at once on a slow CPU: not an admission test
    )
    runtime = Runtime(settings).start_sync()
    yield runtime.service
    runtime.stop(timeout=30)


def clips(model: str, sample_rate: int, channels: int) -> list[np.ndarray]:
    lengths = LENGTHS_S[model] * 2  # 16 concurrent requests
    return [tone(s, sample_rate, channels, seed=i) * (0.2 + 0.1 * (i % 5)) for i, s in enumerate(lengths)]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))


@pytest.mark.parametrize("model", ["encodec_48khz", "encodec_24khz"])
async def test_batched_latents_and_codes_equal_each_file_alone(service: Service, model: str) -> None:
    backend = service.backends[model]
    spec = backend.spec
    wavs = clips(model, spec.sample_rate, spec.channels)
    sources = [AudioSource(array=w, sample_rate=spec.sample_rate) for w in wavs]
    options = EmbedOptions(model=model, pooling="mean", frames=True)
    embedded, encoded = await asyncio.gather(
        asyncio.gather(*(service.embed(s, options) for s in sources)),
        asyncio.gather(*(service.encode(s, model=model, bandwidth=6.0) for s in sources)),
    )
    batches = service.metrics.registry.get_sample_value(
        "sonovec_batch_windows_sum", {"model": model, "op": "encode"}
    )
    calls = service.metrics.registry.get_sample_value(
        "sonovec_batch_windows_count", {"model": model, "op": "encode"}
    )
    assert batches / calls > 1.5, "windows of concurrent requests should share model calls"
    worst, agreement = 0.0, []
    for wav, emb, enc in zip(wavs, embedded, encoded, strict=True):
        reference = reference_latents(backend.model, wav)
        assert emb.frames.T.shape == reference.shape
        worst = max(worst, relative_error(emb.frames.T, reference))
        pooled = reference.mean(axis=1)
        cosine = float(emb.vector @ pooled / np.linalg.norm(pooled))
        assert cosine >= 0.9999
        ref_codes = reference_encode(backend.model, wav, 6.0)
        ours = np.concatenate(enc.codes, axis=1)
        theirs = np.concatenate([c for c, _ in ref_codes], axis=1)
        assert ours.shape == theirs.shape
        agreement.append(float((ours == theirs).mean()))
        np.testing.assert_allclose(enc.scales, [s for _, s in ref_codes], rtol=1e-6)
    print(f"\n{model}: max relative latent error {worst:.2e}, code agreement min {min(agreement):.5f}")
    assert worst < 1e-5
    assert min(agreement) >= 0.999


@pytest.mark.parametrize("model", ["encodec_48khz", "encodec_24khz"])
async def test_round_trip_length_and_snr_against_the_models_own_decode(service: Service, model: str) -> None:
    backend = service.backends[model]
    spec = backend.spec
    wav = tone(2.3, spec.sample_rate, spec.channels, seed=7) * 0.3
    encoded = await service.encode(
        AudioSource(array=wav, sample_rate=spec.sample_rate), model=model, bandwidth=12.0
    )
    decoded = await service.decode(
        encoded.codes, encoded.scales, model=model, num_samples=encoded.num_samples
    )
    assert decoded.audio.shape == wav.shape
    frames = [(c, s) for c, s in zip(encoded.codes, encoded.scales, strict=True)]
    if spec.segmented:
        from sonovec.server.reassembly import linear_overlap_add

        own = linear_overlap_add([reference_decode(backend.model, c, s) for c, s in frames], spec.stride)
    else:
        own = reference_decode(backend.model, *frames[0])
    own = own[:, : wav.shape[1]]
    snr = 10 * np.log10(np.sum(own**2) / max(np.sum((decoded.audio - own) ** 2), 1e-30))
    print(f"\n{model}: decoded SNR vs EncodecModel.decode of the same codes: {snr:.1f} dB")
    assert snr > 60
