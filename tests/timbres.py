"""Synthetic recordings whose labels can be recovered from their sound, for classification tests.

``timbre_set``: sine, square and noise clips, each at a random pitch within one octave, a random
level and phase, with a little background noise. ``pitch_set``: the notes A3, E4 and A4 (+-1 %),
each as a sine or a square wave.
"""

from __future__ import annotations

import numpy as np

TIMBRES = ("sine", "square", "noise")
NOTES_HZ = {"A3": 220.0, "E4": 329.63, "A4": 440.0}


def clip(
    kind: str, f0: float, rng: np.random.Generator, sample_rate: int, seconds: float = 1.0
) -> np.ndarray:
    """``[1, T]`` float32."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "sine":
        x = np.sin(2 * np.pi * f0 * t + phase)
    elif kind == "square":
        x = np.sign(np.sin(2 * np.pi * f0 * t + phase))
    else:
        x = rng.standard_normal(len(t))
    x = x * rng.uniform(0.2, 0.5) + 0.01 * rng.standard_normal(len(t))
    return x.astype(np.float32)[None]


def timbre_set(
    count: int, sample_rate: int, seed: int = 0, seconds: float = 1.0
) -> list[tuple[str, np.ndarray]]:
    """``count`` (label, ``[1, T]`` clip) pairs, the labels taking turns."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        label = TIMBRES[i % len(TIMBRES)]
        out.append((label, clip(label, float(rng.uniform(200, 400)), rng, sample_rate, seconds)))
    return out


def pitch_set(
    count: int, sample_rate: int, seed: int = 0, seconds: float = 1.0
) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    names = list(NOTES_HZ)
    out = []
    for i in range(count):
        label = names[i % len(names)]
        kind = ("sine", "square")[int(rng.integers(2))]
        out.append((label, clip(kind, NOTES_HZ[label] * rng.uniform(0.99, 1.01), rng, sample_rate, seconds)))
    return out
