"""The batcher's runner: executes a batch of windows on a model backend.

A batch holds windows of many lengths (full windows, tails of many requests, 24 kHz chunks with left
context). All of them go to the backend in one ``encode_windows`` call, which runs them together:
the backend decides what can share a model call exactly (see ``base.tail_groups``: never a
zero-padded 48 kHz window, whose every frame would change; 24 kHz windows right-padded to a common
length, since the model is causal). Left-context frames (24 kHz chunks) are dropped after the call.
Codes are quantized from fp32 latents, every frame of the batch in one call (RVQ is per frame).
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

QUANTIZE_ROW = 250  # frames per row when the batch's latents are quantized together


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

    def warmup(self) -> None:
        """Run each model once on every kind of call it will serve, before the service is ready.

        A full batch of full windows, a tail (a 48 kHz tail runs the dynamic-length graph), a short
        clip, two lengths together (24 kHz: one right-padded tail call), quantize and decode: the
        first requests then meet no one-off graph planning, allocation or kernel selection.
        """
        rng = np.random.default_rng(0)
        for name, backend in self.backends.items():
            spec = backend.spec
            lengths = [spec.window, spec.window, spec.window // 3 + 7, spec.hop_length * 12 + 11]
            items = [EncodeIn((0.1 * rng.standard_normal((spec.channels, n))).astype(np.float32), 0)
                     for n in lengths]
            self(BatchKey(name, "encode"), items)
            if not spec.decodes:  # the feature baselines: encode only
                continue
            encoded = self(BatchKey(name, "quantize", spec.bandwidths[0]), items[2:])
            codes = [out.codes for out in encoded if isinstance(out, EncodeOut) and out.codes is not None]
            self(BatchKey(name, "decode"), [DecodeIn(c, 1.0, 0) for c in codes])

    def _encode(self, backend: Backend, items: Sequence[EncodeIn], bandwidth: float | None) -> list[object]:
        # Codes come from fp32 latents whatever the precision: bf16/int8 rounding flips RVQ codes.
        windows = [item.audio for item in items]
        encoded = backend.encode_windows(windows, full_precision=bandwidth is not None)
        latents = [lat[:, item.drop_frames :] for (lat, _), item in zip(encoded, items, strict=True)]
        codes: list[np.ndarray | None] = [None] * len(items)
        if bandwidth is not None:
            codes = list(quantize_frames(backend, latents, bandwidth))
        return [
            EncodeOut(latents=lat, scale=scale, codes=code)
            for lat, (_, scale), code in zip(latents, encoded, codes, strict=True)
        ]

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


def quantize_frames(backend: Backend, latents: Sequence[np.ndarray], bandwidth: float) -> list[np.ndarray]:
    """Codes ``[K, F_i]`` of each ``[D, F_i]`` latent, all frames in one ``quantize`` call.

    RVQ picks each frame's codes from that frame alone, so frames of different windows may share
    rows: the batch's frames are laid end to end and cut into rows of ``QUANTIZE_ROW``::

        [D, F_0] [D, F_1] ...  ->  [D, sum F] (zero-padded to a whole row)  ->  [R, D, QUANTIZE_ROW]
    """
    sizes = [lat.shape[-1] for lat in latents]
    total = sum(sizes)
    if total == 0:
        return [np.zeros((backend.spec.num_codebooks(bandwidth), 0), np.int64) for _ in latents]
    rows = -(-total // QUANTIZE_ROW)
    flat = np.zeros((latents[0].shape[0], rows * QUANTIZE_ROW), np.float32)
    flat[:, :total] = np.concatenate(latents, axis=1)
    batch = np.ascontiguousarray(flat.reshape(flat.shape[0], rows, QUANTIZE_ROW).transpose(1, 0, 2))
    codes = backend.quantize(batch, bandwidth)  # [R, K, QUANTIZE_ROW]
    stream = codes.transpose(1, 0, 2).reshape(codes.shape[1], -1)[:, :total]
    return np.split(stream, np.cumsum(sizes)[:-1], axis=1)


def _group_by(items: Sequence[Item], shape_of: Callable[[Item], Hashable]) -> list[list[int]]:
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[shape_of(item)].append(i)
    return list(groups.values())
