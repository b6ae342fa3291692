"""Reassembly: a request's window outputs, in window order, back into one result.

Encoder windows -> ``[D, F]`` latent frames with their start samples (and their statistics);
decoder windows -> ``[C, T]`` audio, by EnCodec's triangle-weighted overlap-add for the segmented
48 kHz model, by concatenation for the chunked 24 kHz one. Runs in worker threads: the work grows
with the recording.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sonovec.models import Window
from sonovec.server import pooling
from sonovec.server.engine import EncodeOut


@dataclass
class Latents:
    frames: np.ndarray  # [D, F] in window order
    frame_starts: np.ndarray  # [F] each frame's start sample in the recording
    windows: list[EncodeOut]  # the window outputs (codes and scales, for encode)
    stats: np.ndarray  # [2D] mean+std over the frames (the cached form of an embedding)


def latents(hop: int, windows: list[Window], outputs: list[EncodeOut]) -> Latents:
    """Encoder outputs of ``windows`` -> frames, their start samples and their mean+std.

    At 48 kHz consecutive 1 s segments overlap by 1 % (480 samples, 1.5 frames): frames are kept as
    ``EncodecModel.encode`` makes them, so the start times step back at each segment boundary.
    """
    starts = [w.start + hop * np.arange(o.latents.shape[1]) for w, o in zip(windows, outputs, strict=True)]
    frames = np.concatenate([o.latents for o in outputs], axis=1)
    return Latents(frames, np.concatenate(starts), outputs, pooling.mean_std(frames))


def join_audio(outputs: list[np.ndarray], stride: int | None, num_samples: int) -> np.ndarray:
    """Decoded ``[C, T_i]`` windows -> ``[C, num_samples]``: overlap-added every ``stride``
    samples (segmented models), else concatenated."""
    audio = linear_overlap_add(outputs, stride) if stride else np.concatenate(outputs, axis=1)
    return np.ascontiguousarray(audio[:, :num_samples])


def linear_overlap_add(frames: list[np.ndarray], stride: int) -> np.ndarray:
    """``EncodecModel.decode``'s ``_linear_overlap_add`` in numpy: triangle-weighted overlap-add of
    ``[C, T_i]`` windows placed every ``stride`` samples."""
    frame_length = frames[0].shape[-1]
    t = np.linspace(0.0, 1.0, frame_length + 2, dtype=np.float32)[1:-1]
    weight = (0.5 - np.abs(t - 0.5)).astype(np.float32)
    total = stride * (len(frames) - 1) + frames[-1].shape[-1]
    out = np.zeros((frames[0].shape[0], total), np.float32)
    sum_weight = np.zeros(total, np.float32)
    for i, frame in enumerate(frames):
        offset, length = i * stride, frame.shape[-1]
        out[:, offset : offset + length] += weight[:length] * frame
        sum_weight[offset : offset + length] += weight[:length]
    return out / sum_weight
