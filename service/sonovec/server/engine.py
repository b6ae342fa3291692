"""The batcher's runner: executes a batch of windows on a model backend.

Windows of equal fed length are stacked into one ``[B, C, T]`` call (full windows); other lengths
(tails) run at their exact length, never zero-padded, since padding changes every frame of a
non-causal window. Left-context frames (24 kHz chunks) are dropped after the call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from sonovec.models import Backend
from sonovec.server.batcher import BatchKey

Item = TypeVar("Item")


@dataclass
class EncodeIn:
    audio: np.ndarray  # [C, context + length] float32
    drop_frames: int  # leading latent frames that belong to the left context


@dataclass
class EncodeOut:
    latents: np.ndarray  # [D, F] float32, context frames dropped
    scale: float
    codes: np.ndarray | None = None  # [K, F] int64, when the op is "quantize"


@dataclass
class DecodeIn:
    codes: np.ndarray  # [K, F] int64, context frames included
    scale: float
    drop_samples: int  # leading output samples that belong to the left context


@dataclass
class DecodeLatentsIn:
    latents: np.ndarray  # [D, F] float32 continuous latents, context frames included
    scale: float
    drop_samples: int  # leading output samples that belong to the left context


class Engine:
    """Runs ``encode`` / ``quantize`` / ``decode`` / ``decode_latents`` batches; one instance serves
    all models. ``decode_latents`` with a bandwidth re-quantizes the latents first (quantize, then
    the codes' decode: what the codec would keep); without one it skips the quantizer."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        self.backends = backends

    def __call__(self, key: BatchKey, payloads: Sequence[object]) -> list[object]:
        backend = self.backends[key.model]
        if key.op == "decode":
            return self._decode(backend, payloads)  # type: ignore[arg-type]
        if key.op == "decode_latents":
            return self._decode_latents(backend, payloads, key.bandwidth or None)  # type: ignore[arg-type]
        return self._encode(backend, payloads, key.bandwidth if key.op == "quantize" else None)  # type: ignore[arg-type]

    def _encode(self, backend: Backend, items: Sequence[EncodeIn], bandwidth: float | None) -> list[object]:
        out: list[object] = [None] * len(items)
        for indices in _group_by(items, lambda item: item.audio.shape[-1]):
            audio = np.stack([items[i].audio for i in indices])
            if bandwidth is None:
                encoded, codes = backend.encode(audio), None
            else:  # codes come from fp32 latents whatever the precision: bf16 rounding flips RVQ codes
                encoded = backend.encode(audio, full_precision=True)
                codes = backend.quantize(encoded.latents, bandwidth)
            for row, i in enumerate(indices):
                drop = items[i].drop_frames
                out[i] = EncodeOut(
                    latents=encoded.latents[row, :, drop:],
                    scale=float(encoded.scales[row]),
                    codes=None if codes is None else codes[row, :, drop:],
                )
        return out

    def _decode(self, backend: Backend, items: Sequence[DecodeIn]) -> list[object]:
        out: list[object] = [None] * len(items)
        for indices in _group_by(items, lambda item: item.codes.shape):
            codes = np.stack([items[i].codes for i in indices])
            scales = np.asarray([items[i].scale for i in indices], np.float32)
            audio = backend.decode(codes, scales)
            for row, i in enumerate(indices):
                out[i] = audio[row, :, items[i].drop_samples :]
        return out


    def _decode_latents(
        self, backend: Backend, items: Sequence[DecodeLatentsIn], bandwidth: float | None
    ) -> list[object]:
        out: list[object] = [None] * len(items)
        for indices in _group_by(items, lambda item: item.latents.shape):
            latents = np.stack([items[i].latents for i in indices]).astype(np.float32, copy=False)
            scales = np.asarray([items[i].scale for i in indices], np.float32)
            if bandwidth is None:
                audio = backend.decode_latents(latents, scales)
            else:
                audio = backend.decode(backend.quantize(latents, bandwidth), scales)
            for row, i in enumerate(indices):
                out[i] = audio[row, :, items[i].drop_samples :]
        return out


def _group_by(items: Sequence[Item], shape_of: Callable[[Item], Hashable]) -> list[list[int]]:
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[shape_of(item)].append(i)
    return list(groups.values())
