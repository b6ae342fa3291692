"""Real audio for tests: tones and chords with a little noise, written with soundfile.

``tone`` gives each channel its own chord, so tests can tell channels apart after mixing.
``write_tone`` / ``write_array`` write real files in any of ``FORMATS``; ``encode`` returns bytes.
Lossy codecs only take some sample rates: Opus 8/12/16/24/48 kHz, MP3 8 to 48 kHz.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

# our name -> (libsndfile format, subtype)
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "wav_float": ("WAV", "FLOAT"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aiff": ("AIFF", "PCM_16"),
}
LOSSLESS = ("wav", "wav_float", "flac", "aiff")

_ROOTS_HZ = (220.0, 330.0, 275.0, 440.0, 196.0, 523.25, 247.0, 392.0)  # one chord root per channel


def tone(seconds: float, sample_rate: int, channels: int = 1, *, seed: int = 0) -> np.ndarray:
    """[C, T] float32: channel c is a major triad on its own root, peak about 0.5, plus noise at -50 dB."""
    frames = round(seconds * sample_rate)
    t = np.arange(frames) / sample_rate
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(channels):
        root = _ROOTS_HZ[c % len(_ROOTS_HZ)] * (1 + c // len(_ROOTS_HZ))
        chord = sum(np.sin(2 * np.pi * root * ratio * t + c) for ratio in (1.0, 1.25, 1.5)) / 6
        rows.append(chord + 0.003 * rng.standard_normal(frames))
    return np.asarray(rows, dtype=np.float32).reshape(channels, frames)


def chord_batch(seconds: float, sample_rate: int, channels: int, batch: int, seed: int) -> np.ndarray:
    """``[batch, channels, T]`` float32 model input: one chord with a little noise, a different level
    per item (what the backend accuracy tests feed every backend)."""
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    chord = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220.0, 277.2, 329.6, 1200.0))
    x = 0.2 * chord + 0.02 * rng.standard_normal((batch, channels, n))
    return (x * rng.uniform(0.1, 1.0, (batch, 1, 1))).astype(np.float32)


def encode(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """The bytes of ``samples`` [C, T] as a ``fmt`` file (a key of ``FORMATS``). Pass int16 samples
    to control quantisation: libsndfile rounds float to PCM_16 differently in WAV and FLAC."""
    major, subtype = FORMATS[fmt]
    buffer = io.BytesIO()
    sf.write(buffer, np.ascontiguousarray(samples.T), sample_rate, format=major, subtype=subtype)
    return buffer.getvalue()


def write_array(path: str | Path, samples: np.ndarray, sample_rate: int, fmt: str) -> Path:
    """Write ``samples`` [C, T] to ``path`` as ``fmt``; return the path."""
    path = Path(path)
    path.write_bytes(encode(samples, sample_rate, fmt))
    return path


def write_tone(
    path: str | Path, seconds: float, sample_rate: int, channels: int = 1, fmt: str = "wav", *, seed: int = 0
) -> np.ndarray:
    """Write ``tone(seconds, sample_rate, channels)`` to ``path`` as ``fmt``; return the samples
    written [C, T] (before any lossy coding)."""
    samples = tone(seconds, sample_rate, channels, seed=seed)
    write_array(path, samples, sample_rate, fmt)
    return samples
