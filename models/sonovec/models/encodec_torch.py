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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sonovec.models.base import (
    BackendOptions,
    Encoded,
    ModelSpec,
    WeightsInfo,
    check_audio,
    check_codes,
    check_latents,
    cpu_count,
    encode_by_length,
    tail_groups,
)
from sonovec.models.weights import load_model

if TYPE_CHECKING:
    from encodec import EncodecModel  # untyped package: Any to mypy

logger = logging.getLogger(__name__)

TAIL_LAYERS = 3  # SLSTM, ELU, SConv1d: the encoder's frame-rate layers, run on whole batches

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
    On CPU, a call runs as ``threads`` (0: one per core) single-thread model calls side by side, as
    the ONNX backend does: each window's convolutions alone on one core, then the frame-rate layers
    (LSTM, last conv) on the whole batch split in as many parts::

        windows [C, T_i] --one per pool thread--> front --> hidden [512, F_i]
                         --tail_groups, split--> tail (LSTM + conv) --> latents [128, F_i]

    Why not one call on torch's intra-op threads: measured here, batch 16 on 2 threads took more wall
    time and twice the CPU per window of one window on 1 thread (every op waits at a barrier for its
    slowest thread, and the waiting threads spin: ``benchmarks/torch_cpu.py``). torch's thread
    count is process-wide: one CPU backend per process sets it to 1. Calls of several batcher
    workers take turns on the one pool.

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
        threads: int = 1,
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
        layers = list(self.model.encoder.model)
        self._front = torch.nn.Sequential(*layers[:-TAIL_LAYERS])  # the same modules, not copies
        self._tail = torch.nn.Sequential(*layers[-TAIL_LAYERS:])
        self.threads = 1 if self._cuda else max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, "sonovec-torch") if self.threads > 1 else None
        self._lock: contextlib.AbstractContextManager = (
            threading.Lock() if self._pool is not None else contextlib.nullcontext()
        )

    @classmethod
    def load(cls, spec: ModelSpec, options: BackendOptions) -> TorchBackend:
        device = resolve_device(options.device)
        autocast_dtype = resolve_precision(options.precision, device)
        cores = options.threads or cpu_count()
        if device.type == "cpu":
            torch.set_num_threads(1)  # process-wide: `cores` single-thread calls run side by side
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
            "torch backend: %s on %s, precision %s, %d parallel calls, weights %s",
            spec.name, device, options.precision, 1 if device.type == "cuda" else cores, weights.fingerprint,
        )
        return cls(spec, model, weights, device, autocast_dtype, threads=cores)

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
        check_audio(self.spec, audio)
        if self._pool is not None:
            encoded = self.encode_windows(list(audio), full_precision=full_precision)
            scales = np.asarray([scale for _, scale in encoded], np.float32)
            return Encoded(np.stack([latents for latents, _ in encoded]), scales)
        with self._on_stream():
            return self._encode(self._tensor(audio, torch.float32), full_precision)

    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """48 kHz: ``x / (1e-8 + RMS of the channel mean)`` per item, and that scale ``[B, 1, 1]``."""
        if not self.spec.normalize:
            return x, torch.ones(x.shape[0], 1, 1, device=self._device)
        mono = x.mean(dim=1, keepdim=True)
        volume = mono.pow(2).mean(dim=2, keepdim=True).sqrt()
        scale = 1e-8 + volume  # [B, 1, 1]
        return x / scale, scale

    def _encode(self, x: torch.Tensor, full_precision: bool) -> Encoded:
        x, scale = self._normalize(x)
        with self._autocast(full_precision):
            latents = self.model.encoder(x)
        latents_np, scales_np = self._numpy(latents, scale.reshape(-1), dtype=np.float32)
        return Encoded(latents_np, scales_np)

    def encode_windows(
        self, windows: Sequence[np.ndarray], *, full_precision: bool = False
    ) -> list[tuple[np.ndarray, float]]:
        """Windows ``[C, T_i]`` of any lengths -> ``(latents [128, F_i], scale)`` each.

        CPU: fronts one window per pool thread, tails per ``tail_groups`` (24 kHz right-padded),
        split over the pool. CUDA: one batch per length (the GPU wants whole batches).
        """
        for window in windows:
            check_audio(self.spec, window[None])
        if self._pool is None:
            return encode_by_length(self.encode, windows, full_precision)
        with self._lock:
            fronts = self._map(lambda w: self._run_front(w, full_precision), windows)
            groups = tail_groups(self.spec, [h.shape[-1] for h, _ in fronts])
            tasks: list[tuple[list[int], torch.Tensor]] = []
            for indices, frames in groups:
                hidden = torch.zeros(len(indices), fronts[indices[0]][0].shape[0], frames)
                for row, i in enumerate(indices):
                    hidden[row, :, : fronts[i][0].shape[-1]] = fronts[i][0]
                part = -(-len(indices) // self.threads)
                tasks += [(indices[a : a + part], hidden[a : a + part]) for a in range(0, len(indices), part)]
            tails = self._map(lambda task: self._run_tail(task[1], full_precision), tasks)
        out: list[tuple[np.ndarray, float]] = [(np.empty(0), 0.0)] * len(windows)
        for (indices, _), latents in zip(tasks, tails, strict=True):
            for row, i in enumerate(indices):
                out[i] = (latents[row, :, : fronts[i][0].shape[-1]], fronts[i][1])
        return out

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self._pool is None or len(items) == 1:
            return [fn(item) for item in items]
        return list(self._pool.map(fn, items))

    @torch.inference_mode()  # thread-local, like autocast: entered in the pool thread
    def _run_front(self, window: np.ndarray, full_precision: bool) -> tuple[torch.Tensor, float]:
        x, scale = self._normalize(self._tensor(window[None], torch.float32))
        with self._autocast(full_precision):
            hidden = self._front(x)
        return hidden[0].float(), float(scale.reshape(-1)[0])

    @torch.inference_mode()
    def _run_tail(self, hidden: torch.Tensor, full_precision: bool) -> np.ndarray:
        with self._autocast(full_precision):
            latents = self._tail(hidden)
        return latents.float().numpy()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    @torch.inference_mode()
    def quantize(self, latents: np.ndarray, bandwidth: float) -> np.ndarray:
        """``[B, 128, F]`` latents -> codes ``[B, K, F]`` int64, K = ``spec.num_codebooks(bandwidth)``.

        Always fp32: nearest-codebook search in bf16 would flip codes.
        """
        num_codebooks = self.spec.num_codebooks(bandwidth)  # ValueError naming the allowed bandwidths
        check_latents(self.spec, latents)
        with self._on_stream():
            emb = self._tensor(latents, torch.float32)
            codes = self.model.quantizer.encode(emb, self.model.frame_rate, bandwidth)  # [K, B, F]
            if codes.shape[0] != num_codebooks:
                raise RuntimeError(f"quantizer used {codes.shape[0]} codebooks, spec says {num_codebooks}")
            return self._numpy(codes.transpose(0, 1), dtype=np.int64)[0]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Codes ``[B, K, F]`` and scales ``[B]`` -> audio ``[B, C, F * 320]`` float32."""
        check_codes(self.spec, codes, scales)
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
        check_latents(self.spec, latents)
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
