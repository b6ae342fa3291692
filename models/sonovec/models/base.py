"""The one interface every model backend implements, and the window plan they share.

Arrays cross this boundary as numpy, so the service (and the ``fake`` backend) never imports torch.

Window plan, EnCodec 48 kHz (non-causal, the model's own 1 s segments, 1 % overlap)::

    0        47520   48000
    |--------------|--|                  window 0: [0, 48000)
                   |--------------|--|   window 1: [47520, 95520)
                                  ...    last window: whatever is left, at its exact length

EnCodec 24 kHz (causal) is one window while the file fits in ``window`` samples; longer files are
cut into chunks of ``window`` samples, each fed with ``context`` samples of left context whose
latent frames are then dropped::

    chunk k:   [ctx ctx ctx | k*W ............ (k+1)*W )
                 dropped       kept frames
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """Geometry of one model: everything the service needs to window, batch, pool and decode."""

    name: str
    sample_rate: int
    channels: int
    hop_length: int  # input samples per latent frame
    latent_dim: int
    bandwidths: tuple[float, ...]  # kbps, ascending
    codebook_size: int
    window: int  # samples in one full window (48 kHz: the 1 s segment; 24 kHz: a chunk)
    stride: int  # samples between window starts
    context: int = 0  # left-context samples fed before each chunk but the first (24 kHz)
    normalize: bool = False  # each window divided by its own RMS scale (48 kHz)
    segmented: bool = False  # codes are per window and decoded with overlap-add (48 kHz)
    decodes: bool = True  # has a decoder (False: the feature baselines, encode only)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sample_rate / self.hop_length)

    def num_codebooks(self, bandwidth: float) -> int:
        """RVQ codebooks used at ``bandwidth`` kbps, as ``ResidualVectorQuantizer`` counts them."""
        if bandwidth not in self.bandwidths:
            allowed = ", ".join(f"{b:g}" for b in self.bandwidths)
            raise ValueError(f"bandwidth {bandwidth:g} kbps is not one of {self.name}'s: {allowed}")
        bits_per_codebook = math.log2(self.codebook_size)
        return max(1, math.floor(bandwidth * 1000 / (bits_per_codebook * self.frame_rate)))

    def num_frames(self, num_samples: int) -> int:
        return math.ceil(num_samples / self.hop_length)


@dataclass(frozen=True)
class Window:
    """A slice of a recording fed to the model: ``[start - context, start + length)`` in samples.

    ``length`` counts only the window's own samples; the model sees ``context + length``.
    The first ``context // hop_length`` latent frames of the output are dropped.
    """

    start: int
    length: int
    context: int = 0

    @property
    def fed(self) -> slice:
        return slice(self.start - self.context, self.start + self.length)


def plan_windows(spec: ModelSpec, num_samples: int) -> list[Window]:
    """Cut a recording of ``num_samples`` samples into the windows the model runs on."""
    if num_samples <= 0:
        raise ValueError("a recording needs at least one sample")
    if spec.segmented:
        # Exactly EncodecModel.encode: `for offset in range(0, length, stride)`.
        return [
            Window(start, min(spec.window, num_samples - start))
            for start in range(0, num_samples, spec.stride)
        ]
    windows = []
    for start in range(0, num_samples, spec.window):
        context = min(spec.context, start)
        windows.append(Window(start, min(spec.window, num_samples - start), context))
    return windows


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backend's weights came from. ``fingerprint`` names the embedding space."""

    source: str  # "pretrained:<path or url>", "random:seed=0", "fake"
    fingerprint: str  # sha256 prefix of the state dict; vectors of different fingerprints never mix
    pretrained: bool
    warning: str | None = None  # shown loudly when the weights are not the trained ones


@dataclass
class Encoded:
    """Latents of a batch of equal-length windows.

    latents: ``[B, D, F]`` float32; scales: ``[B]`` float32 (1.0 where the model does not normalise).
    """

    latents: np.ndarray
    scales: np.ndarray


@runtime_checkable
class Backend(Protocol):
    """A model runtime. Thread-safe: with ``--workers N`` the batcher makes up to N calls at once.
    A batch holds windows of one length."""

    spec: ModelSpec
    weights: WeightsInfo
    device: str  # "cpu", "cuda:0", ...
    kind: str  # "torch", "onnx", "fake"

    def encode(self, audio: np.ndarray, *, full_precision: bool = False) -> Encoded:
        """``[B, C, T]`` float32 audio -> continuous encoder latents ``[B, D, ceil(T / hop)]``.

        Applies the model's per-window normalisation (48 kHz) exactly as ``EncodecModel`` does.
        ``full_precision``: compute in fp32 even if the backend runs a reduced precision (the
        engine asks for it when the latents will be quantized: codes are sensitive to rounding).
        """
        ...

    def quantize(self, latents: np.ndarray, bandwidth: float) -> np.ndarray:
        """``[B, D, F]`` latents -> RVQ codes ``[B, K, F]`` int64 at ``bandwidth`` kbps."""
        ...

    def decode(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """``[B, K, F]`` codes and ``[B]`` scales -> audio ``[B, C, F * hop]`` float32."""
        ...

    def decode_latents(self, latents: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """``[B, D, F]`` continuous latents and ``[B]`` scales -> audio ``[B, C, F * hop]`` float32:
        the decoder alone, the quantizer skipped (the latent lab; ``decode`` = quantizer lookup + this).

        48 kHz: the output is multiplied by each window's scale, as ``decode`` does (the latents of
        a normalised window decode to unit-RMS audio; its scale restores the level)."""
        ...


@dataclass
class BackendOptions:
    """How to build a backend (from the service settings)."""

    model: str
    weights: str = "pretrained"  # "pretrained", "random", or a directory holding the checkpoint
    device: str = "cpu"
    precision: str = "fp32"  # "fp32", "bf16", "fp16"
    threads: int = 0  # cores the model may use; 0 = all (torch on CPU: divided among the workers)
    workers: int = 1  # batcher workers that may call the backend at once
    cache_dir: str | None = None  # exports and downloads
    extra: dict[str, str] = field(default_factory=dict)
