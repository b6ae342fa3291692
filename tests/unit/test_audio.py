"""Audio ingestion on real files written by the tests: formats, layouts, limits, bad input."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from audiofiles import LOSSLESS, encode, tone, write_array, write_tone

from sonovec.server import audio
from sonovec.server.audio import (
    SUPPORTED_FORMATS,
    AudioLimits,
    PcmFormat,
    Recording,
    canonical_digest,
    decode_audio,
    from_array,
)
from sonovec.server.errors import ErrorKind, SonovecError

LIMITS = AudioLimits(max_bytes=64 * 2**20, max_seconds=10.0, max_channels=8)
FIELD = "file"


def decode(data: bytes, rate: int = 48_000, channels: int = 2, **kwargs) -> Recording:
    kwargs.setdefault("limits", LIMITS)
    return decode_audio(data, target_rate=rate, target_channels=channels, field=FIELD, **kwargs)


def ingest(samples: np.ndarray, rate: int = 48_000) -> Recording:
    return from_array(samples, rate, target_rate=48_000, target_channels=2, limits=LIMITS, field=FIELD)


def refused(kind: ErrorKind, call, *words: str) -> SonovecError:
    """Run ``call``; check it raised ``kind`` on FIELD, says what is allowed, and names ``words``."""
    with pytest.raises(SonovecError) as caught:
        call()
    err = caught.value
    assert err.kind is kind, err
    assert err.field == FIELD
    assert err.allowed
    for word in words:
        assert word in err.message, (word, err.message)
    return err


def wav_header(frames: int, sample_rate: int, channels: int = 1, bits: int = 8) -> bytes:
    """A PCM WAV header whose data chunk claims ``frames`` frames, whatever follows it."""
    block = channels * bits // 8
    size = frames * block
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * block, block, bits)
    riff = b"RIFF" + struct.pack("<I", 36 + size) + b"WAVE"
    return riff + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size)


def flac_claiming(data: bytes, total_frames: int) -> bytes:
    """``data`` (a FLAC file) with STREAMINFO's 36-bit total-samples field set to ``total_frames``."""
    out = bytearray(data)
    assert out[:4] == b"fLaC" and out[4] & 0x7F == 0  # STREAMINFO is the first metadata block
    at = 8 + 13  # "fLaC", block header, then 13 bytes into STREAMINFO
    out[at] = (out[at] & 0xF0) | (total_frames >> 32)
    out[at + 1 : at + 5] = (total_frames & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)


def can_write(fmt: str) -> bool:
    try:
        encode(tone(0.1, 48_000), 48_000, fmt)
    except (sf.LibsndfileError, TypeError, ValueError):
        return False
    return True


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, src_rate, src_channels, rate, channels",
    [
        ("wav", 44_100, 1, 48_000, 2),
        ("wav_float", 48_000, 2, 24_000, 1),
        ("flac", 16_000, 2, 48_000, 2),
        ("ogg", 44_100, 2, 24_000, 1),
        ("opus", 48_000, 1, 48_000, 2),
        ("mp3", 44_100, 2, 48_000, 2),
        ("aiff", 22_050, 1, 24_000, 1),
    ],
)
def test_files_decode_to_target_rate_and_layout(tmp_path, fmt, src_rate, src_channels, rate, channels):
    if not can_write(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}")
    path = tmp_path / f"tone.{fmt}"
    write_tone(path, 1.5, src_rate, src_channels, fmt)
    rec = decode(path.read_bytes(), rate, channels)
    assert rec.samples.shape[0] == channels
    assert abs(rec.num_samples - 1.5 * rate) <= 1
    assert rec.samples.dtype == np.float32 and rec.samples.flags.c_contiguous
    assert (rec.sample_rate, rec.source_sample_rate, rec.source_channels) == (rate, src_rate, src_channels)
    assert rec.source_format == {"wav_float": "wav"}.get(fmt, fmt)
    assert rec.duration_s == pytest.approx(1.5, abs=1 / rate)


@pytest.mark.parametrize("fmt", ["wav", "flac", "aiff", "ogg", "opus", "mp3"])
def test_decoded_content_matches_what_was_written(fmt):
    if not can_write(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}")
    written = tone(1.0, 48_000, 2)
    rec = decode(encode(written, 48_000, fmt))
    if fmt in LOSSLESS:  # 16-bit: exact up to quantisation
        np.testing.assert_allclose(rec.samples, written, atol=1 / 32768)
    else:  # lossy, but aligned and close
        for got, want in zip(rec.samples, written, strict=True):
            assert np.corrcoef(got, want)[0, 1] > 0.95


def test_raw_pcm_f32le_and_s16le():
    written = tone(0.5, 16_000, 2)
    interleaved = np.ascontiguousarray(written.T)
    rec = decode(interleaved.astype("<f4").tobytes(), 16_000, 2, pcm=PcmFormat("f32le", 16_000, 2))
    np.testing.assert_array_equal(rec.samples, written)
    assert rec.source_format == "pcm_f32le"

    ints = np.round(interleaved * 32767).astype("<i2")
    rec = decode(ints.tobytes(), 24_000, 1, pcm=PcmFormat("s16le", 16_000, 2))
    assert rec.source_format == "pcm_s16le" and rec.samples.shape == (1, 12_000)
    same_rate = decode(ints.tobytes(), 16_000, 2, pcm=PcmFormat("s16le", 16_000, 2))
    np.testing.assert_array_equal(same_rate.samples, ints.T / np.float32(32768))


def test_from_array_takes_mono_and_channels_first():
    written = tone(0.5, 24_000, 2).astype(np.float64)
    rec = from_array(written, 24_000, target_rate=24_000, target_channels=1, limits=LIMITS)
    np.testing.assert_allclose(rec.samples[0], written.mean(axis=0), atol=1e-7)
    assert rec.source_format == "array" and rec.source_channels == 2
    mono = from_array(written[0], 24_000, target_rate=48_000, target_channels=2, limits=LIMITS)
    assert mono.samples.shape == (2, 24_000) and mono.source_channels == 1


def test_nothing_is_clipped():
    loud = tone(0.2, 48_000, 2) * 3  # peak about 1.5
    rec = decode(encode(loud, 48_000, "wav_float"))
    np.testing.assert_array_equal(rec.samples, loud)
    assert rec.samples.max() > 1.2


# --- channel layout ------------------------------------------------------------------------------


def test_mono_to_stereo_duplicates():
    written = tone(0.3, 48_000, 1)
    rec = decode(encode(written, 48_000, "wav_float"), 48_000, 2)
    np.testing.assert_array_equal(rec.samples, np.repeat(written, 2, axis=0))


def test_stereo_to_mono_is_the_mean():
    written = tone(0.3, 48_000, 2)
    rec = decode(encode(written, 48_000, "wav_float"), 48_000, 1)
    np.testing.assert_allclose(rec.samples[0], (written[0] + written[1]) / 2, atol=1e-7)


@pytest.mark.parametrize("src_channels", [3, 6])
def test_many_channels_to_stereo_mean_even_left_odd_right(src_channels):
    written = tone(0.3, 48_000, src_channels)
    rec = decode(encode(written, 48_000, "wav_float"), 48_000, 2)
    np.testing.assert_allclose(rec.samples[0], written[0::2].mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(rec.samples[1], written[1::2].mean(axis=0), atol=1e-7)
    if src_channels == 3:
        np.testing.assert_array_equal(rec.samples[1], written[1])


# --- digest --------------------------------------------------------------------------------------


def test_digest_same_for_lossless_containers_and_differs_for_other_audio():
    # int16 in: libsndfile's float -> PCM_16 writers round differently for WAV and FLAC
    written = np.round(tone(0.5, 44_100, 2) * 32767).astype(np.int16)
    via_wav, via_flac = (decode(encode(written, 44_100, fmt)) for fmt in ("wav", "flac"))
    np.testing.assert_array_equal(via_wav.samples, via_flac.samples)
    assert canonical_digest(via_wav) == canonical_digest(via_flac)
    other = decode(encode(tone(0.5, 44_100, 2, seed=1), 44_100, "wav"))
    assert canonical_digest(other) != canonical_digest(via_wav)


def test_digest_covers_rate_and_channels():
    samples = tone(0.1, 24_000, 2)
    rec = Recording(samples, 24_000, 24_000, 2, "array")
    flat = Recording(samples.reshape(1, -1), 24_000, 24_000, 1, "array")
    slower = Recording(samples, 16_000, 16_000, 2, "array")
    digests = {canonical_digest(r) for r in (rec, flat, slower)}
    assert len(digests) == 3 and all(len(d) == 64 for d in digests)


# --- bad input -----------------------------------------------------------------------------------


def test_empty_body():
    refused(ErrorKind.INVALID, lambda: decode(b""), "empty")


def test_body_over_max_bytes():
    data = encode(tone(0.5, 48_000), 48_000, "wav")
    small = AudioLimits(max_bytes=1000, max_seconds=10, max_channels=2)
    refused(ErrorKind.TOO_LARGE, lambda: decode(data, limits=small), str(len(data)), "1000")


def test_unknown_format_lists_supported():
    err = refused(
        ErrorKind.UNSUPPORTED, lambda: decode(b"this is not audio at all" * 20), "Format not recognised"
    )
    assert all(name in err.allowed for name in SUPPORTED_FORMATS)


def test_formats_libsndfile_knows_but_we_do_not_accept():
    buffer = io.BytesIO()
    sf.write(buffer, tone(0.2, 16_000).T, 16_000, format="AU")
    refused(ErrorKind.UNSUPPORTED, lambda: decode(buffer.getvalue()), "AU", "not accepted")


def test_truncated_ogg_fails_to_open():
    data = encode(tone(1.0, 48_000), 48_000, "ogg")
    refused(ErrorKind.UNSUPPORTED, lambda: decode(data[:200]), "could not decode", "malformed")


def test_corrupt_flac_stream_fails_mid_read():
    data = encode(tone(2.0, 16_000), 16_000, "flac")
    refused(ErrorKind.INVALID, lambda: decode(data[: len(data) // 2]), "corrupt or truncated", "flac")


def test_wav_without_samples():
    refused(ErrorKind.INVALID, lambda: decode(wav_header(0, 16_000)), "zero samples")


def test_nan_and_inf_are_counted():
    samples = tone(0.2, 48_000, 2)
    samples[0, 10] = np.nan
    samples[1, 20:22] = [np.inf, -np.inf]
    refused(ErrorKind.INVALID, lambda: decode(encode(samples, 48_000, "wav_float")), "3 of 19200", "NaN")
    pcm = PcmFormat("f32le", 48_000, 2)
    refused(ErrorKind.INVALID, lambda: decode(samples.T.astype("<f4").tobytes(), pcm=pcm), "3 of")
    refused(ErrorKind.INVALID, lambda: ingest(samples), "3 of")


def test_too_short_to_survive_resampling():
    data = np.full(5, 0.5, "<f4").tobytes()  # 5 frames at 384 kHz are a sixteenth of a frame at 24 kHz
    pcm = PcmFormat("f32le", 384_000, 1)
    refused(ErrorKind.INVALID, lambda: decode(data, 24_000, 1, pcm=pcm), "too short")


@pytest.mark.parametrize("level", [0.0, 5e-8])
def test_digital_silence(level):
    quiet = np.full((1, 4800), level, np.float32)
    refused(ErrorKind.INVALID, lambda: decode(encode(quiet, 48_000, "wav_float")), "recording is silent")


def test_declared_duration_over_limit():
    data = encode(tone(12.0, 8_000), 8_000, "wav")
    refused(ErrorKind.TOO_LARGE, lambda: decode(data), "12.0 s", "10 s")


def test_too_many_channels():
    data = encode(tone(0.1, 8_000, 10), 8_000, "wav")
    refused(ErrorKind.TOO_LARGE, lambda: decode(data), "10 channels", "8")


def test_one_hour_header_refused_before_reading(monkeypatch):
    hour = 3600 * 8_000  # 8-bit mono at 8 kHz: 28.8 MB, so libsndfile believes the header
    data = wav_header(hour, 8_000) + b"\x80" * hour
    monkeypatch.setattr(audio, "_read_frames", lambda *a: pytest.fail("samples were read"))
    limits = AudioLimits(max_bytes=2**30, max_seconds=1800.0, max_channels=2)
    refused(ErrorKind.TOO_LARGE, lambda: decode(data, limits=limits), "3600.0 s", "1800 s")


def test_wav_header_claiming_more_or_fewer_frames():
    payload = (np.round(tone(1.0, 8_000)[0] * 127) + 128).astype(np.uint8).tobytes()
    more = decode(wav_header(80_000, 8_000) + payload, 8_000, 1)  # libsndfile trusts the file length
    assert more.num_samples == 8_000
    fewer = decode(wav_header(2_000, 8_000) + payload, 8_000, 1)  # and the data chunk over what follows
    assert fewer.num_samples == 2_000


def test_flac_header_claiming_more_fewer_or_unknown_frames():
    data = encode(tone(2.0, 16_000), 16_000, "flac")
    assert decode(flac_claiming(data, 1_000), 16_000, 1).num_samples == 1_000
    assert decode(flac_claiming(data, 0), 16_000, 1).num_samples == 32_000  # 0 = unknown (piped encoders)
    refused(ErrorKind.TOO_LARGE, lambda: decode(flac_claiming(data, 3600 * 16_000)), "3600.0 s")


def test_header_that_hides_its_length_stops_at_the_limit():
    data = flac_claiming(encode(tone(2.0, 16_000), 16_000, "flac"), 0)
    limits = AudioLimits(max_bytes=2**20, max_seconds=1.0, max_channels=2)
    refused(ErrorKind.TOO_LARGE, lambda: decode(data, limits=limits), "longer than the 1 s limit")


@pytest.mark.parametrize(
    "pcm, size, kind, words",
    [
        (PcmFormat("s16le", 16_000, 2), 4 * 100 + 2, ErrorKind.INVALID, ("not a whole number", "402")),
        (PcmFormat("f32le", 16_000, 1), 4 * 100 + 1, ErrorKind.INVALID, ("not a whole number",)),
        (PcmFormat("f32le", 500, 1), 4 * 100, ErrorKind.INVALID, ("500 Hz",)),
        (PcmFormat("f32le", 400_000, 1), 4 * 100, ErrorKind.INVALID, ("400000 Hz",)),
        (PcmFormat("f32le", 16_000, 0), 4 * 100, ErrorKind.INVALID, ("no channels",)),
        (PcmFormat("f32le", 16_000, 9), 4 * 9 * 100, ErrorKind.TOO_LARGE, ("9 channels",)),
        (PcmFormat("u8", 16_000, 1), 100, ErrorKind.UNSUPPORTED, ("'u8'",)),  # type: ignore[arg-type]
        (PcmFormat("f32le", 1_000, 1), 4 * 11_000, ErrorKind.TOO_LARGE, ("11.0 s",)),
    ],
)
def test_bad_raw_pcm(pcm, size, kind, words):
    data = np.full(size, 7, np.uint8).tobytes()
    refused(kind, lambda: decode(data, pcm=pcm), *words)


@pytest.mark.parametrize(
    "samples, words",
    [
        (np.ones((2, 100), np.int16), ("int16", "not floating point")),
        (np.ones((1, 2, 100), np.float32), ("(1, 2, 100)",)),
    ],
)
def test_bad_arrays(samples, words):
    refused(ErrorKind.INVALID, lambda: ingest(samples), *words)


def test_array_laid_out_time_first_is_refused_by_channel_count():
    samples = tone(0.1, 48_000, 2).T  # [T, C]: a common mistake
    refused(ErrorKind.TOO_LARGE, lambda: ingest(samples), "4800 channels")


def test_write_tone_writes_a_readable_file(tmp_path):
    written = write_tone(tmp_path / "t.flac", 0.25, 22_050, 3, "flac")
    read, rate = sf.read(tmp_path / "t.flac", dtype="float32", always_2d=True)
    assert rate == 22_050 and read.shape == (5_512, 3) == written.T.shape
    np.testing.assert_allclose(read.T, written, atol=1 / 32768)
    assert write_array(tmp_path / "s.wav", written, 22_050, "wav").stat().st_size > 0
