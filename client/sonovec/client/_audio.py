"""Audio in (file paths, bytes, numpy arrays) and WAV out, with numpy and the standard library only.

Files are sent as they are (the server decodes WAV, FLAC, OGG, Opus, MP3, AIFF); arrays are sent as
raw little-endian float32 PCM with their sample rate and channel count.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from sonovec.client._errors import INVALID, SonovecClientError


@dataclass(frozen=True)
class AudioData:
    """Audio as it goes on the wire: an encoded file (``encoding="auto"``), or raw interleaved PCM
    (``"pcm_f32le"`` / ``"pcm_s16le"``) with its ``sample_rate`` and ``channels``."""

    data: bytes
    encoding: str = "auto"
    sample_rate: int | None = None
    channels: int | None = None


AudioLike = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, np.ndarray, AudioData]


def to_audio(audio: AudioLike, sample_rate: int | None = None, field: str = "audio") -> AudioData:
    """A path (read as is), encoded bytes, an ``AudioData``, or a float array ``[T]`` or ``[C, T]``
    (needs ``sample_rate``)."""
    if isinstance(audio, AudioData):
        return audio
    if isinstance(audio, np.ndarray):
        return _from_array(audio, sample_rate, field)
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return AudioData(bytes(audio))
    if isinstance(audio, (str, os.PathLike)):
        return AudioData(Path(audio).read_bytes())
    raise TypeError(
        f"{field}: expected a path, bytes, AudioData or a numpy array, not {type(audio).__name__}"
    )


def _from_array(array: np.ndarray, sample_rate: int | None, field: str) -> AudioData:
    if sample_rate is None:
        raise SonovecClientError(
            INVALID,
            "an array needs its sample rate",
            field=f"{field}.sample_rate",
            allowed="sample_rate=... with a numpy array",
        )
    if array.dtype.kind != "f" or array.ndim not in (1, 2):
        raise SonovecClientError(
            INVALID,
            f"array of dtype {array.dtype} and shape {array.shape}",
            field=field,
            allowed="a float array shaped [T] or [C, T]",
        )
    channels_first = array[None, :] if array.ndim == 1 else array
    interleaved = np.ascontiguousarray(channels_first.T, dtype="<f4")
    return AudioData(interleaved.tobytes(), "pcm_f32le", int(sample_rate), int(channels_first.shape[0]))


def size_of(audio: AudioLike) -> int:
    """Bytes ``audio`` will take on the wire, without reading a file."""
    if isinstance(audio, AudioData):
        return len(audio.data)
    if isinstance(audio, np.ndarray):
        return audio.size * 4
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return len(audio)
    return os.path.getsize(audio)


# --- WAV ---------------------------------------------------------------------------------------

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(wav: bytes) -> tuple[np.ndarray, int]:
    """A RIFF/WAVE file (integer PCM 8/16/24/32 bit or float 32/64 bit) -> ``[C, T]`` float32, rate."""
    if len(wav) < 12 or wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt, data = _wav_chunks(wav)
    if fmt is None or data is None:
        raise ValueError("WAV file without fmt or data chunk")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the subformat GUID starts with the format tag
    samples = _wav_samples(data, tag, bits)
    frames = samples.size // channels
    return np.ascontiguousarray(samples[: frames * channels].reshape(frames, channels).T), int(rate)


def _wav_chunks(wav: bytes) -> tuple[bytes | None, bytes | None]:
    fmt = data = None
    offset = 12
    while offset + 8 <= len(wav):
        name, size = wav[offset : offset + 4], struct.unpack("<I", wav[offset + 4 : offset + 8])[0]
        body = wav[offset + 8 : offset + 8 + size]
        if name == b"fmt ":
            fmt = body
        elif name == b"data":
            data = body
        offset += 8 + size + (size & 1)
    return fmt, data


def _wav_samples(data: bytes, tag: int, bits: int) -> np.ndarray:
    if tag == _FLOAT and bits in (32, 64):
        return np.frombuffer(data, dtype=f"<f{bits // 8}").astype(np.float32)
    if tag != _PCM:
        raise ValueError(f"unsupported WAV format tag {tag}")
    if bits == 8:
        return (np.frombuffer(data, np.uint8).astype(np.float32) - 128) / 128
    if bits == 24:
        raw = np.frombuffer(data[: len(data) // 3 * 3], np.uint8).reshape(-1, 3)
        ints = raw[:, 0].astype(np.int32) | raw[:, 1].astype(np.int32) << 8 | raw[:, 2].astype(np.int32) << 16
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        return (ints / float(1 << 23)).astype(np.float32)
    if bits in (16, 32):
        return (np.frombuffer(data, dtype=f"<i{bits // 8}") / float(1 << (bits - 1))).astype(np.float32)
    raise ValueError(f"unsupported WAV sample width {bits} bits")
