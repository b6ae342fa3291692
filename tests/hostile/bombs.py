"""Hostile audio files, written block by block so that the test process never holds them decoded."""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf
from audiofiles import FORMATS


def constant(seconds: float, sample_rate: int, channels: int, fmt: str, level: float = 0.25) -> bytes:
    """``seconds`` of a constant level (compresses to almost nothing in FLAC, OGG, MP3)."""
    major, subtype = FORMATS[fmt]
    buffer = io.BytesIO()
    block = np.full((1 << 16, channels), level, np.float32)
    frames = round(seconds * sample_rate)
    with sf.SoundFile(buffer, "w", sample_rate, channels, subtype, format=major) as out:
        for start in range(0, frames, len(block)):
            out.write(block[: min(len(block), frames - start)])
    return buffer.getvalue()


def wav_claiming(data_bytes: int, seconds: float = 1.0, sample_rate: int = 48_000) -> bytes:
    """A 16-bit stereo WAV of ``seconds`` whose data chunk claims ``data_bytes``."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    x = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([x, x], 1), sample_rate, format="WAV", subtype="PCM_16")
    raw = bytearray(buffer.getvalue())
    at = raw.find(b"data")
    raw[at + 4 : at + 8] = struct.pack("<I", data_bytes)
    return bytes(raw)


def wav_header(sample_rate: int, channels: int, frames: int = 100) -> bytes:
    """A hand-made PCM_16 WAV header with any sample rate and channel count, then ``frames`` frames."""
    data = np.full(frames * channels, 1000, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    body = b"WAVE" + chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body
