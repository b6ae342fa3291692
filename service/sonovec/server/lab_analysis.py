"""Interpretability of the latent space (the latent lab): sensitivity, ablation, space statistics.

Sensitivity: for one recording, each chosen dimension ``d`` is moved by ``+k`` and ``-k`` standard
deviations (``std_d`` over a reference set's frames: the recording itself when none is given), every
variant is decoded through the batcher, and audio descriptors are measured (librosa): spectral
centroid, bandwidth, rolloff, flatness, RMS loudness, f0 (YIN, only where pitched) and the log-mel
distance to the unperturbed decode. A dimension's effect on a descriptor is the half-difference
``(desc(+k) - desc(-k)) / 2``; dimensions are ranked by mel distance and per descriptor by
``|effect|`` relative to the descriptor's base value.

Ablation: each dimension set to 0 (``zero``) or to its mean over the recording's frames (``mean``),
decoded, and compared with the unablated decode: relative L2 error of the waveform and the log-mel
distance; plus one row with every chosen dimension ablated at once.

Statistics of a set of recordings' latent space: per-dimension mean / std / min / max over all
frames, the correlation matrix between dimensions, and PCA explained variance of the frames.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonovec.server import plots
from sonovec.server.core import LatentFrames
from sonovec.server.errors import invalid
from sonovec.server.lab import Lab, LabInput, LabOptions

DESCRIPTORS = ("centroid_hz", "bandwidth_hz", "rolloff_hz", "flatness", "rms", "f0_hz")
MAX_DIMS_PER_CALL = 128
N_MELS = 64


def descriptors(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Mean spectral descriptors of ``[C, T]`` audio (mixed to mono); f0 is NaN when unpitched."""
    import librosa

    y = np.asarray(audio, np.float32).mean(axis=0)
    spectrum = np.abs(librosa.stft(y, n_fft=2048, hop_length=512))
    values = {
        "centroid_hz": librosa.feature.spectral_centroid(S=spectrum, sr=sample_rate),
        "bandwidth_hz": librosa.feature.spectral_bandwidth(S=spectrum, sr=sample_rate),
        "rolloff_hz": librosa.feature.spectral_rolloff(S=spectrum, sr=sample_rate),
        "flatness": librosa.feature.spectral_flatness(S=spectrum),
        "rms": librosa.feature.rms(S=spectrum, frame_length=2048),
    }
    out = {name: float(np.mean(v)) for name, v in values.items()}
    out["f0_hz"] = _f0(y, sample_rate)
    return out


def _f0(y: np.ndarray, sample_rate: int) -> float:
    """Median YIN f0 over frames whose periodicity is clear (trough < 0.2), or NaN if under half are."""
    import librosa

    if len(y) < 4096 or not np.any(y):
        return float("nan")
    f0 = librosa.yin(y, fmin=50.0, fmax=2000.0, sr=sample_rate, frame_length=2048, trough_threshold=0.2)
    flat = librosa.feature.spectral_flatness(y=y, n_fft=2048, hop_length=512)[0][: len(f0)]
    pitched = flat < 0.1  # YIN answers everywhere: keep tonal frames only
    return float(np.median(f0[pitched])) if pitched.mean() >= 0.5 else float("nan")


def log_mel(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=np.asarray(audio, np.float32).mean(axis=0), sr=sample_rate, n_mels=N_MELS
    )
    return np.asarray(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None))


def mel_distance(a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Mean absolute log-mel difference in dB (equal-length ``[C, T]`` audio)."""
    return float(np.mean(np.abs(log_mel(a, sample_rate) - log_mel(b, sample_rate))))


@dataclass(frozen=True)
class SensitivityOptions:
    dims: Sequence[int] | None = None  # None: every dimension
    k: float = 2.0  # standard deviations
    listen: int = 3  # decoded +k audio (WAV) for this many top-ranked dimensions


@dataclass
class Sensitivity:
    dims: list[int]
    k: float
    std: np.ndarray  # [D] the reference standard deviations
    base: dict[str, float]
    effect: np.ndarray  # [len(dims), len(DESCRIPTORS)] (desc(+k) - desc(-k)) / 2
    mel_distance: np.ndarray  # [len(dims)] mean of +k and -k mel distances to the base decode
    ranked: list[int]  # dims, most influential (mel distance) first
    ranked_by: dict[str, list[int]]  # per descriptor, by |effect| / |base|
    listen: dict[int, bytes] = field(default_factory=dict)  # dim -> WAV of the +k decode

    def table(self) -> dict[str, Any]:
        rows = [
            {
                "dim": d,
                "mel_distance_db": float(self.mel_distance[i]),
                **{name: _finite(self.effect[i, j]) for j, name in enumerate(DESCRIPTORS)},
            }
            for i, d in enumerate(self.dims)
        ]
        return {
            "k": self.k,
            "base": {n: _finite(v) for n, v in self.base.items()},
            "rows": rows,
            "ranked": self.ranked,
            "ranked_by": self.ranked_by,
            "descriptors": list(DESCRIPTORS),
        }

    def heatmap_png(self, title: str = "") -> bytes:
        base = np.array([self.base[n] for n in DESCRIPTORS])
        usable = np.isfinite(base) & (np.abs(base) > 0)
        relative = self.effect / np.where(usable, np.abs(np.where(usable, base, 1.0)), 1.0)
        columns = np.nan_to_num(np.column_stack([relative, self.mel_distance]))  # f0: NaN when unpitched
        scale = np.abs(columns).max(axis=0)
        scaled = columns / np.where(scale > 0, scale, 1)
        return plots.matrix_png(
            scaled,
            [str(d) for d in self.dims],
            [*DESCRIPTORS, "mel_dist"],
            title or f"sensitivity at +-{self.k:g} std (per column, scaled)",
            ranked=self.ranked[:10],
        )


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass
class Ablation:
    mode: str
    dims: list[int]
    waveform_error: np.ndarray  # [len(dims)] |x_ablated - x| / |x|
    mel_distance: np.ndarray  # [len(dims)]
    all_waveform_error: float
    all_mel_distance: float

    def table(self) -> dict[str, Any]:
        order = np.argsort(-self.mel_distance)
        return {
            "mode": self.mode,
            "rows": [
                {
                    "dim": d,
                    "waveform_error": float(self.waveform_error[i]),
                    "mel_distance_db": float(self.mel_distance[i]),
                }
                for i, d in enumerate(self.dims)
            ],
            "all": {"waveform_error": self.all_waveform_error, "mel_distance_db": self.all_mel_distance},
            "ranked": [self.dims[i] for i in order],
        }


class Analysis:
    """Sensitivity, ablation and statistics over one ``Lab`` (and so one ``Service``)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    async def _decode_all(
        self, base: LatentFrames, variants: list[np.ndarray], options: LabOptions
    ) -> list[np.ndarray]:
        results = await asyncio.gather(
            *(
                self.lab.decode(LatentFrames(base.model, v, base.scales, base.num_samples), options)
                for v in variants
            )
        )
        return [r.audio.audio for r in results]

    async def sensitivity(
        self, source: LabInput, reference: Sequence[LabInput], sens: SensitivityOptions, options: LabOptions
    ) -> Sensitivity:
        base = await self.lab.latents(source, options)
        dims = _check_dims(sens.dims, base.frames.shape[1])
        if not 0 <= sens.k <= 10:
            raise invalid(f"k = {sens.k}", field="k", allowed="0 to 10 standard deviations")
        refs = [await self.lab.latents(r, options, f"reference[{i}]") for i, r in enumerate(reference)]
        std = np.concatenate([z.frames for z in refs or [base]]).std(axis=0)
        variants = []
        for d in dims:
            for sign in (1.0, -1.0):
                moved = base.frames.copy()
                moved[:, d] += sign * sens.k * std[d]
                variants.append(moved)
        audios = await self._decode_all(base, [base.frames, *variants], options)
        rate = base.model.sample_rate
        measured = await asyncio.to_thread(_measure, audios, rate)
        reference_audio, reference_desc = audios[0], measured[0]
        effect = np.array(
            [
                [(measured[1 + 2 * i][n] - measured[2 + 2 * i][n]) / 2 for n in DESCRIPTORS]
                for i in range(len(dims))
            ]
        ).reshape(len(dims), len(DESCRIPTORS))
        mels = await asyncio.to_thread(
            lambda: np.array(
                [
                    (
                        mel_distance(audios[1 + 2 * i], reference_audio, rate)
                        + mel_distance(audios[2 + 2 * i], reference_audio, rate)
                    )
                    / 2
                    for i in range(len(dims))
                ]
            )
        )
        result = Sensitivity(
            dims,
            sens.k,
            std,
            reference_desc,
            effect,
            mels,
            [dims[i] for i in np.argsort(-mels, kind="stable")],
            _ranked_by(dims, effect),
        )
        for d in result.ranked[: max(0, sens.listen)]:
            result.listen[d] = _wav(audios[1 + 2 * dims.index(d)], rate)
        return result

    async def ablation(
        self, source: LabInput, mode: str, dims: Sequence[int] | None, options: LabOptions
    ) -> Ablation:
        if mode not in ("zero", "mean"):
            raise invalid(f"mode {mode!r}", field="mode", allowed="zero, mean")
        base = await self.lab.latents(source, options)
        chosen = _check_dims(dims, base.frames.shape[1])
        fill = np.zeros(base.frames.shape[1], np.float32) if mode == "zero" else base.frames.mean(axis=0)
        variants = []
        for d in chosen:
            moved = base.frames.copy()
            moved[:, d] = fill[d]
            variants.append(moved)
        everything = base.frames.copy()
        everything[:, chosen] = fill[chosen]
        audios = await self._decode_all(base, [base.frames, *variants, everything], options)
        rate = base.model.sample_rate
        reference = audios[0]
        norm = float(np.linalg.norm(reference)) or 1.0
        errors = np.array([np.linalg.norm(a - reference) / norm for a in audios[1:]])
        mels = await asyncio.to_thread(
            lambda: np.array([mel_distance(a, reference, rate) for a in audios[1:]])
        )
        return Ablation(mode, chosen, errors[:-1], mels[:-1], float(errors[-1]), float(mels[-1]))

    async def statistics(self, sources: Sequence[LabInput], options: LabOptions) -> SpaceStatistics:
        if not 1 <= len(sources) <= self.lab.service.settings.max_recordings:
            raise invalid(
                f"{len(sources)} inputs",
                field="inputs",
                allowed=f"1 to {self.lab.service.settings.max_recordings}",
            )
        latents = [await self.lab.latents(s, options, f"inputs[{i}]") for i, s in enumerate(sources)]
        return space_statistics(np.concatenate([z.frames for z in latents]))


@dataclass
class SpaceStatistics:
    mean: np.ndarray  # [D]
    std: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    correlation: np.ndarray  # [D, D]
    explained_variance: np.ndarray  # [min(N, D)] ratios, descending
    num_frames: int

    def table(self) -> dict[str, Any]:
        cumulative = np.cumsum(self.explained_variance)
        return {
            "num_frames": self.num_frames,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
            "correlation": np.nan_to_num(self.correlation).tolist(),
            "explained_variance_ratio": self.explained_variance.tolist(),
            "components_for_90_percent": int(np.searchsorted(cumulative, 0.9) + 1),
        }

    def png(self, title: str = "") -> bytes:
        return plots.space_statistics_png(
            self.std,
            np.nan_to_num(self.correlation),
            self.explained_variance,
            title or f"latent space of {self.num_frames} frames",
        )


def space_statistics(frames: np.ndarray) -> SpaceStatistics:
    """Statistics of ``[N, D]`` frames."""
    x = frames.astype(np.float64)
    centred = x - x.mean(axis=0)
    singular = np.linalg.svd(centred, compute_uv=False) if len(x) > 1 else np.zeros(1)
    variance = singular**2
    ratio = variance / variance.sum() if variance.sum() > 0 else variance
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.corrcoef(x, rowvar=False) if len(x) > 1 else np.eye(x.shape[1])
    return SpaceStatistics(
        x.mean(axis=0), x.std(axis=0), x.min(axis=0), x.max(axis=0), np.atleast_2d(correlation), ratio, len(x)
    )


def _measure(audios: list[np.ndarray], rate: int) -> list[dict[str, float]]:
    return [descriptors(a, rate) for a in audios]


def _ranked_by(dims: list[int], effect: np.ndarray) -> dict[str, list[int]]:
    out = {}
    for j, name in enumerate(DESCRIPTORS):
        column = np.abs(np.nan_to_num(effect[:, j], nan=0.0))
        out[name] = [dims[i] for i in np.argsort(-column, kind="stable")]
    return out


def _check_dims(dims: Sequence[int] | None, latent_dim: int) -> list[int]:
    chosen = list(range(latent_dim)) if dims is None or len(dims) == 0 else [int(d) for d in dims]
    if len(set(chosen)) != len(chosen) or not all(0 <= d < latent_dim for d in chosen):
        raise invalid(f"dims {chosen[:8]}", field="dims", allowed=f"distinct dimensions 0..{latent_dim - 1}")
    if len(chosen) > MAX_DIMS_PER_CALL:
        raise invalid(f"{len(chosen)} dims", field="dims", allowed=f"at most {MAX_DIMS_PER_CALL}")
    return chosen


def _wav(audio: np.ndarray, rate: int) -> bytes:
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio.T, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
