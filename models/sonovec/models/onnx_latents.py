"""One more ONNX graph for the latent lab: the decoder from continuous latents (no quantizer).

::

    decoder_latents   latents [B, 128, F] (, scales [B]) -> audio [B, C, F * 320]   all dynamic

It lives beside the graphs of ``onnx_export`` (same folder, same rewrites for ONNX Runtime), written
once per export folder by ``ensure_latent_decoder``, atomically (a temporary file renamed into
place), so an export made before this graph existed gains it without being redone.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sonovec.models.base import ModelSpec
from sonovec.models.onnx_export import _export, prepare, rewrite_for_ort

logger = logging.getLogger(__name__)

GRAPH = "decoder_latents"


class LatentDecoderGraph(nn.Module):
    """``latents [B, D, F]``, ``scales [B]`` -> ``audio [B, C, F * hop]``: the decoder, then times
    the window's scale (48 kHz; the 24 kHz graph ignores its scales)."""

    def __init__(self, decoder: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.decoder = decoder
        self.normalize = normalize

    def forward(self, latents: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        audio = self.decoder(latents)
        if self.normalize:
            audio = audio * scales.view(-1, 1, 1)
        return audio


def export_latent_decoder(prepared: Any, spec: ModelSpec, path: Path) -> None:
    decoder = rewrite_for_ort(copy.deepcopy(prepared.decoder), dynamic=True)
    latents = torch.randn(2, spec.latent_dim, 37)
    _export(
        LatentDecoderGraph(decoder, spec.normalize),
        (latents, torch.ones(2)),
        path,
        ["latents", "scales"],
        ["audio"],
        {"latents": {0: "batch", 2: "frames"}, "scales": {0: "batch"}, "audio": {0: "batch", 2: "samples"}},
    )


def ensure_latent_decoder(model: nn.Module, spec: ModelSpec, directory: Path) -> Path:
    """``directory/decoder_latents.onnx`` for ``model``, exported now if it is not there yet."""
    path = directory / f"{GRAPH}.onnx"
    if path.is_file():
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{GRAPH}.", suffix=".onnx", dir=directory)
    os.close(fd)
    try:
        export_latent_decoder(prepare(model, spec), spec, Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info("onnx: exported %s for %s to %s", GRAPH, spec.name, path)
    return path
