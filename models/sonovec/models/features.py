"""Classic feature extractors as models beside EnCodec: log-mel, MFCC (+ deltas), chroma (librosa).

They are baselines to compare a learned embedding with, and they run through the same pipeline:
the same window plan (chunks with left context, as the causal 24 kHz EnCodec), the same batcher,
pooling, cache and collections (their own spaces: a fingerprint per feature and librosa version).

Geometry, every feature: 22,050 Hz mono, one frame per 512 samples (``librosa``'s defaults, frames
centred at ``i * 512``), chunks of 430 frames (~10 s) fed with 8 frames (4,096 samples) of left
context whose frames are dropped. The right end of each chunk is centre-padded by librosa, so the
last frame before each chunk boundary differs from one long analysis (checked for MFCC: every
other frame within 2e-6); files of one chunk are exactly librosa on the whole file. Chroma runs
with ``tuning=0`` (no per-chunk tuning estimate). They have no decoder and no codes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

import numpy as np

from sonovec.models.base import Encoded, ModelSpec, WeightsInfo, encode_by_length

RATE = 22_050
HOP = 512
N_FFT = 2048
N_MELS = 128
N_MFCC = 20


def _spec(name: str, dim: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        sample_rate=RATE,
        channels=1,
        hop_length=HOP,
        latent_dim=dim,
        bandwidths=(),
        codebook_size=1,
        window=430 * HOP,
        stride=430 * HOP,
        context=8 * HOP,
        decodes=False,
    )


FEATURE_SPECS: dict[str, ModelSpec] = {
    "logmel": _spec("logmel", N_MELS),
    "mfcc": _spec("mfcc", 3 * N_MFCC),
    "chroma": _spec("chroma", 12),
}


def _logmel(y: np.ndarray) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(y=y, sr=RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS)
    return np.asarray(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None))


def _mfcc(y: np.ndarray) -> np.ndarray:
    """MFCC with their first and second deltas, ``[3 * 20, F]``."""
    import librosa

    mfcc = librosa.feature.mfcc(y=y, sr=RATE, n_mfcc=N_MFCC, n_fft=N_FFT, hop_length=HOP)
    width = min(9, mfcc.shape[1] - (1 - mfcc.shape[1] % 2))  # deltas need an odd width <= frames
    if width < 3:
        deltas = np.zeros((2 * N_MFCC, mfcc.shape[1]), mfcc.dtype)
    else:
        deltas = np.concatenate([librosa.feature.delta(mfcc, width=width, order=o) for o in (1, 2)])
    return np.concatenate([mfcc, deltas])


def _chroma(y: np.ndarray) -> np.ndarray:
    import librosa

    return np.asarray(librosa.feature.chroma_stft(y=y, sr=RATE, n_fft=N_FFT, hop_length=HOP, tuning=0.0))


EXTRACTORS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "logmel": _logmel,
    "mfcc": _mfcc,
    "chroma": _chroma,
}


class FeaturesBackend:
    """One feature extractor behind the ``Backend`` interface (encode only). Thread-safe."""

    kind = "features"
    device = "cpu"

    def __init__(self, spec: ModelSpec) -> None:
        from importlib.metadata import version as installed

        self.spec = spec
        self._extract = EXTRACTORS[spec.name]
        version = installed("librosa")
        digest = hashlib.sha256(
            f"{spec.name}:{RATE}:{HOP}:{N_FFT}:{N_MELS}:{N_MFCC}:{version}".encode()
        ).hexdigest()
        self.weights = WeightsInfo(
            source=f"features:librosa=={version}", fingerprint=f"{spec.name}-{digest[:16]}", pretrained=True
        )
        self._lock = threading.Lock()  # numba's first compilation is not re-entrant-safe

    def encode(self, audio: np.ndarray, *, full_precision: bool = False) -> Encoded:
        """``[B, 1, T]`` -> features ``[B, D, ceil(T / 512)]`` (frames centred at ``i * 512``)."""
        if audio.ndim != 3 or audio.shape[1] != 1 or audio.shape[2] == 0:
            raise ValueError(f"{self.spec.name} takes [B, 1, T] audio; got {audio.shape}")
        frames = self.spec.num_frames(audio.shape[2])
        with self._lock:
            rows = [self._extract(np.asarray(x[0], np.float32))[:, :frames] for x in audio]
        latents = np.stack(rows).astype(np.float32)
        return Encoded(latents, np.ones(len(audio), np.float32))

    def encode_windows(
        self, windows: Sequence[np.ndarray], *, full_precision: bool = False
    ) -> list[tuple[np.ndarray, float]]:
        return encode_by_length(self.encode, windows, full_precision)

    def quantize(self, latents: np.ndarray, bandwidth: float) -> np.ndarray:
        raise ValueError(f"{self.spec.name} is a feature extractor: it has no codes")

    def decode(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        raise ValueError(f"{self.spec.name} is a feature extractor: it has no decoder")

    def decode_latents(self, latents: np.ndarray, scales: np.ndarray) -> np.ndarray:
        raise ValueError(f"{self.spec.name} is a feature extractor: it has no decoder")
