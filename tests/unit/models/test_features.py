"""The feature baselines (log-mel, MFCC + deltas, chroma) as models: librosa's numbers, the
service's windows, their own embedding spaces, and clear refusals of what they cannot do."""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np
import pytest

from sonovec.models.features import FEATURE_SPECS, FeaturesBackend
from sonovec.server.core import AudioSource, EmbedOptions
from sonovec.server.errors import SonovecError
from sonovec.server.runtime import Runtime

RATE = 22_050


def test_short_files_are_librosa_on_the_whole_file() -> None:
    y = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    backend = FeaturesBackend(FEATURE_SPECS["mfcc"])
    latents = backend.encode(y[None, None]).latents[0]
    expected = librosa.feature.mfcc(y=y, sr=RATE, n_mfcc=20)
    assert latents.shape == (60, 44)
    np.testing.assert_allclose(latents[:20], expected[:, :44], atol=1e-3)
    logmel = FeaturesBackend(FEATURE_SPECS["logmel"]).encode(y[None, None]).latents[0]
    assert logmel.shape == (128, 44)


async def test_features_through_the_service(make_runtime: Callable[..., Runtime]) -> None:
    service = make_runtime(models=["encodec_48khz", "mfcc", "logmel", "chroma"]).service
    y = np.random.default_rng(1).standard_normal((1, 12 * RATE)).astype(np.float32) * 0.1
    whole = librosa.feature.mfcc(y=y[0], sr=RATE, n_mfcc=20)
    result = await service.embed(
        AudioSource(array=y, sample_rate=RATE), EmbedOptions(model="mfcc", frames=True)
    )
    assert result.num_windows == 2 and result.frames is not None and result.frames.shape == (517, 60)
    err = np.abs(result.frames[:, :20].T - whole).max(axis=0)
    assert err[429] > 1e-3 and np.delete(err, 429).max() < 1e-4  # only the frame before the chunk boundary
    fingerprints = {
        service.model(m).weights_fingerprint for m in ("mfcc", "logmel", "chroma", "encodec_48khz")
    }
    assert len(fingerprints) == 4  # four spaces: collections keep them apart
    chroma = await service.embed(AudioSource(array=y, sample_rate=RATE), EmbedOptions(model="chroma"))
    assert chroma.vector.shape == (12,)


async def test_features_have_no_codes_and_no_decoder(make_runtime: Callable[..., Runtime]) -> None:
    service = make_runtime(models=["mfcc"]).service
    source = AudioSource(array=np.zeros((1, RATE), np.float32), sample_rate=RATE)
    with pytest.raises(SonovecError) as caught:
        await service.encode(source, model="mfcc")
    assert caught.value.field == "bandwidth"
    with pytest.raises(SonovecError) as caught:
        await service.decode_latents(np.zeros((10, 60), np.float32), None, model="mfcc")
    assert caught.value.field == "model"


async def test_feature_collections_are_their_own_spaces(make_runtime: Callable[..., Runtime]) -> None:
    from sonovec.server.collections.options import CreateOptions
    from sonovec.server.collections.spec import NewItem, SpaceClaim

    runtime = make_runtime(models=["encodec_48khz", "mfcc"])
    collections = runtime.collections
    await collections.create("timbre-mfcc", CreateOptions(model="mfcc", pooling="mean_std"))
    rng = np.random.default_rng(2)
    sine = np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE)[None].astype(np.float32) * 0.3
    noisy = (rng.standard_normal((1, RATE)) * 0.3).astype(np.float32)
    items = [
        NewItem("sine", audio=AudioSource(array=sine, sample_rate=RATE)),
        NewItem("noise", audio=AudioSource(array=noisy, sample_rate=RATE)),
    ]
    await collections.upsert("timbre-mfcc", items)
    info = await collections.info("timbre-mfcc")
    assert info.space.model == "mfcc" and info.space.dim == 120
    with pytest.raises(SonovecError) as caught:  # an EnCodec vector does not go into an MFCC space
        await collections.upsert(
            "timbre-mfcc",
            [NewItem("x", vector=np.ones(128, np.float32))],
            space=SpaceClaim(model="encodec_48khz"),
        )
    assert caught.value.kind.value in ("conflict", "invalid_argument")
