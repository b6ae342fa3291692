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
from collections.abc import Callable, Sequence
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
    causal: bool = False  # each frame depends only on the samples before it (24 kHz): right-padding is exact
    decodes: bool = True  # has a decoder (False: the feature baselines, encode only)
    # Default batch budget, audio seconds per model call: enough windows that every core has several
    # (48 kHz: 16 one-second windows; 24 kHz: ~5 of its 12 s chunks; fewer leave a core idle).
    batch_seconds: float = 16.0

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


MIN_PADDED_FRAMES = 8  # shorter causal windows run unpadded (see tail_groups)
PADDED_FILL = 0.75  # a right-padded group's shortest window has at least this share of its frames


def tail_groups(spec: ModelSpec, frames: Sequence[int]) -> list[tuple[list[int], int]]:
    """Windows (by their latent frame counts) that may share one call of the model's frame-rate
    layers (LSTM and last conv), as ``(indices, frames of the call)``.

    Non-causal (48 kHz): only equal lengths; a window padded with zeros changes in every frame.
    Causal (24 kHz): frame ``f`` depends only on frames ``<= f``, so a window right-padded to a
    longer call equals the window alone in its own frames, which are kept; the rest are dropped.
    Lengths are grouped longest first, each group taking windows down to ``PADDED_FILL`` of its
    longest, so every call is at least that full. Windows under ``MIN_PADDED_FRAMES`` frames stay
    unpadded: the last conv's reflect padding (6 frames) would read the padding there::

        frames  900 750 750 700 610 | 540 480 | 40 | 5 5
        call    900 ................ | 540 ... | 40 | 5 (exact lengths below MIN_PADDED_FRAMES)
    """
    order = sorted(range(len(frames)), key=lambda i: -frames[i])
    groups: list[tuple[list[int], int]] = []
    for i in order:
        f = frames[i]
        paddable = spec.causal and f >= MIN_PADDED_FRAMES
        if groups:
            indices, longest = groups[-1]
            fits = longest == f or (paddable and frames[indices[0]] >= MIN_PADDED_FRAMES
                                    and f >= PADDED_FILL * longest)
            if fits:
                indices.append(i)
                continue
        groups.append(([i], f))
    return groups


def encode_by_length(
    encode: Callable[..., Encoded], windows: Sequence[np.ndarray], full_precision: bool
) -> list[tuple[np.ndarray, float]]:
    """``encode_windows`` for a backend that runs only equal lengths together: one call per length."""
    out: list[tuple[np.ndarray, float]] = [(np.empty(0), 0.0)] * len(windows)
    by_length: dict[int, list[int]] = {}
    for i, window in enumerate(windows):
        by_length.setdefault(window.shape[-1], []).append(i)
    for indices in by_length.values():
        encoded = encode(np.stack([windows[i] for i in indices]), full_precision=full_precision)
        for row, i in enumerate(indices):
            out[i] = (encoded.latents[row], float(encoded.scales[row]))
    return out


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

    def encode_windows(
        self, windows: Sequence[np.ndarray], *, full_precision: bool = False
    ) -> list[tuple[np.ndarray, float]]:
        """Windows ``[C, T_i]`` of any lengths -> ``(latents [D, ceil(T_i / hop)], scale)`` each.

        Each result equals ``encode`` of that window alone (within float tolerance); the backend
        runs them together as far as that stays true (see ``tail_groups``).
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


# ---- input checks every backend runs on what it is handed (ValueError: the service maps it) ----


def check_audio(spec: ModelSpec, audio: np.ndarray) -> None:
    """``[B, C, T]`` with C = the model's channels, B and T > 0."""
    if audio.ndim != 3 or audio.shape[1] != spec.channels or audio.shape[0] == 0 or audio.shape[2] == 0:
        raise ValueError(f"{spec.name} encodes [B, {spec.channels}, T] audio, B and T > 0; got {audio.shape}")


def check_latents(spec: ModelSpec, latents: np.ndarray) -> None:
    """``[B, D, F]`` with D = the model's latent dimension."""
    if latents.ndim != 3 or latents.shape[1] != spec.latent_dim:
        raise ValueError(f"{spec.name} quantizes [B, {spec.latent_dim}, F] latents; got {latents.shape}")


def check_codes(spec: ModelSpec, codes: np.ndarray, scales: np.ndarray) -> None:
    """``[B, K, F]`` codes with K one of the model's codebook counts, in range; ``[B]`` scales."""
    allowed_k = {spec.num_codebooks(b) for b in spec.bandwidths}
    if codes.ndim != 3 or codes.shape[1] not in allowed_k:
        raise ValueError(f"{spec.name} decodes [B, K, F] codes, K in {sorted(allowed_k)}; got {codes.shape}")
    if scales.shape != (codes.shape[0],):
        raise ValueError(f"scales must be [B] = [{codes.shape[0]}]; got {scales.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= spec.codebook_size):
        raise ValueError(f"codes must lie in [0, {spec.codebook_size}); got [{codes.min()}, {codes.max()}]")


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
