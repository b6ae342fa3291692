"""A tiny deterministic stand-in for EnCodec, for fast tests of everything around the model.

It keeps the real model's geometry (sample rate, channels, hop, windows, normalisation) so
windowing, batching, pooling, caching and indexing are exercised exactly, but each latent frame
depends only on its own ``hop`` input samples, so it runs in microseconds and needs no torch.

Its decoder is honest for the latent lab: ``decode_latents`` inverts the encoder as far as a
``hop -> D`` projection can be inverted (``arctanh``, then the projection's pseudo-inverse), so
``encode(decode_latents(z)) == z`` for ``|z| < 1`` and ``decode_latents(encode(x))`` is ``x``
projected on the projection's row space. ``loudness_dim`` (tests of the sensitivity analysis) wires
one latent dimension to loudness: each decoded frame is multiplied by ``exp(2 z[loudness_dim])``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from sonovec.models.base import Encoded, ModelSpec, WeightsInfo, encode_by_length


class FakeBackend:
    kind = "fake"
    device = "cpu"

    def __init__(
        self, spec: ModelSpec, seed: int = 0, delay: float = 0.0, loudness_dim: int | None = None
    ) -> None:
        self.spec = spec
        self.delay = delay
        self.loudness_dim = loudness_dim  # simulated model seconds per audio second, for load and drain tests
        rng = np.random.default_rng(seed)
        # float64, so a row's result does not depend on how many rows BLAS saw (batch size): the
        # fake must give identical results however windows were batched.
        self._projection = rng.standard_normal((spec.hop_length, spec.latent_dim)) / np.sqrt(spec.hop_length)
        self._inverse = np.linalg.pinv(self._projection)  # [D, hop]: the least-squares way back
        self.weights = WeightsInfo(
            source=f"fake:seed={seed}",
            fingerprint=f"fake-{spec.name}-{seed}",
            pretrained=False,
            warning="fake backend: deterministic stand-in, not EnCodec; for tests only",
        )

    def _simulate_work(self, samples: int) -> None:
        if self.delay:
            time.sleep(self.delay * samples / self.spec.sample_rate)

    def encode(self, audio: np.ndarray, *, full_precision: bool = False) -> Encoded:
        """Always float32/float64 arithmetic: ``full_precision`` changes nothing here."""
        batch, _, length = audio.shape
        self._simulate_work(batch * length)
        hop = self.spec.hop_length
        if self.spec.normalize:
            mono = audio.mean(axis=1, keepdims=True)
            scales = (1e-8 + np.sqrt(np.square(mono).mean(axis=2, keepdims=True))).astype(np.float32)
            audio = audio / scales
        else:
            scales = np.ones((batch, 1, 1), np.float32)
        frames = self.spec.num_frames(length)
        mono = np.zeros((batch, frames * hop), np.float32)
        mono[:, :length] = audio.mean(axis=1)
        frames_in = mono.reshape(batch * frames, hop).astype(np.float64)  # [B * F, hop] -> [B, F, D] below
        latents = np.tanh(frames_in @ self._projection).astype(np.float32).reshape(batch, frames, -1)
        return Encoded(np.ascontiguousarray(latents.transpose(0, 2, 1)), scales.reshape(batch))

    def encode_windows(
        self, windows: Sequence[np.ndarray], *, full_precision: bool = False
    ) -> list[tuple[np.ndarray, float]]:
        return encode_by_length(self.encode, windows, full_precision)

    def quantize(self, latents: np.ndarray, bandwidth: float) -> np.ndarray:
        k = self.spec.num_codebooks(bandwidth)
        levels = np.floor((latents[:, :k, :] + 1.0) * 0.5 * (self.spec.codebook_size - 1) + 0.5)
        return np.clip(levels, 0, self.spec.codebook_size - 1).astype(np.int64)

    def decode(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        batch, _, frames = codes.shape
        self._simulate_work(batch * frames * self.spec.hop_length)
        level = codes[:, 0, :].astype(np.float32) / (self.spec.codebook_size - 1) * 2.0 - 1.0
        audio = np.repeat(level, self.spec.hop_length, axis=1) * 0.1 * scales.reshape(batch, 1)
        return np.repeat(audio[:, None, :], self.spec.channels, axis=1).astype(np.float32)

    def decode_latents(self, latents: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """``[B, D, F]`` latents -> ``[B, C, F * hop]``: ``arctanh``, the pseudo-inverse, times the scale."""
        batch, dim, frames = latents.shape
        if dim != self.spec.latent_dim or scales.shape != (batch,):
            raise ValueError(f"decode_latents takes [B, {self.spec.latent_dim}, F] and [B]; got "
                             f"{latents.shape}, {scales.shape}")
        self._simulate_work(batch * frames * self.spec.hop_length)
        z = np.clip(latents.astype(np.float64).transpose(0, 2, 1), -0.999999, 0.999999)  # [B, F, D]
        samples = np.arctanh(z).reshape(batch * frames, dim) @ self._inverse  # [B * F, hop]
        if self.loudness_dim is not None:
            gain = z.reshape(batch * frames, dim)[:, self.loudness_dim, None]
            samples = samples * np.exp(2.0 * gain)
        mono = samples.reshape(batch, frames * self.spec.hop_length) * scales.reshape(batch, 1)
        return np.repeat(mono[:, None, :], self.spec.channels, axis=1).astype(np.float32)
