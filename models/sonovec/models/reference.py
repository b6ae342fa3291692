"""Ground truth for tests and benchmarks: the unmodified ``EncodecModel`` path on one file.

Everything here goes through ``EncodecModel.encode`` / ``decode`` themselves, on a private instance
that shares the caller's weights (so ``set_target_bandwidth`` never touches the caller's model). The
encoder latents are recorded as ``encode`` computes them, not recomputed by a copy of its code.

Segments are the model's own: 48 kHz cuts a file into 1 s segments every 47,520 samples, each
normalised by its own RMS; 24 kHz encodes the whole file as one segment.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from encodec import EncodecModel  # untyped package: Any to mypy


class _Recorder(nn.Module):
    """Wraps the encoder and keeps each output ``[1, 128, F]``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.outputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.encoder(x)
        self.outputs.append(emb)
        return emb


def _private(model: EncodecModel, bandwidth: float | None) -> tuple[EncodecModel, _Recorder]:
    """A shallow copy of ``model`` with its own bandwidth and a recording encoder; weights shared."""
    private = copy.copy(model)
    private._modules = dict(model._modules)  # else assigning a submodule would write into model's dict
    recorder = _Recorder(model.encoder)
    private.encoder = recorder  # type: ignore[assignment]  # a drop-in: same call, same output
    private.bandwidth = None
    if bandwidth is not None:
        private.set_target_bandwidth(bandwidth)
    return private, recorder


def _run(model: EncodecModel, wav: np.ndarray, bandwidth: float | None) -> tuple[list, list[torch.Tensor]]:
    if wav.ndim != 2:
        raise ValueError(f"reference helpers take one file [C, T]; got {wav.shape}")
    private, recorder = _private(model, bandwidth)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(device)[None]  # [1, C, T]
    with torch.inference_mode():
        frames = private.encode(x)
    return frames, recorder.outputs


def reference_encode(
    model: EncodecModel, wav: np.ndarray, bandwidth: float
) -> list[tuple[np.ndarray, float]]:
    """``EncodecModel.encode`` of ``wav [C, T]`` at ``bandwidth``: per segment ``(codes [K, F], scale)``.

    ``scale`` is 1.0 where the model does not normalise (24 kHz).
    """
    frames, _ = _run(model, wav, bandwidth)
    return [
        (codes[0].cpu().numpy().astype(np.int64), 1.0 if scale is None else float(scale.reshape(-1)[0]))
        for codes, scale in frames
    ]


def reference_latents(model: EncodecModel, wav: np.ndarray) -> np.ndarray:
    """Encoder latents ``[128, sum of segment frames]`` that ``EncodecModel.encode(wav [C, T])`` computed,
    segment after segment, concatenated along frames."""
    _, latents = _run(model, wav, None)
    return torch.cat([emb[0] for emb in latents], dim=-1).float().cpu().numpy()


def reference_decode(model: EncodecModel, codes: np.ndarray, scale: float) -> np.ndarray:
    """``EncodecModel.decode`` of one segment: codes ``[K, F]`` -> audio ``[C, F * 320]``."""
    device = next(model.parameters()).device
    codes_t = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)).to(device)[None]  # [1, K, F]
    scale_t = torch.tensor([[scale]], dtype=torch.float32, device=device) if model.normalize else None
    with torch.inference_mode():
        audio = model.decode([(codes_t, scale_t)])
    return audio[0].float().cpu().numpy()
