"""The HEAR API module over a live server, REST and gRPC: the checks of the HEAR validator
(``hearvalidator`` pulls TensorFlow, too heavy here: its checks are reproduced), and the frames and
times the service gives, minus the 48 kHz segment overlaps."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from audiofiles import tone
from servers import ServerProcess

from sonovec.client import Client, hear

from .conftest import API_KEY, url_of

pytestmark = pytest.mark.contract


@pytest.fixture
def model(server: ServerProcess, transport: str) -> Iterator[hear.SonovecHearModel]:
    loaded = hear.load_model(f"{url_of(server, transport)}?model=encodec_48khz&api_key={API_KEY}")
    yield loaded
    loaded.close()


def sounds(n: int, seconds: float, rate: int, seed: int) -> np.ndarray:
    """[n, samples] float32 mono, each sound different."""
    return np.stack([tone(seconds, rate, 1, seed=seed + i)[0] for i in range(n)])


def test_attributes(model: hear.SonovecHearModel) -> None:
    assert isinstance(model.sample_rate, int) and model.sample_rate == 48_000
    assert isinstance(model.scene_embedding_size, int) and model.scene_embedding_size == 128
    assert isinstance(model.timestamp_embedding_size, int) and model.timestamp_embedding_size == 128


def test_scene_embeddings_validator_checks(model: hear.SonovecHearModel) -> None:
    audio = sounds(3, 1.5, model.sample_rate, seed=300)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and scene.dtype == np.float32
    again = hear.get_scene_embeddings(audio, model)
    np.testing.assert_array_equal(scene, again)  # deterministic
    one = hear.get_scene_embeddings(audio[1:2], model)
    np.testing.assert_allclose(one[0], scene[1], atol=1e-6)  # batch equals single
    assert not np.allclose(scene[0], scene[1])


def test_timestamp_embeddings_validator_checks(model: hear.SonovecHearModel) -> None:
    audio = sounds(2, 2.5, model.sample_rate, seed=310)  # three 1 s segments: two overlaps
    frames, times = hear.get_timestamp_embeddings(audio, model)
    assert frames.ndim == 3 and frames.shape[0] == 2 and frames.shape[2] == model.timestamp_embedding_size
    assert times.shape == frames.shape[:2]
    assert frames.dtype == np.float32 and times.dtype == np.float32
    assert np.all(np.diff(times, axis=1) > 0)  # HEAR: increasing timestamps
    np.testing.assert_array_equal(times[0], times[1])  # one length, one grid
    assert times[0, 0] >= 0 and times[0, -1] <= 2500
    frames2, times2 = hear.get_timestamp_embeddings(audio, model)
    np.testing.assert_array_equal(frames, frames2)
    np.testing.assert_array_equal(times, times2)


def test_timestamps_are_the_services_minus_overlaps(server: ServerProcess, transport: str) -> None:
    model = hear.load_model(f"{url_of(server, transport)}?api_key={API_KEY}&model=encodec_48khz")
    audio = sounds(1, 2.5, model.sample_rate, seed=320)
    frames, times = hear.get_timestamp_embeddings(audio, model)
    with Client(url_of(server, transport), api_key=API_KEY) as client:
        want = client.embed(audio[0], sample_rate=model.sample_rate, frames=True)
    model.close()
    assert want.frames is not None and want.frame_times_s is not None
    steps = np.diff(want.frame_times_s)
    assert (steps < 0).sum() == 2  # the service's times step back at each of the two boundaries
    keep = hear.increasing(want.frame_times_s)
    assert len(keep) == len(want.frame_times_s) - 2  # one frame dropped per boundary
    np.testing.assert_allclose(times[0], want.frame_times_s[keep] * 1000, rtol=1e-6)
    np.testing.assert_allclose(frames[0], want.frames[keep], atol=1e-6)


def test_24khz_keeps_every_frame(server: ServerProcess) -> None:
    model = hear.load_model(f"{server.url}?model=encodec_24khz&api_key={API_KEY}&pooling=mean_std")
    audio = sounds(2, 2.5, model.sample_rate, seed=330)
    frames, times = hear.get_timestamp_embeddings(audio, model)
    scene = hear.get_scene_embeddings(audio, model)
    model.close()
    assert model.sample_rate == 24_000 and model.scene_embedding_size == 2 * model.timestamp_embedding_size
    assert scene.shape == (2, model.scene_embedding_size)
    assert frames.shape[1] == 188  # ceil(2.5 * 75): the 24 kHz times only increase, none dropped
    assert np.all(np.diff(times, axis=1) > 0)


def test_torch_tensors_in_torch_tensors_out(model: hear.SonovecHearModel) -> None:
    audio = sounds(2, 1.0, model.sample_rate, seed=340)
    scene = hear.get_scene_embeddings(torch.from_numpy(audio), model)
    assert isinstance(scene, torch.Tensor) and scene.dtype == torch.float32
    np.testing.assert_array_equal(scene.numpy(), hear.get_scene_embeddings(audio, model))
    frames, times = hear.get_timestamp_embeddings(torch.from_numpy(audio), model)
    assert isinstance(frames, torch.Tensor) and isinstance(times, torch.Tensor)


def test_json_file_and_bad_locations(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "sonovec.json"
    path.write_text(json.dumps({"url": server.url, "model": "encodec_24khz", "api_key": API_KEY}))
    model = hear.load_model(str(path))
    assert model.model == "encodec_24khz" and model.sample_rate == 24_000
    model.close()
    with pytest.raises(ValueError, match="unknown options"):
        hear.load_model(f"{server.url}?modle=encodec_48khz")
    with pytest.raises(ValueError, match="sonovec URL"):
        hear.load_model(str(tmp_path / "missing.json"))
