"""The latent lab over REST and gRPC, through the client: the same as the core called directly."""

from __future__ import annotations

import numpy as np
import pytest

from sonovec.client import Client, Latents, SonovecClientError
from sonovec.server.core import AudioSource
from sonovec.server.lab import Lab, LabOptions

from .conftest import Reference, clip

pytestmark = pytest.mark.contract

A = clip(1.3, 44_100, 2, seed=11)
B = clip(1.3, 44_100, 2, seed=12)


def test_latents_and_decode(client: Client, reference: Reference) -> None:
    want = reference.run(lambda s: s.latents(AudioSource(data=A)))
    got = client.lab_latents(A)
    np.testing.assert_array_equal(got.frames, want.frames)
    np.testing.assert_array_equal(got.scales, want.scales)
    assert got.num_samples == want.num_samples and got.model == "encodec_48khz"
    decoded = client.lab_decode(got, subtype="FLOAT")
    expected = reference.run(lambda s: Lab(s).decode_input(AudioSource(data=A), LabOptions()))
    np.testing.assert_array_equal(decoded.audio, expected.audio.audio)
    assert decoded.sample_rate == 48_000 and decoded.audio.shape == (2, want.num_samples)


def test_interpolation_endpoints_and_chaining(client: Client) -> None:
    at1 = client.lab_interpolate(A, B, t=1.0, subtype="FLOAT")
    of_b = client.lab_decode(client.lab_latents(B), subtype="FLOAT")
    np.testing.assert_allclose(at1.audio, of_b.audio, rtol=1e-5, atol=1e-7)
    path = client.lab_path(A, B, steps=3, subtype="FLOAT")
    assert len(path) == 3
    np.testing.assert_allclose(path[-1].audio, of_b.audio, rtol=1e-5, atol=1e-7)
    half = path[1].latents
    chained = client.lab_style(half, A, amount=0.5)  # a result's latents as an input
    assert chained.latents.frames.shape == half.frames.shape
    mixed = client.lab_mix([A, half, B], [1, 1, 2])
    offset = client.lab_offset(A, B, mixed.latents, alpha=0.5)
    assert offset.audio.shape == mixed.audio.shape


def test_analysis(client: Client) -> None:
    sens = client.lab_sensitivity(A, reference=[B], dims=[1, 4], k=1.0, listen=1)
    assert [row["dim"] for row in sens.table["rows"]] == [1, 4] and sens.png[:4] == b"\x89PNG"
    assert len(sens.listen) == 1 and next(iter(sens.listen.values()))[:4] == b"RIFF"
    ablation = client.lab_ablation(A, mode="mean", dims=[0, 1, 2])
    assert len(ablation.table["rows"]) == 3 and ablation.table["all"]["waveform_error"] > 0
    stats = client.lab_statistics([A, B])
    assert stats.table["num_frames"] > 300 and stats.png[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda c: c.lab_interpolate(A, B, t=2.0), "t"),
        (lambda c: c.lab_decode(Latents(np.zeros((5, 3), np.float32), np.ones(1), 1600)), "latents.frames"),
        (lambda c: c.lab_mix([A, B], [1.0]), "weights"),
        (lambda c: c.lab_ablation(A, mode="half"), "mode"),
        (lambda c: c.lab_sensitivity(A, dims=[999]), "dims"),
    ],
)
def test_bad_input_is_the_same_error(client: Client, call: object, field: str) -> None:
    with pytest.raises(SonovecClientError) as caught:
        call(client)  # type: ignore[operator]
    assert caught.value.kind == "invalid_argument" and caught.value.field == field
