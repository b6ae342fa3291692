"""EnCodec on ONNX Runtime behind the ``Backend`` interface (CPU EP; CUDA EP where it is installed).

The graphs come from ``onnx_export`` (read its doc for what each one is and why the encoder is cut
before its LSTM); they are exported once per weights fingerprint, opset, ONNX Runtime version and
export code version, and cached under ``<cache_dir>/onnx/<key>/``. How a call runs on CPU::

    encode  [B, C, T] --split per window--> front (one window per call, W calls at once)
                      --concatenate--> [B, 512, F] --split in W parts--> tail --> latents [B, 128, F]
    quantize [B, 128, F] --split in W parts--> quantizer_k<K> --> codes [B, K, F]
    decode   [B, K, F] --split per window--> decoder --> audio [B, C, F * 320]

W = ``options.threads`` (0: one per core) single-threaded sessions running side by side. Why not one
session with W intra-op threads: every operator of such a session waits at a barrier for its slowest
thread, so on a machine whose cores are shared (CI, a pod beside others) one busy core stalls the whole
call, while independent windows just proceed; and each window's conv activations stay in its core's
cache. On CUDA every graph gets the whole batch in one call.

Precision: fp32, or ``int8`` on CPU: the convolutions of the encoder fronts statically quantized
(QDQ, calibrated on generated audio; ``onnx_quantize``) for embeddings, while codes are quantized
from the fp32 graphs' latents. ONNX Runtime's CPU EP has no bf16 or fp16 convolution kernels (such
graphs would run slower, not faster); use ``--backend torch --precision bf16`` for that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sonovec.models import onnx_export, onnx_latents, onnx_quantize
from sonovec.models.base import (
    BackendOptions,
    Encoded,
    ModelSpec,
    WeightsInfo,
    check_audio,
    check_codes,
    check_latents,
    cpu_count,
    tail_groups,
)

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")  # int8: the encoder's convolutions, for embeddings (see onnx_quantize)


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "sonovec"


def resolve_providers(device: str) -> tuple[str, list]:
    """``(device, providers)`` for ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``."""
    available = ort.get_available_providers()
    if device == "auto":
        device = "cuda:0" if "CUDAExecutionProvider" in available else "cpu"
    if device == "cpu":
        return "cpu", ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if "CUDAExecutionProvider" not in available:
            raise ValueError(
                f"device {device!r}: this onnxruntime has no CUDA execution provider (providers: "
                f"{', '.join(available)}); install onnxruntime-gpu, or use --device cpu"
            )
        index = int(device.partition(":")[2] or 0)
        # use_tf32 0: IEEE fp32 convolutions, as on the CPU (TF32 rounds to 10 bits and flips codes).
        cuda = ("CUDAExecutionProvider", {"device_id": index, "use_tf32": 0})
        return f"cuda:{index}", [cuda, "CPUExecutionProvider"]
    raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto")


def _session(path: Path, providers: list, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ORT warns about every CPU-placed shape op on CUDA
    return ort.InferenceSession(str(path), options, providers=providers)


class _Graph:
    """One exported graph: feeds by input name (a graph may drop an input it does not use)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.inputs = [i.name for i in session.get_inputs()]

    def __call__(self, **feeds: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {name: feeds[name] for name in self.inputs})


class OnnxBackend:
    """EnCodec graphs on ONNX Runtime. Thread-safe (``InferenceSession.run`` is); on CPU, calls of
    several batcher workers share the one pool of sessions, on CUDA they run concurrently."""

    kind = "onnx"

    def __init__(self, spec: ModelSpec, weights: WeightsInfo, directory: Path, device: str,
                 providers: list, workers: int, reduced: Path | None = None) -> None:
        self.spec = spec
        self.weights = weights
        self.device = device
        self.directory = directory
        self.workers = 1 if device.startswith("cuda") else max(1, workers)
        threads = 1 if device == "cpu" else 0  # CPU: parallel single-thread calls; CUDA: ORT's default
        self._graphs = {
            name: _Graph(_session(directory / f"{name}.onnx", providers, threads))
            for name in onnx_export.graph_names(spec)
        }
        latent_decoder = directory / f"{onnx_latents.GRAPH}.onnx"
        if latent_decoder.is_file():
            self._graphs[onnx_latents.GRAPH] = _Graph(_session(latent_decoder, providers, threads))
        self._fixed = set(onnx_export.fixed_lengths(spec))
        # int8 fronts (embeddings); codes ask for full precision and get the fp32 ones
        self._reduced = {
            name: _Graph(_session(reduced / f"{name}.onnx", providers, threads))
            for name in onnx_quantize.quantized_names(spec, list(self._graphs))
        } if reduced is not None else {}
        self._pool = None
        if self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="sonovec-onnx")
        # CPU: one call at a time uses the whole pool, so a second caller waits for its turn instead
        # of splitting the cores further. CUDA: no lock, so that two workers' calls overlap.
        self._lock: contextlib.AbstractContextManager = (
            threading.Lock() if device == "cpu" else contextlib.nullcontext()
        )

    @classmethod
    def load(cls, spec: ModelSpec, options: BackendOptions) -> OnnxBackend:
        if options.precision not in PRECISIONS:
            raise ValueError(
                f"the onnx backend runs fp32 or int8 (asked: {options.precision}): ONNX Runtime's CPU EP "
                "has no bf16/fp16 conv kernels. Use --backend torch for bf16 (CPU) or fp16 (CUDA)."
            )
        if options.precision == "int8" and options.device.startswith("cuda"):
            raise ValueError("--precision int8 runs on the CPU only: use --device cpu "
                             "(fp16/bf16 on CUDA: --backend torch)")
        device, providers = resolve_providers(options.device)
        if options.precision == "int8" and device != "cpu":
            raise ValueError("--precision int8 runs on the CPU only: use --device cpu "
                             "(fp16/bf16 on CUDA: --backend torch)")
        from sonovec.models.weights import load_model  # torch: only to load weights and export

        model, weights = load_model(spec.name, options.weights, options.cache_dir)
        root = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
        directory = root / "onnx" / onnx_export.cache_key(weights.fingerprint, ort.__version__)
        onnx_export.ensure_exported(model, spec, directory, fingerprint=weights.fingerprint)
        onnx_latents.ensure_latent_decoder(model, spec, directory)  # the latent lab's decoder
        del model
        reduced = None
        if options.precision == "int8":
            reduced = onnx_quantize.ensure_quantized(spec, directory, onnx_export.graph_names(spec))
        workers = options.threads or cpu_count()
        backend = cls(spec, weights, directory, device, providers, workers, reduced)
        if device != "cpu" and "CUDAExecutionProvider" not in backend.providers:
            # onnxruntime-gpu falls back to the CPU when CUDA fails to initialise (no GPU, driver).
            if options.device != "auto":
                raise ValueError(f"device {options.device!r}: ONNX Runtime could not start its CUDA provider")
            logger.warning("onnx backend: CUDA provider unavailable, running on the CPU")
            backend.close()
            backend = cls(spec, weights, directory, "cpu", ["CPUExecutionProvider"], workers)
        logger.info("onnx backend: %s on %s (%s), precision %s, %d workers, graphs in %s",
                    spec.name, backend.device, ", ".join(backend.providers), options.precision,
                    backend.workers, directory)
        return backend

    @property
    def providers(self) -> list[str]:
        """The execution providers ONNX Runtime actually uses, in priority order."""
        return list(next(iter(self._graphs.values())).session.get_providers())

    # ---- running graphs in parallel over the batch ----

    def _map(self, graph: str, parts: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        run = self._graph(graph)
        if self._pool is None or len(parts) == 1:
            return [run(**feeds) for feeds in parts]
        return list(self._pool.map(lambda feeds: run(**feeds), parts))

    def _split(self, batch: int, size: int | None = None) -> list[slice]:
        """Slices of the batch axis: of ``size`` items, or else ``workers`` near-equal parts."""
        if size is None:
            size = -(-batch // self.workers)
        return [slice(start, min(start + size, batch)) for start in range(0, batch, size)]

    # ---- the Backend protocol ----

    def encode(self, audio: np.ndarray, *, full_precision: bool = False) -> Encoded:
        """``[B, C, T]`` float32 -> latents ``[B, 128, ceil(T / 320)]`` float32 and scales ``[B]``.

        ``full_precision``: the fp32 fronts even when the backend runs int8."""
        check_audio(self.spec, audio)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        front = self._front_name(audio.shape[-1], full_precision)
        with self._lock:
            per_window = 1 if self.device == "cpu" else None
            outs = self._map(front, [{"audio": audio[s]} for s in self._split(len(audio), per_window)])
            hidden = np.concatenate([o[0] for o in outs]) if len(outs) > 1 else outs[0][0]
            scales = np.concatenate([o[1] for o in outs]) if len(outs) > 1 else outs[0][1]
            tails = self._map("tail", [{"hidden": hidden[s]} for s in self._split(len(hidden))])
        latents = np.concatenate([t[0] for t in tails]) if len(tails) > 1 else tails[0][0]
        return Encoded(latents.astype(np.float32, copy=False), scales.astype(np.float32, copy=False))

    def encode_windows(
        self, windows: Sequence[np.ndarray], *, full_precision: bool = False
    ) -> list[tuple[np.ndarray, float]]:
        """Windows ``[C, T_i]`` of any lengths -> ``(latents [128, F_i], scale)`` each, run together::

            CPU   front: every window on its own (W at once, any mix of lengths)
                  tail:  per ``tail_groups`` (24 kHz: right-padded), each group split in W parts,
                         all groups' parts at once

        On CUDA the fronts of equal-length windows run as one batch instead.
        """
        for window in windows:
            check_audio(self.spec, window[None])
        fronts = self._fronts([np.ascontiguousarray(w, dtype=np.float32) for w in windows], full_precision)
        hidden = [h for h, _ in fronts]
        groups = tail_groups(self.spec, [h.shape[-1] for h in hidden])
        tasks, owners = [], []
        for indices, frames in groups:
            stacked = np.zeros((len(indices), hidden[indices[0]].shape[0], frames), np.float32)
            for row, i in enumerate(indices):
                stacked[row, :, : hidden[i].shape[-1]] = hidden[i]
            for part in self._split(len(indices)):
                tasks.append(("tail", {"hidden": stacked[part]}))
                owners.append(indices[part])
        with self._lock:
            outs = self._run_all(tasks)
        out: list[tuple[np.ndarray, float]] = [(np.empty(0), 0.0)] * len(windows)
        for indices, (latents, *_) in zip(owners, outs, strict=True):
            for row, i in enumerate(indices):
                out[i] = (latents[row, :, : hidden[i].shape[-1]].astype(np.float32), fronts[i][1])
        return out

    def _front_name(self, length: int, full_precision: bool = True) -> str:
        """The front graph for windows of ``length`` samples (``int8/...``: the quantized one)."""
        name = f"front_fixed_{length}" if length in self._fixed else "front_dynamic"
        return name if full_precision or name not in self._reduced else f"int8/{name}"

    def _graph(self, name: str) -> _Graph:
        return self._reduced[name.removeprefix("int8/")] if name.startswith("int8/") else self._graphs[name]

    def _fronts(self, windows: list[np.ndarray], full_precision: bool) -> list[tuple[np.ndarray, float]]:
        """``(hidden [512, F], scale)`` of each window: one call each (CPU), by length (CUDA)."""
        if self.device == "cpu":
            tasks = [(self._front_name(w.shape[-1], full_precision), {"audio": w[None]}) for w in windows]
            with self._lock:
                outs = self._run_all(tasks)
            return [(hidden[0], float(scales[0])) for hidden, scales in outs]
        out: list[tuple[np.ndarray, float]] = [(np.empty(0), 0.0)] * len(windows)
        by_length: dict[int, list[int]] = {}
        for i, window in enumerate(windows):
            by_length.setdefault(window.shape[-1], []).append(i)
        for length, indices in by_length.items():
            batch = np.stack([windows[i] for i in indices])
            hidden, scales = self._graph(self._front_name(length, full_precision))(audio=batch)
            for row, i in enumerate(indices):
                out[i] = (hidden[row], float(scales[row]))
        return out

    def _run_all(self, tasks: list[tuple[str, dict[str, np.ndarray]]]) -> list[list[np.ndarray]]:
        """Run ``(graph, feeds)`` tasks, on the pool when there is one, results in order."""
        if self._pool is None or len(tasks) == 1:
            return [self._graph(name)(**feeds) for name, feeds in tasks]
        return list(self._pool.map(lambda task: self._graph(task[0])(**task[1]), tasks))

    def quantize(self, latents: np.ndarray, bandwidth: float) -> np.ndarray:
        """``[B, 128, F]`` latents -> codes ``[B, K, F]`` int64, K = ``spec.num_codebooks(bandwidth)``."""
        num_codebooks = self.spec.num_codebooks(bandwidth)  # ValueError naming the allowed bandwidths
        check_latents(self.spec, latents)
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        with self._lock:
            outs = self._map(f"quantizer_k{num_codebooks}",
                             [{"latents": latents[s]} for s in self._split(len(latents))])
        return np.concatenate([o[0] for o in outs]).astype(np.int64, copy=False)

    def decode(self, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Codes ``[B, K, F]`` and scales ``[B]`` -> audio ``[B, C, F * 320]`` float32."""
        check_codes(self.spec, codes, scales)
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        scales = np.ascontiguousarray(scales, dtype=np.float32)
        per_window = 1 if self.device == "cpu" else None
        with self._lock:
            outs = self._map("decoder", [{"codes": codes[s], "scales": scales[s]}
                                         for s in self._split(len(codes), per_window)])
        return np.concatenate([o[0] for o in outs]).astype(np.float32, copy=False)

    def decode_latents(self, latents: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Latents ``[B, 128, F]`` and scales ``[B]`` -> audio ``[B, C, F * 320]`` (no quantizer)."""
        check_latents(self.spec, latents)
        if scales.shape != (latents.shape[0],):
            raise ValueError(f"scales must be [B] = [{latents.shape[0]}]; got {scales.shape}")
        if onnx_latents.GRAPH not in self._graphs:
            raise ValueError(f"no {onnx_latents.GRAPH} graph in {self.directory}: use OnnxBackend.load")
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        scales = np.ascontiguousarray(scales, dtype=np.float32)
        per_window = 1 if self.device == "cpu" else None
        with self._lock:
            outs = self._map(onnx_latents.GRAPH, [{"latents": latents[s], "scales": scales[s]}
                                                  for s in self._split(len(latents), per_window)])
        return np.concatenate([o[0] for o in outs]).astype(np.float32, copy=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
