"""EnCodec in PyTorch behind the ``Backend`` interface: encode, quantize and decode split apart.

``EncodecModel.encode`` walks a file segment by segment and quantizes each with the bandwidth stored
on the model. The service batches windows of many requests and picks a bandwidth per request, so the
three stages are separate calls here, each a line-for-line copy of ``EncodecModel._encode_frame`` /
``_decode_frame`` with the quantizer moved out of the first and the bandwidth passed as an argument
(``set_target_bandwidth`` is never called: no per-request state lives on the shared model)::

    audio [B, C, T] --(48 kHz: / RMS scale)--> encoder --> latents [B, 128, F] ----> encode()
    latents [B, 128, F] --> quantizer.encode(bandwidth) --> codes [B, K, F] -------> quantize()
    codes [B, K, F] --> quantizer.decode --> decoder --(* scale)--> audio [B, C, F*320] --> decode()
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING

import numpy as np
import torch

from sonovec.models.base import BackendOptions, Encoded, ModelSpec, WeightsInfo, cpu_count
from sonovec.models.weights import load_model

if TYPE_CHECKING:
    from encodec import EncodecModel  # untyped package: Any to mypy

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available) -> a concrete device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but this torch build sees no CUDA device")
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        raise ValueError(f"unsupported device {device!r}: use cpu, cuda, cuda:N or auto")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None = plain fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device (CPU autocast runs bf16): use --precision bf16 or fp32")
    return PRECISIONS[precision]


class TorchBackend:
    """One ``EncodecModel`` on one device; thread-safe, so several batcher workers may call at once.

    On CUDA each calling thread gets its own stream, inputs go up from pinned (page-locked) host
    memory and outputs come down into it with non-blocking copies, and a call waits only for its own
    stream: with two workers one batch is stacked, copied and launched while the other computes.
    On CPU, ``threads`` cores (0: all) are divided among the workers as torch's intra-op threads
    (process-wide in torch: one backend per process).

    Reduced precision (``bf16``/``fp16`` autocast) applies to embeddings and decoding; latents that
    will be quantized are computed in fp32 (``encode(..., full_precision=True)``), since bf16 flips
    about 4 % of the codes at 3 kbps and 17 % at 24 kbps.
    """

    kind = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        model: EncodecModel,
        weights: WeightsInfo,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.spec = spec
        self.weights = weights
        self.device = str(device)
        self._device = device
        self._autocast_dtype = autocast_dtype
        self.model = model.to(device).eval()
        self._cuda = device.type == "cuda"
        self._local = threading.local()  # per calling thread: its CUDA stream
        _check_geometry(spec, self.model)

    @classmethod
    def load(cls, spec: ModelSpec, options: BackendOptions) -> TorchBackend:
        device = resolve_device(options.device)
        autocast_dtype = resolve_precision(options.precision, device)
        if device.type == "cpu":
            # `threads` cores (0: all) shared by the workers: each call gets its part.
            cores = options.threads or cpu_count()
            torch.set_num_threads(max(1, cores // options.workers))  # process-wide: one backend per process
        elif options.threads:
            torch.set_num_threads(options.threads)  # host-side ops of a CUDA backend
        if device.type == "cuda":
            # fp32 means IEEE fp32: cuDNN would otherwise run fp32 convolutions and the LSTM in TF32
            # (10-bit mantissa), which flips RVQ codes as fp16 does. Reduced precision is opt-in.
            # (torch >= 2.9 API; its type stubs do not list these flags yet)
            torch.backends.cudnn.conv.fp32_precision = "ieee"  # type: ignore[attr-defined]
            torch.backends.cudnn.rnn.fp32_precision = "ieee"  # type: ignore[attr-defined]
            torch.backends.cuda.matmul.fp32_precision = "ieee"  # type: ignore[attr-defined]
        model, weights = load_model(spec.name, options.weights, options.cache_dir)  # warns if random
        logger.info(
            "torch backend: %s on %s, precision %s, %d threads, weights %s",
            spec.name, device, options.precision, torch.get_num_threads(), weights.fingerprint,
        )
        return cls(spec, model, weights, device, autocast_dtype)

    def _autocast(self, full_precision: bool = False) -> contextlib.AbstractContextManager:
        if self._autocast_dtype is None or full_precision:
            return contextlib.nullcontext()
        return torch.autocast(self._device.type, dtype=self._autocast_dtype)

    def _on_stream(self) -> contextlib.AbstractContextManager:
        """CUDA: run this thread's work on its own stream, so calls of two workers overlap."""
        if not self._cuda:
            return contextlib.nullcontext()
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self._device)
        return torch.cuda.stream(stream)

    def _tensor(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # e.g. np.frombuffer over request bytes; torch warns on those
            array = array.copy()
        host = torch.from_numpy(array)
        if not self._cuda:
            return host.to(dtype)
        # Page-locked staging lets the copy run asynchronously on this thread's stream; torch's
        # caching host allocator keeps the buffer until the copy has finished, then reuses it.
        return host.pin_memory().to(self._device, dtype, non_blocking=True)

    def _numpy(self, *tensors: torch.Tensor, dtype: type) -> list[np.ndarray]:
        """The tensors as numpy arrays of ``dtype``; on CUDA all copies are queued, then one wait."""
        tensors = tuple(t.float() if t.is_floating_point() else t for t in tensors)  # autocast: bf16/fp16
        if not self._cuda:
            return [t.detach().numpy().astype(dtype, copy=False) for t in tensors]
        hosts = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, tensor in zip(hosts, tensors, strict=True):
            host.copy_(tensor, non_blocking=True)
        torch.cuda.current_stream(self._device).synchronize()  # this thread's stream only
        return [host.numpy().astype(dtype, copy=True) for host in hosts]  # out of pinned memory

    @torch.inference_mode()
    def encode(self, audio: np.ndarray, *, full_precision: bool = False) -> Encoded:
        """``[B, C, T]`` float32 -> latents ``[B, 128, ceil(T / 320)]`` float32 and scales ``[B]``.

        48 kHz (``spec.normalize``): each item is divided by ``1e-8 + RMS`` of its channel mean, as
        ``EncodecModel._encode_frame`` does; the scale is returned for decode. Otherwise scales are 1.
        ``full_precision``: fp32 even when the backend runs bf16/fp16 (latents meant for quantize).
        """
        _check_audio(self.spec, audio)
        with self._on_stream():
            return self._encode(self._tensor(audio, torch.float32), full_precision)

    def _encode(self, x: torch.Tensor, full_precision: bool) -> Encoded:
        if self.spec.normalize:
            mono = x.mean(dim=1, keepdim=True)
            volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
            scale = 1e-8 + volume  # [B, 1, 1]
            x = x / scale
        else:
            scale = torch.ones(x.shape[0], 1, 1, device=self._device)
        with self._autocast(full_precision):
            latents = self.model.encoder(x)
        latents_np, scales_np = self._numpy(latents, scale.reshape(-1), dtype=np.float32)
        return Encoded(latents_np, scales_np)

    @torch.inference_mode()
    def quantize(self, latents: np.ndarray, bandwidth: float) -> np.ndarray:
        """``[B, 128, F]`` latents -> codes ``[B, K, F]`` int64, K = ``spec.num_codebooks(bandwidth)``.

        Always fp32: nearest-codebook search in bf16 would flip codes.
        """
        num_codebooks = self.spec.num_codebooks(bandwidth)  # ValueError naming the allowed bandwidths
        _check_latents(self.spec, latents)
        with self._on_stream():
            emb = self._tensor(latents, torch.float32)
            codes = self.model.quantizer.encode(emb, self.model.frame_rate, bandwidth)  # [K, B, F]
            if codes.shape[0] != num_codebooks:
                raise RuntimeError(f"quantizer used {codes.shape[0]} codebooks, spec says {num_codebooks}")
            return self._numpy(codes.transpose(0, 1), dtype=np.int64)[0]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Codes ``[B, K, F]`` and scales ``[B]`` -> audio ``[B, C, F * 320]`` float32."""
        _check_codes(self.spec, codes, scales)
        with self._on_stream():
            codes_t = self._tensor(codes, torch.int64).transpose(0, 1)  # [K, B, F]
            emb = self.model.quantizer.decode(codes_t)  # [B, 128, F], fp32 codebook lookup
            with self._autocast():
                audio = self.model.decoder(emb)
            audio = audio.float()
            if self.spec.normalize:
                audio = audio * self._tensor(scales, torch.float32).view(-1, 1, 1)
            return self._numpy(audio, dtype=np.float32)[0]


    @torch.inference_mode()
    def decode_latents(self, latents: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Latents ``[B, 128, F]`` and scales ``[B]`` -> audio ``[B, C, F * 320]``: ``decode``
        without the codebook lookup (``model.decoder`` on the latents, then times the scale)."""
        _check_latents(self.spec, latents)
        if scales.shape != (latents.shape[0],):
            raise ValueError(f"scales must be [B] = [{latents.shape[0]}]; got {scales.shape}")
        with self._on_stream():
            emb = self._tensor(latents, torch.float32)
            with self._autocast():
                audio = self.model.decoder(emb)
            audio = audio.float()
            if self.spec.normalize:
                audio = audio * self._tensor(scales, torch.float32).view(-1, 1, 1)
            return self._numpy(audio, dtype=np.float32)[0]


def _check_geometry(spec: ModelSpec, model: EncodecModel) -> None:
    """The registry spec and the encodec model must agree, or windows and codes would be wrong."""
    actual = (model.sample_rate, model.channels, model.encoder.hop_length, model.encoder.dimension,
              model.quantizer.bins, tuple(float(b) for b in model.target_bandwidths))
    expected = (spec.sample_rate, spec.channels, spec.hop_length, spec.latent_dim,
                spec.codebook_size, spec.bandwidths)
    if actual != expected:
        raise RuntimeError(f"{spec.name}: model geometry {actual} does not match its spec {expected}")


def _check_audio(spec: ModelSpec, audio: np.ndarray) -> None:
    if audio.ndim != 3 or audio.shape[1] != spec.channels or audio.shape[0] == 0 or audio.shape[2] == 0:
        raise ValueError(f"{spec.name} encodes [B, {spec.channels}, T] audio, B and T > 0; got {audio.shape}")


def _check_latents(spec: ModelSpec, latents: np.ndarray) -> None:
    if latents.ndim != 3 or latents.shape[1] != spec.latent_dim:
        raise ValueError(f"{spec.name} quantizes [B, {spec.latent_dim}, F] latents; got {latents.shape}")


def _check_codes(spec: ModelSpec, codes: np.ndarray, scales: np.ndarray) -> None:
    allowed_k = {spec.num_codebooks(b) for b in spec.bandwidths}
    if codes.ndim != 3 or codes.shape[1] not in allowed_k:
        raise ValueError(f"{spec.name} decodes [B, K, F] codes, K in {sorted(allowed_k)}; got {codes.shape}")
    if scales.shape != (codes.shape[0],):
        raise ValueError(f"scales must be [B] = [{codes.shape[0]}]; got {scales.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= spec.codebook_size):
        raise ValueError(f"codes must lie in [0, {spec.codebook_size}); got [{codes.min()}, {codes.max()}]")
