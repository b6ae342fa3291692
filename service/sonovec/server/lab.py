"""The latent lab: algebra on recordings' continuous latents, decoded back to audio.

A layer above the core (``Service``): every operation gets each input's latents (a recording through
the batcher, or latents a previous result returned), combines them frame by frame, and decodes the
result through the same batcher (``Service.decode_latents``). Each result carries the audio *and*
the latents it decoded, so results chain: pass ``result.latents`` as the input of the next operation.

Frame alignment. Latents are ``[F, D]`` frames in window order (at 48 kHz, 1 s segments of 150
frames each). Operations on several inputs use the frames they share: the first ``F = min F_i``
(the longer inputs are cut at the end). Any prefix of a frame layout is a valid layout (full
segments, then a partial one), and the output length is the shortest input's.

Per-segment scales (48 kHz). The model divides each 1 s segment by its RMS before encoding and the
decoder multiplies it back; latents describe *normalised* audio. Combining inputs combines their
scales segment by segment the same way as the frames, in the log domain (an interpolation at t
gives ``exp((1 - t) log s_a + t log s_b)``; a mix the weighted geometric mean); operations with
one target (offset, style) keep the target's scales. The 24 kHz model has one scale, 1.0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sonovec.server.core import (
    AudioSource,
    DecodeResult,
    LatentFrames,
    Service,
    check_latents,
    latent_segments,
)
from sonovec.server.errors import invalid

MAX_PATH_STEPS = 32
# Defaults of both transports' requests (REST fields, gRPC fields when absent).
DEFAULT_T = 0.5
DEFAULT_STEPS = 5
DEFAULT_ALPHA = 1.0
DEFAULT_AMOUNT = 1.0


@dataclass(frozen=True)
class LatentsIn:
    """Latents given by a caller (a previous lab result, or embed's frames with their scales)."""

    frames: np.ndarray  # [F, D]
    scales: Sequence[float] | None = None  # one per segment; None: 1.0 each
    num_samples: int | None = None


LabInput = AudioSource | LatentsIn


@dataclass(frozen=True)
class LabOptions:
    model: str | None = None
    bandwidth: float | None = None  # re-quantize at this bandwidth before decoding
    timeout_s: float | None = None


@dataclass
class LabResult:
    """Decoded audio and the latents it was decoded from (feed them to the next operation)."""

    audio: DecodeResult
    latents: LatentFrames


class Lab:
    """Latent algebra over one ``Service``; stateless, so transports build one per call."""

    def __init__(self, service: Service) -> None:
        self.service = service

    # ---- inputs and decoding ----

    async def latents(self, source: LabInput, options: LabOptions, field: str = "input") -> LatentFrames:
        """An input's latents: encoded through the batcher, or the given ones, checked."""
        if isinstance(source, AudioSource):
            return await self.service.latents(
                source, model=options.model, timeout_s=options.timeout_s, field=field
            )
        backend = self.service.backend(options.model)
        geometry = check_latents(
            backend.spec,
            source.frames,
            source.scales,
            source.num_samples,
            self.service.settings.max_audio_seconds,
            field,
        )
        return LatentFrames(
            self.service.info(backend),
            np.ascontiguousarray(geometry.frames.T),
            np.asarray(geometry.scales, np.float32),
            geometry.num_samples,
        )

    async def _inputs(self, sources: Sequence[LabInput], options: LabOptions) -> list[LatentFrames]:
        return list(
            await asyncio.gather(*(self.latents(s, options, f"inputs[{i}]") for i, s in enumerate(sources)))
        )

    async def decode(self, latents: LatentFrames, options: LabOptions) -> LabResult:
        audio = await self.service.decode_latents(
            latents.frames,
            latents.scales.tolist(),
            model=options.model,
            num_samples=latents.num_samples,
            bandwidth=options.bandwidth,
            timeout_s=options.timeout_s,
        )
        return LabResult(audio, latents)

    async def decode_input(self, source: LabInput, options: LabOptions) -> LabResult:
        """Latents (or a recording's latents) -> audio: the decoder without the quantizer."""
        return await self.decode(await self.latents(source, options, "latents"), options)

    # ---- algebra ----

    async def interpolate(self, a: LabInput, b: LabInput, t: float, options: LabOptions) -> LabResult:
        """``(1 - t) a + t b`` frame by frame, t in [0, 1]; t = 0 decodes a, t = 1 decodes b."""
        _check_unit(t, "t")
        za, zb = await self._inputs([a, b], options)
        return await self.decode(mix_latents([za, zb], [1.0 - t, t]), options)

    async def path(self, a: LabInput, b: LabInput, steps: int, options: LabOptions) -> list[LabResult]:
        """``steps`` interpolations from a (t = 0) to b (t = 1), evenly spaced; decoded together."""
        if not 2 <= steps <= MAX_PATH_STEPS:
            raise invalid(f"{steps} steps", field="steps", allowed=f"2 to {MAX_PATH_STEPS}")
        za, zb = await self._inputs([a, b], options)
        mixes = [mix_latents([za, zb], [1.0 - t, t]) for t in np.linspace(0.0, 1.0, steps)]
        return list(await asyncio.gather(*(self.decode(m, options) for m in mixes)))

    async def mix(
        self, sources: Sequence[LabInput], weights: Sequence[float], options: LabOptions
    ) -> LabResult:
        """A weighted mix of several inputs' frames; weights >= 0, normalised to sum to 1."""
        if not 2 <= len(sources) <= self.service.settings.max_recordings or len(weights) != len(sources):
            raise invalid(
                f"{len(sources)} inputs, {len(weights)} weights",
                field="weights",
                allowed=f"2 to {self.service.settings.max_recordings} inputs, one weight each",
            )
        w = np.asarray(weights, np.float64)
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise invalid("weights must be finite, >= 0, not all 0", field="weights")
        latents = await self._inputs(sources, options)
        return await self.decode(mix_latents(latents, list(w / w.sum())), options)

    async def offset(
        self, a: LabInput, b: LabInput, c: LabInput, alpha: float, options: LabOptions
    ) -> LabResult:
        """``c + alpha (mean_t a - mean_t b)``: the time-pooled difference of a and b added to each
        frame of c (c's length and scales)."""
        za, zb, zc = await self._inputs([a, b, c], options)
        shift = za.frames.mean(axis=0) - zb.frames.mean(axis=0)  # [D]
        return await self.decode(_with_frames(zc, zc.frames + alpha * shift), options)

    async def style(
        self, content: LabInput, style: LabInput, amount: float, options: LabOptions
    ) -> LabResult:
        """Content's frames with style's per-dimension frame statistics: each dimension standardised
        over content's frames, then given style's mean and std (``amount`` in [0, 1] blends)."""
        _check_unit(amount, "amount")
        zc, zs = await self._inputs([content, style], options)
        moved = move_statistics(zc.frames, zs.frames)
        return await self.decode(_with_frames(zc, (1 - amount) * zc.frames + amount * moved), options)


def _check_unit(value: float, field: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise invalid(f"{field} = {value}", field=field, allowed="0 to 1")


def _with_frames(latents: LatentFrames, frames: np.ndarray) -> LatentFrames:
    return LatentFrames(latents.model, frames.astype(np.float32), latents.scales, latents.num_samples)


def mix_latents(latents: Sequence[LatentFrames], weights: Sequence[float]) -> LatentFrames:
    """``sum w_i z_i`` over the frames all inputs share (the first ``min F_i``); scales combined as
    the weighted geometric mean per segment. Weights are used as given (callers normalise)."""
    shortest = min(latents, key=lambda z: z.frames.shape[0])
    count = shortest.frames.shape[0]
    frames = sum(
        float(w) * z.frames[:count].astype(np.float64) for w, z in zip(weights, latents, strict=True)
    )
    segments = len(shortest.scales)
    log_scales = sum(
        float(w) * np.log(z.scales[:segments].astype(np.float64))
        for w, z in zip(weights, latents, strict=True)
    )
    total = float(sum(weights)) or 1.0
    scales = np.exp(np.asarray(log_scales) / total).astype(np.float32)
    return LatentFrames(shortest.model, np.asarray(frames, np.float32), scales, shortest.num_samples)


def move_statistics(content: np.ndarray, style: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``[F, D]`` content frames given the per-dimension mean and std of ``[F', D]`` style frames."""
    mean_c, std_c = content.mean(axis=0), content.std(axis=0)
    mean_s, std_s = style.mean(axis=0), style.std(axis=0)
    return ((content - mean_c) / (std_c + eps) * std_s + mean_s).astype(np.float32)


__all__ = ["Lab", "LabInput", "LabOptions", "LabResult", "LatentsIn", "latent_segments"]
