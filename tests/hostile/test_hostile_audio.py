"""Hostile audio against a live server: decompression bombs in every format, lying headers,
truncated files, and sample values that break the model. Each case: the expected status, the
server's peak RSS bounded, the server still serving (the ``peak`` fixture checks that last)."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
from audiofiles import encode, tone

from hostile.bombs import constant, wav_claiming, wav_header
from hostile.conftest import MAX_AUDIO_SECONDS, Live, MiB, PeakProbe

pytestmark = pytest.mark.integration


def embed_file(live: Live, data: bytes) -> tuple[int, dict]:
    response = live.http.post("/v1/embed", files={"audio": ("a", data)})
    return response.status_code, response.json()


def embed_pcm(live: Live, samples: np.ndarray, sample_rate: int = 48_000) -> tuple[int, dict]:
    """Raw interleaved float32 PCM [T, C] in a JSON body."""
    audio = {
        "data": base64.b64encode(np.ascontiguousarray(samples, "<f4").tobytes()).decode(),
        "encoding": "pcm_f32le",
        "sample_rate": sample_rate,
        "channels": samples.shape[1],
    }
    response = live.http.post("/v1/embed", json={"audio": audio})
    return response.status_code, response.json()


def assert_error(status: int, body: dict, want_status: int, kind: str, field: str = "audio") -> None:
    assert status == want_status, body
    assert body["error"]["kind"] == kind, body
    assert body["error"].get("field") == field, body


# ---- decompression bombs ----


def test_384khz_8_channel_flac_decodes_in_bounded_memory(live: Live, peak: PeakProbe) -> None:
    """30 s at 384 kHz x 8 channels is 92 M samples (368 MB as float32) in a 100 KB FLAC. Decoded
    block by block straight to 48 kHz stereo it needs the output (11.5 MB) twice while decoding,
    then once more as the model's windows: ~35 MB, where the whole source as float32 is 368 MB."""
    data = constant(30, 384_000, 8, "flac")
    assert len(data) < 200_000
    status, body = embed_file(live, data)
    assert status == 200, body
    assert body["duration_s"] == pytest.approx(30, abs=0.01)
    assert all(math.isfinite(v) for v in body["embedding"])
    peak.assert_below(64 * MiB)


@pytest.mark.parametrize("fmt", ["flac", "ogg", "opus", "mp3", "wav"])
def test_recordings_over_the_duration_limit_are_refused_while_decoding(
    live: Live, peak: PeakProbe, fmt: str
) -> None:
    rate = 8_000 if fmt == "wav" else 48_000  # a WAV of 70 s within the 2 MiB upload limit
    data = constant(MAX_AUDIO_SECONDS + 10, rate, 1 if fmt == "wav" else 2, fmt)
    status, body = embed_file(live, data)
    assert_error(status, body, 413, "payload_too_large")
    assert "60 s" in body["error"]["message"]
    peak.assert_below(32 * MiB)


# ---- lying and odd headers ----


def test_wav_claiming_5_hours_over_1_second_is_accepted_with_a_warning(live: Live, peak: PeakProbe) -> None:
    status, body = embed_file(live, wav_claiming(48_000 * 4 * 3600 * 5))
    assert status == 200, body
    assert body["duration_s"] == pytest.approx(1.0, abs=0.01)
    assert body["warnings"] and "truncated" in body["warnings"][0]
    peak.assert_below(16 * MiB)


@pytest.mark.parametrize(
    ("rate", "channels", "status", "kind"),
    [(0, 2, 415, "unsupported_media_type"), (10_000_000, 2, 422, "invalid_argument"),
     (48_000, 64, 413, "payload_too_large"), (999, 1, 422, "invalid_argument")],
)
def test_impossible_headers_are_refused(
    live: Live, peak: PeakProbe, rate: int, channels: int, status: int, kind: str
) -> None:
    got, body = embed_file(live, wav_header(rate, channels))
    assert_error(got, body, status, kind)
    peak.assert_below(16 * MiB)


def test_a_hundred_bytes_that_look_like_mp3_get_a_clear_message(live: Live, peak: PeakProbe) -> None:
    status, body = embed_file(live, b"\xff\xfb\x90\x00" + bytes(96))
    assert_error(status, body, 415, "unsupported_media_type")
    assert "pipe" not in body["error"]["message"]
    assert "not a recognised audio file" in body["error"]["message"]


@pytest.mark.parametrize("fmt", ["wav", "ogg", "opus", "mp3"])
def test_files_cut_in_half_are_accepted_with_a_warning(live: Live, peak: PeakProbe, fmt: str) -> None:
    data = encode(tone(4.0, 48_000, 2, seed=3), 48_000, fmt)
    status, body = embed_file(live, data[: len(data) // 2])
    assert status == 200, body
    assert body["warnings"] and "truncated" in body["warnings"][0], body["warnings"]
    assert 0.5 < body["duration_s"] < 3.5


@pytest.mark.parametrize("fmt", ["wav", "ogg", "opus", "mp3", "flac"])
def test_whole_files_carry_no_warning(live: Live, fmt: str) -> None:
    status, body = embed_file(live, encode(tone(2.0, 48_000, 2, seed=4), 48_000, fmt))
    assert status == 200, body
    assert body["warnings"] == []


def test_flac_cut_in_half_is_refused_as_corrupt(live: Live, peak: PeakProbe) -> None:
    data = encode(tone(4.0, 48_000, 2, seed=5), 48_000, "flac")
    status, body = embed_file(live, data[: len(data) // 2])
    assert_error(status, body, 422, "invalid_argument")
    assert "truncated" in body["error"]["message"]


def test_two_files_under_one_audio_field_are_refused(live: Live) -> None:
    clip = encode(tone(1.0, 48_000, 2), 48_000, "wav")
    response = live.http.post("/v1/embed", files=[("audio", ("a", clip)), ("audio", ("b", clip))])
    assert_error(response.status_code, response.json(), 422, "invalid_argument")


# ---- sample values ----


@pytest.mark.parametrize("value", [3e38, 1e30, 1e6, -1e4])
def test_huge_finite_samples_are_refused_naming_the_input(live: Live, peak: PeakProbe, value: float) -> None:
    status, body = embed_pcm(live, np.full((48_000, 2), value, np.float32))
    assert_error(status, body, 422, "invalid_argument")
    assert "+-100" in body["error"]["allowed"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_samples_are_refused(live: Live, value: float) -> None:
    samples = tone(1.0, 48_000, 2).T.copy()
    samples[1000] = value
    status, body = embed_pcm(live, samples)
    assert_error(status, body, 422, "invalid_argument")
    assert "NaN or infinite" in body["error"]["message"]


def test_samples_just_under_the_bound_give_a_finite_vector(live: Live) -> None:
    status, body = embed_pcm(live, 99.0 * tone(1.0, 48_000, 2).T / 0.6)
    assert status == 200, body
    assert all(math.isfinite(v) for v in body["embedding"]) and any(body["embedding"])


def test_denormal_samples_are_silence(live: Live) -> None:
    status, body = embed_pcm(live, np.full((48_000, 2), 1e-40, np.float32))
    assert_error(status, body, 422, "invalid_argument")
    assert "silent" in body["error"]["message"]


def test_denormals_within_music_are_harmless(live: Live) -> None:
    samples = tone(1.0, 48_000, 2).T.copy()
    samples[::3] = 1e-40
    status, body = embed_pcm(live, samples)
    assert status == 200, body
    assert all(math.isfinite(v) for v in body["embedding"])


def test_huge_samples_never_reach_a_collection(live: Live) -> None:
    live.http.post("/v1/collections", json={"name": "finite"})
    audio = {
        "data": base64.b64encode(np.full((48_000, 2), 3e38, "<f4").tobytes()).decode(),
        "encoding": "pcm_f32le", "sample_rate": 48_000, "channels": 2,
    }
    response = live.http.post("/v1/collections/finite/items", json={"items": [{"id": "x", "audio": audio}]})
    assert_error(response.status_code, response.json(), 422, "invalid_argument", "items[0].audio")
    assert live.http.get("/v1/collections/finite/items/x").status_code == 404
