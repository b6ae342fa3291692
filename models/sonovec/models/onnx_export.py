"""Export EnCodec's encoder, quantizer and decoder to ONNX graphs that ONNX Runtime runs exactly.

``torch.onnx.export(model.encoder, x)`` looks right and is not: ``SConv1d`` computes its padding from
``x.shape`` with Python ints (``math.ceil``), so the trace bakes the example's length into every ``Pad``
and a graph declared with a dynamic time axis silently returns the wrong number of frames for any
other length. What is exported here instead, per model (``graph_names``)::

    front_fixed_<T>   audio [B, C, T] -> hidden [B, 512, F], scales [B]   T fixed, B dynamic
                      (48 kHz: T = 48000, the full 1 s window; 24 kHz: the 10 s chunk, and the chunk
                      with its 2 s of left context). Traced at exactly T: the Python-int padding is
                      right by construction, and every shape is a constant ORT can fold.
    front_dynamic     audio [B, C, T] -> hidden, scales                 B and T dynamic: 48 kHz
                      tails, short 24 kHz files. Padding computed with tensor ops (see below).
    tail              hidden [B, 512, F] -> latents [B, 128, F]          LSTM + last conv, B, F dynamic
    quantizer_k<K>    latents [B, 128, F] -> codes [B, K, F] int64        one graph per bandwidth
    decoder           codes [B, K, F] int64 (, scales [B]) -> audio [B, C, F * 320]   all dynamic

Why the encoder is cut before its LSTM: the convolutions run fastest one window at a time (their
activations stay in cache) while the LSTM streams 4 MB of recurrent weights per frame step and wants
many windows at once. The backend runs ``front`` per window and ``tail`` on the whole batch.

The 48 kHz per-window RMS normalisation runs inside ``front`` (``scales`` out) and its inverse inside
``decoder``, as ``EncodecModel._encode_frame`` / ``_decode_frame`` do. Weight norm (24 kHz) is folded
into plain weights first (the ``g * v / |v|`` it computes on every forward, computed once).

Rewrites for ONNX Runtime's CPU kernels, each exact up to float rounding (tests hold them to the
PyTorch reference): ELU as ``max(x, exp(min(x, 0)) - 1)`` (ORT's Elu kernel is scalar, its Exp is
vectorised); each Conv1d as a Conv2d over ``[B, C, 1, T]`` (ORT's blocked NCHWc conv kernels exist
only for 2-D); no full-length ``Slice`` after each reflect pad in fixed graphs.

Traceable padding (dynamic graphs). For a conv of kernel ``k``, stride ``s`` (dilation 1 whenever
``s > 1``, so ``padding_total = k - s``) encodec pads ``extra = ceil(L / s) * s - L = (-L) mod s``
samples on the right so the last window is full; ``extra = 0`` when ``s = 1``. Reflect padding of an
input not longer than the pad first appends zeros (``pad1d``), reflects, then cuts that many off::

    L = 2, pad (3, 3):  x = a b            -> a b 0 0          (appended: max_pad + 1 - L = 2)
                        reflect (3, 3)     -> 0 0 b | a b 0 0 | 0 b a
                        cut the 2 appended ->       0 0 b a b 0 0 0 b   = pad1d's output

Both are computed from the traced length (``Shape``, ``Mod``, ``Max``), so one graph serves every length.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sonovec.models.base import ModelSpec

logger = logging.getLogger(__name__)

OPSET = 17
EXPORT_VERSION = 2  # bump whenever the exported graphs change: part of the cache key
MANIFEST = "manifest.json"
TAIL_LAYERS = 3  # SLSTM, ELU, SConv1d: the encoder's last layers, run on whole batches


# ---- graphs as torch modules -------------------------------------------------------------------


class FrontGraph(nn.Module):
    """``audio [B, C, T]`` -> ``(hidden [B, 512, F], scales [B])``; 48 kHz normalisation inside."""

    def __init__(self, layers: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.layers = layers
        self.normalize = normalize

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalize:  # EncodecModel._encode_frame, line for line
            mono = audio.mean(dim=1, keepdim=True)
            volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
            scale = 1e-8 + volume  # [B, 1, 1]
            audio = audio / scale
            scales = scale.reshape(-1)
        else:
            scales = torch.ones_like(audio[:, 0, 0])
        return self.layers(audio), scales


class QuantizerGraph(nn.Module):
    """``latents [B, D, F]`` -> ``codes [B, K, F]`` int64: ``ResidualVectorQuantization.encode`` with
    ``EuclideanCodebook.quantize``'s distance written the same way (near ties then break alike)."""

    def __init__(self, codebooks: list[torch.Tensor]) -> None:
        super().__init__()
        for k, embed in enumerate(codebooks):
            self.register_buffer(f"embed{k}", embed.detach().clone())  # [N, D]
        self.num_codebooks = len(codebooks)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        batch, dim, frames = latents.shape
        residual = latents.transpose(1, 2).reshape(-1, dim)  # [(B F), D], as preprocess() flattens
        indices = []
        for k in range(self.num_codebooks):
            embed = self.get_buffer(f"embed{k}")
            dist = -(
                residual.pow(2).sum(1, keepdim=True)
                - 2 * residual @ embed.t()
                + embed.pow(2).sum(1).unsqueeze(0)
            )
            index = dist.argmax(dim=-1)  # [(B F)]
            residual = residual - F.embedding(index, embed)
            indices.append(index)
        codes = torch.stack(indices)  # [K, (B F)]
        return codes.reshape(self.num_codebooks, batch, frames).transpose(0, 1)


class DecoderGraph(nn.Module):
    """``codes [B, K, F]``, ``scales [B]`` -> ``audio [B, C, F * hop]``: codebook lookup summed over
    the K codebooks used, decoder, then times the window's scale (48 kHz; 24 kHz has no scales)."""

    table: torch.Tensor

    def __init__(self, codebooks: list[torch.Tensor], decoder: nn.Module, normalize: bool) -> None:
        super().__init__()
        self.codebook_size = codebooks[0].shape[0]
        self.register_buffer("table", torch.cat([c.detach() for c in codebooks]))  # [Kmax * N, D]
        self.decoder = decoder
        self.normalize = normalize

    def forward(self, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(codes.shape[1], device=codes.device) * self.codebook_size  # [K]
        emb = F.embedding(codes + offsets.view(1, -1, 1), self.table).sum(dim=1)  # [B, F, D]
        audio = self.decoder(emb.transpose(1, 2))
        if self.normalize:
            audio = audio * scales.view(-1, 1, 1)
        return audio


# ---- padding: fixed and traceable --------------------------------------------------------------


def _length(x: torch.Tensor) -> torch.Tensor:
    """The time length of ``x`` as a traced int64 scalar, never a Python int."""
    return torch._shape_as_tensor(x)[-1]


def _pad1d_dynamic(
    x: torch.Tensor, left: int, right: int, extra: torch.Tensor | int, mode: str
) -> torch.Tensor:
    """encodec's ``pad1d(x, (left, right + extra), mode)`` for any traced length (module doc)."""
    if mode != "reflect":
        zero_pads: Any = [left, right + extra]
        return F.pad(x, zero_pads, mode)
    length = _length(x)
    total_right = right + extra
    max_pad = torch.clamp(torch.as_tensor(total_right), min=left)
    short = torch.clamp(max_pad + 1 - length, min=0)  # zeros appended so the reflection fits
    # Tensor-valued pads on purpose: the tracer records them as computed, not as constants.
    pads: Any = ([0, short], [left, total_right])
    padded = F.pad(F.pad(x, pads[0]), pads[1], mode="reflect")
    return padded[..., : length + left + total_right]


def _pad1d_fixed(x: torch.Tensor, left: int, right: int, extra: int, mode: str) -> torch.Tensor:
    """encodec's ``pad1d`` at a length known while tracing, minus its no-op full-length slice."""
    if mode != "reflect":
        return F.pad(x, (left, right + extra), mode)
    length = x.shape[-1]
    short = max(0, max(left, right + extra) + 1 - length)
    padded = F.pad(F.pad(x, (0, short)) if short else x, (left, right + extra), mode)
    return padded[..., : padded.shape[-1] - short] if short else padded


def _conv_geometry(module: Any) -> tuple[int, int, int]:
    conv = module.conv.conv
    kernel, stride, dilation = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
    padding_total = (kernel - 1) * dilation - (stride - 1)
    if stride > 1 and kernel - padding_total != stride:
        raise NotImplementedError(f"SConv1d with kernel {kernel}, stride {stride}, dilation {dilation}")
    return padding_total, stride, kernel


def _sconv1d_forward(self: Any, x: torch.Tensor, *, dynamic: bool) -> torch.Tensor:
    padding_total, stride, _ = _conv_geometry(self)
    # get_extra_padding_for_conv1d == (-L) mod s here (module doc); causal convs pad on the left only.
    padding_right = 0 if self.causal else padding_total // 2
    padding_left = padding_total - padding_right
    if dynamic:
        extra = (stride - _length(x) % stride) % stride if stride > 1 else 0
        return self.conv(_pad1d_dynamic(x, padding_left, padding_right, extra, self.pad_mode))
    extra_fixed = (stride - x.shape[-1] % stride) % stride
    return self.conv(_pad1d_fixed(x, padding_left, padding_right, extra_fixed, self.pad_mode))


def _sconv_transpose1d_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    convtr = self.convtr.convtr
    padding_total = convtr.kernel_size[0] - convtr.stride[0]
    y = self.convtr(x)
    padding_right = math.ceil(padding_total * self.trim_right_ratio) if self.causal else padding_total // 2
    padding_left = padding_total - padding_right
    # A negative stop is a constant in the graph and right for every length (unpad1d uses x.shape).
    return y[..., padding_left : (-padding_right if padding_right else None)]


# ---- rewrites for ONNX Runtime -----------------------------------------------------------------


class ExpELU(nn.Module):
    """``ELU(alpha=1)`` as ``max(x, exp(min(x, 0)) - 1)``: x > 0 gives x; x <= 0 gives exp(x) - 1,
    which is >= x. Exported as Clip, Exp, Sub, Max, all vectorised in ORT's CPU kernels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, torch.exp(torch.clamp(x, max=0.0)) - 1.0)


class Conv1dAs2d(nn.Module):
    """A Conv1d run as a Conv2d on ``[B, C, 1, T]``: same weights, same sums; ORT then picks its
    blocked NCHWc kernels. Keeps the Conv1d attributes encodec's padding code reads."""

    def __init__(self, conv: nn.Conv1d) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation = conv.kernel_size, conv.stride, conv.dilation
        self.conv2d = nn.Conv2d(
            conv.in_channels, conv.out_channels, (1, conv.kernel_size[0]), (1, conv.stride[0]),
            dilation=(1, conv.dilation[0]), groups=conv.groups, bias=conv.bias is not None,
        )
        with torch.no_grad():
            self.conv2d.weight.copy_(conv.weight.unsqueeze(2))
            if conv.bias is not None and self.conv2d.bias is not None:
                self.conv2d.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2d(x.unsqueeze(2)).squeeze(2)


def rewrite_for_ort(module: nn.Module, *, dynamic: bool) -> nn.Module:
    """Apply the module doc's rewrites to ``module`` in place: a private copy, never the served model.

    ``dynamic``: padding computed from the traced length (one graph for every length); else with
    Python ints at the length being traced.
    """
    encodec = _import_encodec()
    for sub in list(module.modules()):
        if isinstance(sub, encodec.modules.SConv1d):
            _conv_geometry(sub)  # refuses geometries the padding formula does not cover
            sub.forward = types.MethodType(lambda self, x: _sconv1d_forward(self, x, dynamic=dynamic), sub)
        elif isinstance(sub, encodec.modules.SConvTranspose1d):
            sub.forward = types.MethodType(_sconv_transpose1d_forward, sub)
        elif isinstance(sub, encodec.modules.conv.NormConv1d) and isinstance(sub.conv, nn.Conv1d):
            sub.conv = Conv1dAs2d(sub.conv)
        for name, child in sub.named_children():
            if isinstance(child, nn.ELU):
                if child.alpha != 1.0:
                    raise NotImplementedError(f"ELU with alpha {child.alpha}")
                setattr(sub, name, ExpELU())
    return module


# ---- preparing the model -----------------------------------------------------------------------


def _import_encodec() -> types.ModuleType:
    from sonovec.models._compat import import_encodec

    return import_encodec()


def remove_weight_norm(module: nn.Module) -> nn.Module:
    """Fold weight norm (hook style or parametrization style) into plain weights, in place."""
    for sub in module.modules():
        if torch.nn.utils.parametrize.is_parametrized(sub, "weight"):
            torch.nn.utils.parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)
        elif hasattr(sub, "weight_g") and hasattr(sub, "weight_v"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.nn.utils.remove_weight_norm(sub)
    return module


def prepare(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """A private fp32 copy of ``model`` with weight norm folded in; ``model`` is left as it is.

    (``copy.deepcopy`` refuses modules under hook-style weight norm, hence a fresh model.)
    """
    from sonovec.models.weights import new_model

    fresh = new_model(spec.name)
    fresh.load_state_dict(model.state_dict())
    return remove_weight_norm(fresh.float().eval())


def codebooks(model: Any) -> list[torch.Tensor]:
    """Every RVQ codebook ``[N, D]``, in order; no projections (EnCodec has none)."""
    layers = model.quantizer.vq.layers
    for layer in layers:
        if not isinstance(layer.project_in, nn.Identity) or not isinstance(layer.project_out, nn.Identity):
            raise NotImplementedError("RVQ layers with projections are not exported")
    return [layer._codebook.embed.detach().float() for layer in layers]


def split_encoder(encoder: Any) -> tuple[nn.Sequential, nn.Sequential]:
    """``(front, tail)``: the encoder's layers before its LSTM, and the LSTM with what follows."""
    layers = list(encoder.model)
    tail = layers[-TAIL_LAYERS:]
    if type(tail[0]).__name__ != "SLSTM":
        raise NotImplementedError(f"expected the encoder's LSTM {TAIL_LAYERS} layers from the end")
    return nn.Sequential(*layers[:-TAIL_LAYERS]), nn.Sequential(*tail)


def fixed_lengths(spec: ModelSpec) -> tuple[int, ...]:
    """Input lengths that get a static graph: the full windows the service feeds most."""
    if spec.segmented or not spec.context:
        return (spec.window,)
    return (spec.window, spec.window + spec.context)


def graph_names(spec: ModelSpec) -> list[str]:
    names = [f"front_fixed_{length}" for length in fixed_lengths(spec)] + ["front_dynamic", "tail", "decoder"]
    return names + [f"quantizer_k{spec.num_codebooks(b)}" for b in spec.bandwidths]


# ---- export --------------------------------------------------------------------------------------


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shapes: this module's whole subject
        torch.onnx.export(
            module.eval(), args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
            output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True,
        )


def _export_front(prepared: Any, spec: ModelSpec, path: Path, length: int | None) -> None:
    front, _ = split_encoder(rewrite_for_ort(copy.deepcopy(prepared.encoder), dynamic=length is None))
    # Batch 2, not 1: tracing at batch 1 lets some reshapes fold the batch axis into constants.
    audio = torch.randn(2, spec.channels, length or spec.sample_rate // 3 + 7)
    time_axis = {2: "samples"} if length is None else {}
    _export(FrontGraph(front, spec.normalize), (audio,), path, ["audio"], ["hidden", "scales"],
            {"audio": {0: "batch", **time_axis}, "hidden": {0: "batch", 2: "frames"}, "scales": {0: "batch"}})


def export_graph(name: str, prepared: Any, spec: ModelSpec, path: Path) -> None:
    """Write graph ``name`` (one of ``graph_names(spec)``) of a ``prepare``d model to ``path``."""
    frames = {0: "batch", 2: "frames"}
    if name.startswith("front_fixed_"):
        _export_front(prepared, spec, path, int(name.removeprefix("front_fixed_")))
    elif name == "front_dynamic":
        _export_front(prepared, spec, path, None)
    elif name == "tail":
        _, tail = split_encoder(rewrite_for_ort(copy.deepcopy(prepared.encoder), dynamic=True))
        slstm: Any = tail[0]
        hidden = torch.randn(2, slstm.lstm.input_size, 37)
        _export(tail, (hidden,), path, ["hidden"], ["latents"], {"hidden": frames, "latents": frames})
    elif name == "decoder":
        decoder = rewrite_for_ort(copy.deepcopy(prepared.decoder), dynamic=True)
        decoder_graph = DecoderGraph(codebooks(prepared), decoder, spec.normalize)
        codes = torch.randint(0, spec.codebook_size, (2, 3, 37))
        _export(decoder_graph, (codes, torch.ones(2)), path, ["codes", "scales"], ["audio"],
                {"codes": {0: "batch", 1: "codebooks", 2: "frames"}, "scales": {0: "batch"},
                 "audio": {0: "batch", 2: "samples"}})
    elif name.startswith("quantizer_k"):
        graph = QuantizerGraph(codebooks(prepared)[: int(name.removeprefix("quantizer_k"))])
        latents = torch.randn(2, spec.latent_dim, 37)
        _export(graph, (latents,), path, ["latents"], ["codes"], {"latents": frames, "codes": frames})
    else:
        raise ValueError(f"unknown graph {name!r}; known: {', '.join(graph_names(spec))}")


def cache_key(fingerprint: str, ort_version: str) -> str:
    """Folder name of one export: what the graphs depend on (weights, opset, runtime, this code)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in fingerprint)
    return f"{safe}-opset{OPSET}-ort{ort_version}-torch{torch.__version__.split('+')[0]}-v{EXPORT_VERSION}"


def ensure_exported(model: nn.Module, spec: ModelSpec, directory: Path, *, fingerprint: str) -> bool:
    """Make sure ``directory`` holds every graph of ``spec`` for ``model``; True if it exported now.

    A finished export is renamed into place in one step, so a killed export leaves no half folder
    and concurrent processes agree on one copy (a loser's is discarded).
    """
    if (directory / MANIFEST).is_file():
        logger.info("onnx: reusing the export in %s", directory)
        return False
    directory.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    prepared = prepare(model, spec)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    names = graph_names(spec)
    logger.info("onnx: exporting %s once for weights %s (%d graphs, cached in %s)",
                spec.name, fingerprint, len(names), directory)
    try:
        for number, name in enumerate(names, 1):
            logger.info("onnx: export %d/%d %s (%.0f s so far)", number, len(names), name,
                        time.perf_counter() - started)
            export_graph(name, prepared, spec, tmp / f"{name}.onnx")
        info = {"model": spec.name, "fingerprint": fingerprint, "opset": OPSET,
                "export_version": EXPORT_VERSION, "torch": torch.__version__, "graphs": graph_names(spec)}
        (tmp / MANIFEST).write_text(json.dumps(info, indent=2))
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("onnx: exported %s in %.1f s to %s", spec.name, time.perf_counter() - started, directory)
    return True
