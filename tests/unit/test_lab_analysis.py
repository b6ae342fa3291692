"""Sensitivity, ablation and space statistics of the latent lab, on answers known in advance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fakes import fake_settings
from timbres import clip

from sonovec.models.fake import FakeBackend
from sonovec.models.registry import get_spec
from sonovec.server.cache import LruCache
from sonovec.server.core import AudioSource, Service
from sonovec.server.lab import Lab, LabOptions
from sonovec.server.lab_analysis import DESCRIPTORS, Analysis, SensitivityOptions, space_statistics
from sonovec.server.metrics import Metrics

LOUD = 7  # the fake's dimension wired to loudness


@pytest.fixture
def analysis(tmp_path: Path) -> Iterator[Analysis]:
    spec = get_spec("encodec_24khz")
    settings = fake_settings(tmp_path, models=["encodec_24khz"])
    metrics = Metrics()
    backends = {spec.name: FakeBackend(spec, loudness_dim=LOUD)}  # dimension LOUD drives the level
    service = Service(settings, backends, metrics=metrics, cache=LruCache(100, metrics))
    service.start()
    yield Analysis(Lab(service))
    service.stop(timeout=10)


def tone(seed: int, seconds: float = 0.5) -> AudioSource:
    rng = np.random.default_rng(seed)
    return AudioSource(array=clip("sine", 330.0, rng, 24_000, seconds), sample_rate=24_000)


async def test_sensitivity_finds_the_loudness_dimension_first(analysis: Analysis) -> None:
    reference = [tone(s) for s in range(1, 4)]
    result = await analysis.sensitivity(tone(0), reference, SensitivityOptions(k=1.0, listen=2), LabOptions())
    assert result.ranked_by["rms"][0] == LOUD
    rms = result.effect[:, DESCRIPTORS.index("rms")]
    runner_up = np.sort(np.abs(rms))[-2]
    print(f"rms effect of dim {LOUD}: {rms[LOUD]:.4f}; the next largest: {runner_up:.4f}")
    assert rms[LOUD] > 0 and abs(rms[LOUD]) > 1.05 * runner_up
    assert set(result.listen) == set(result.ranked[:2]) and result.listen[result.ranked[0]][:4] == b"RIFF"
    table = result.table()
    assert len(table["rows"]) == 128 and table["rows"][LOUD]["dim"] == LOUD
    png = result.heatmap_png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


async def test_zero_perturbation_changes_nothing(analysis: Analysis) -> None:
    result = await analysis.sensitivity(
        tone(0), [], SensitivityOptions(dims=[0, LOUD, 50], k=0.0), LabOptions()
    )
    assert np.all(result.mel_distance == 0) and np.all(np.nan_to_num(result.effect) == 0)


async def test_ablation_of_every_dimension_is_large(analysis: Analysis) -> None:
    result = await analysis.ablation(tone(0), "zero", None, LabOptions())
    assert result.all_waveform_error >= 0.99  # zero latents decode to silence here
    assert result.all_mel_distance > 20 * float(np.median(result.mel_distance))
    assert result.table()["ranked"][0] == LOUD or result.mel_distance.max() > 0
    mean = await analysis.ablation(tone(0), "mean", [LOUD, 3], LabOptions())
    assert mean.waveform_error.shape == (2,) and np.all(mean.waveform_error > 0)


async def test_statistics_of_a_set(analysis: Analysis) -> None:
    stats = await analysis.statistics([tone(s) for s in range(3)], LabOptions())
    table = stats.table()
    assert stats.num_frames == 3 * 38 and len(table["mean"]) == 128
    assert sum(table["explained_variance_ratio"]) == pytest.approx(1.0)
    assert stats.png()[:4] == b"\x89PNG"


def test_space_statistics_of_known_frames() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((500, 1))
    frames = np.hstack([base, 2 * base, rng.standard_normal((500, 2)) * 0.01])
    stats = space_statistics(frames)
    assert stats.correlation[0, 1] == pytest.approx(1.0)
    assert stats.explained_variance[0] > 0.99 and stats.table()["components_for_90_percent"] == 1


@pytest.mark.parametrize(("dims", "k"), [([200], 1.0), ([1, 1], 1.0), ([0], 11.0)])
async def test_bad_options_are_invalid(analysis: Analysis, dims: list[int], k: float) -> None:
    from sonovec.server.errors import SonovecError

    with pytest.raises(SonovecError) as caught:
        await analysis.sensitivity(tone(0), [], SensitivityOptions(dims=dims, k=k), LabOptions())
    assert caught.value.field in ("dims", "k")
