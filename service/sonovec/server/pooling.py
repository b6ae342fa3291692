"""Pooling frames into vectors, and cosine similarity."""

from __future__ import annotations

import numpy as np

POOLINGS = ("mean", "mean_std")


def mean_std(frames: np.ndarray) -> np.ndarray:
    """``[D, F]`` frames -> ``[2D]`` float32: the mean over frames, then the standard deviation."""
    frames64 = frames.astype(np.float64)
    return np.concatenate([frames64.mean(axis=1), frames64.std(axis=1)]).astype(np.float32)


def finish(stats: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """``[2D]`` mean+std statistics -> the vector a caller asked for."""
    dim = stats.shape[0] // 2
    vector = stats[:dim] if pooling == "mean" else stats
    return l2_normalize(vector) if normalize else vector.copy()


def l2_normalize(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return (vectors / np.maximum(norm, 1e-12)).astype(np.float32)


def cosine_matrix(vectors: np.ndarray) -> np.ndarray:
    """``[N, D]`` -> ``[N, N]`` cosine similarities."""
    unit = l2_normalize(vectors)
    return np.clip(unit @ unit.T, -1.0, 1.0).astype(np.float32)


def segment_means(
    frames: np.ndarray, frame_starts: np.ndarray, segment_samples: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean-pool ``[D, F]`` frames into segments of ``segment_samples`` by each frame's start sample.

    Returns ``[S, D]`` segment vectors and ``[S]`` segment indices (empty segments are skipped).
    """
    segment_of = frame_starts // segment_samples
    segments = np.unique(segment_of)
    means = np.stack([frames[:, segment_of == s].mean(axis=1) for s in segments])
    return means.astype(np.float32), segments
