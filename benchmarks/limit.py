"""The limit: how far each backend is from what this machine's cores can compute.

1. FLOPs per audio-second of each model's encoder and decoder, counted on 1 s of audio with
   ``torch.utils.flop_counter.FlopCounterMode`` (it counts the convolutions) plus the LSTM, which
   the counter does not see (``aten::lstm`` has no formula): 2 layers x frames x 2 x 4H x (I + H).
2. The machine's GEMM peak: the best of several n x n x n matmuls (n = 1024, 2048) with PyTorch (MKL
   fp32, oneDNN bf16) and ONNX Runtime (MLAS fp32), on one thread and on all cores. The limit used
   below is the best library's single-thread fp32 peak times the cores: other processes take cores
   away from a multi-threaded GEMM far more than from a single thread, so the all-core figure
   measured on a shared machine understates what its cores can do. (On AMD CPUs MKL's fp32 GEMM
   runs at about half of MLAS's speed.)
3. Each backend's throughput on full windows (16 s of audio per call, the service's default batch): audio
   seconds per wall second and per CPU-second, and the implied GFLOP/s as a fraction of the fp32
   peak: the share of the machine's arithmetic the backend turns into model work. "CPU-bound" is
   GFLOP per CPU-second against one core's peak; "wall" is GFLOP per second against all cores'.

    python benchmarks/limit.py --quick    # CI: 48 kHz only, fewer repeats
    python benchmarks/limit.py
    python benchmarks/limit.py --device cuda --backends torch,torch-fp16,torch-bf16 --batch-seconds 256

On CUDA the peak is the GPU's: ``torch.mm`` of n = 8192 in IEEE fp32, bf16 and fp16 (tensor cores),
and each backend is compared with the peak of its own precision; "CPU-bound" compares with the host
CPU-seconds the calls took (the host work that feeds the GPU).

Weights are random-init (the same FLOPs as the trained ones).
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from common import SCRATCH, Meter, Variant, machine_info, print_table, save_figure, write_json
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

MODELS = ("encodec_48khz", "encodec_24khz")


# ---- FLOPs ---------------------------------------------------------------------------------------------


def lstm_flops(lstm: torch.nn.LSTM, frames: int) -> float:
    """Multiply-adds of an LSTM over ``frames`` steps, counted as 2 FLOPs each (batch 1)."""
    flops = 0.0
    for layer in range(lstm.num_layers):
        inputs = lstm.input_size if layer == 0 else lstm.hidden_size
        flops += 2 * 4 * lstm.hidden_size * (inputs + lstm.hidden_size) * frames
    return flops


def count_flops(model: torch.nn.Module, sample_rate: int, channels: int) -> dict[str, float]:
    """GFLOP per audio-second of the encoder and the decoder (convolutions counted + LSTM)."""
    x = torch.randn(1, channels, sample_rate)
    out = {}
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            latents = model.encoder(x)
        frames = latents.shape[-1]
        lstms = [m for m in model.encoder.modules() if isinstance(m, torch.nn.LSTM)]
        out["encoder_conv"] = counter.get_total_flops() / 1e9
        out["encoder_lstm"] = sum(lstm_flops(m, frames) for m in lstms) / 1e9
        counter = FlopCounterMode(display=False)
        with counter:
            model.decoder(latents)
        lstms = [m for m in model.decoder.modules() if isinstance(m, torch.nn.LSTM)]
        out["decoder_conv"] = counter.get_total_flops() / 1e9
        out["decoder_lstm"] = sum(lstm_flops(m, frames) for m in lstms) / 1e9
    out["encoder"] = out["encoder_conv"] + out["encoder_lstm"]
    out["decoder"] = out["decoder_conv"] + out["decoder_lstm"]
    return out


# ---- GEMM peak -----------------------------------------------------------------------------------------


def _best(call, flop: float, repeats: int) -> float:  # type: ignore[no-untyped-def]
    call()
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = max(best, flop / (time.perf_counter() - started) / 1e9)
    return best


def torch_gemm(dtype: torch.dtype, threads: int, n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n x n ``torch.mm`` (MKL for fp32, oneDNN for bf16)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    try:
        return _best(lambda: torch.mm(a, b), 2 * n**3, repeats)
    finally:
        torch.set_num_threads(before)


def cuda_gemm(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n x n ``torch.mm`` on the GPU (fp32 in IEEE mode, TF32 off)."""
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    a, b = (torch.randn(n, n, device="cuda").to(dtype) for _ in range(2))

    def call() -> None:
        torch.mm(a, b)
        torch.cuda.synchronize()

    return _best(call, 2 * n**3, repeats)


def cuda_peaks(repeats: int) -> dict[str, float]:
    return {f"cuda_{name}": max(cuda_gemm(dtype, n, repeats) for n in (4096, 8192))
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))}


def ort_gemm(threads: int, n: int, repeats: int) -> float:
    """Best GFLOP/s of an n x n x n fp32 ``MatMul`` in ONNX Runtime (MLAS)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    spec = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ABC"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm", spec[:2], spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what this onnxruntime reads
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a, b = (np.random.default_rng(0).standard_normal((2, n, n))).astype(np.float32)
    return _best(lambda: session.run(None, {"A": a, "B": b}), 2 * n**3, repeats)


def gemm_peaks(cores: int, repeats: int) -> dict[str, float]:
    """Best GFLOP/s per library, dtype and thread count over two sizes (under load: a lower bound)."""
    peaks = {}
    for threads in sorted({1, cores}):
        for n in (1024, 2048):
            for key, value in (
                (f"torch_fp32_{threads}t", torch_gemm(torch.float32, threads, n, repeats)),
                (f"torch_bf16_{threads}t", torch_gemm(torch.bfloat16, threads, n, repeats)),
                (f"onnxruntime_fp32_{threads}t", ort_gemm(threads, n, repeats)),
            ):
                peaks[key] = max(peaks.get(key, 0.0), value)
    return peaks


# ---- backend throughput --------------------------------------------------------------------------------


def load(variant: Variant, model: str, device: str):  # type: ignore[no-untyped-def]
    from sonovec.models import BackendOptions, load_backend

    options = BackendOptions(model=model, weights="random", precision=variant.precision, device=device,
                             workers=variant.workers, cache_dir=str(SCRATCH / "data" / "models"))
    return load_backend(variant.backend, options)


def throughput(backend, stage: str, batch_seconds: float, repeats: int,  # type: ignore[no-untyped-def]
               workers: int = 1) -> dict:
    """Audio seconds per second of ``stage`` (encode or decode) on a batch of full windows holding
    ``batch_seconds`` of audio (the service's batch budget): 16 x 1 s (48 kHz), 2 x 10 s (24 kHz).
    ``workers`` such calls run at once, from as many threads (the batcher's ``--workers``)."""
    spec = backend.spec
    batch = max(1, round(batch_seconds * spec.sample_rate / spec.window))
    shape = (batch, spec.channels, spec.window)
    audio = (0.1 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    encoded = backend.encode(audio)
    codes = backend.quantize(encoded.latents, spec.bandwidths[1])
    if stage == "encoder":
        one = lambda: backend.encode(audio)  # noqa: E731
    else:
        one = lambda: backend.decode(codes, encoded.scales)  # noqa: E731
    pool = ThreadPoolExecutor(workers)
    call = lambda: list(pool.map(lambda _: one(), range(workers)))  # noqa: E731
    call()  # warm-up
    walls, cpus, meters = [], [], []
    for _ in range(repeats):
        with Meter() as meter:
            call()
        walls.append(meter.result.wall_s)  # type: ignore[union-attr]
        cpus.append(meter.result.cpu_s)  # type: ignore[union-attr]
        meters.append(meter.result)
    pool.shutdown()
    seconds = workers * batch * spec.window / spec.sample_rate
    return {
        "x_realtime": seconds / float(np.median(walls)), "x_realtime_best": seconds / min(walls),
        "x_per_cpu_s": seconds / float(np.median(cpus)),
        "load_avg": float(np.mean([m.load_avg for m in meters])),
        "others_cpu": float(np.mean([m.others_cpu for m in meters])),
    }


def measure_backends(args: argparse.Namespace, flops: dict, peaks: dict, core_peak: float) -> list[dict]:
    rows = []
    jobs = [(m, k, s) for m in args.models for k in args.backends for s in ("encoder", "decoder")
            if not (s == "decoder" and k.endswith("bf16") and args.quick)]
    for model, kind, stage in tqdm(jobs, desc="backends", unit="run"):
        variant = Variant.parse(kind)
        backend = load(variant, model, args.device)
        r = throughput(backend, stage, args.batch_seconds, args.repeats, variant.workers)
        gflop = flops[model][stage]
        # CPU: all cores at the fp32 peak; CUDA: the GPU's peak in the backend's precision.
        limit = args.cores * core_peak
        if args.device == "cuda":
            limit = peaks[f"cuda_{variant.precision}"]
        r.update({
            "model": model, "backend": kind, "stage": stage, "gflop_per_audio_s": gflop,
            "gflops_wall": r["x_realtime"] * gflop, "gflops_per_cpu_s": r["x_per_cpu_s"] * gflop,
            "limit_x": limit / gflop,
        })
        r["fraction_of_peak"] = r["gflops_wall"] / limit
        r["fraction_cpu_bound"] = r["gflops_per_cpu_s"] / (limit if args.device == "cuda" else core_peak)
        rows.append(r)
        if hasattr(backend, "close"):
            backend.close()
    return rows


COLUMNS = [
    ("model", "model", ""), ("backend", "backend", ""), ("stage", "stage", ""),
    ("gflop_per_audio_s", "GFLOP / audio-s", ".2f"), ("limit_x", "limit x RT", ".0f"),
    ("x_realtime", "x RT (wall)", ".1f"), ("x_per_cpu_s", "x RT per CPU-s", ".1f"),
    ("fraction_of_peak", "of peak (wall)", ".0%"), ("fraction_cpu_bound", "of peak (CPU-bound)", ".0%"),
    ("load_avg", "load", ".1f"), ("others_cpu", "others' cores", ".2f"),
]


def plot(rows: list[dict], peak: float, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    labels = [f"{r['model'].removeprefix('encodec_')} {r['backend']} {r['stage']}" for r in rows]
    y = np.arange(len(rows))
    ax.barh(y, [r["fraction_cpu_bound"] for r in rows], color="tab:orange", label="per CPU-second")
    ax.barh(y, [r["fraction_of_peak"] for r in rows], height=0.4, color="tab:blue",
            label="wall clock (measured)")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.axvline(1.0, color="red", ls="--", label=f"GEMM peak (CPU fp32: {peak:.0f} GFLOP/s per core)")
    ax.set_xlabel("model GFLOP/s as a fraction of the measured fp32 GEMM peak")
    ax.legend(fontsize=7, loc="lower right")
    save_figure(name, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 48 kHz, fp32 backends, 2 repeats.")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["torch", "torch-bf16", "onnx"])
    parser.add_argument("--batch-seconds", type=float, default=16.0, help="Audio per call, in full windows.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the GPU's peak is measured then).")
    parser.add_argument("--name", default=None, help="Results file name (default limit[_quick][_cuda]).")
    args = parser.parse_args()
    if args.quick:
        args.models, args.backends, args.repeats = ["encodec_48khz"], ["torch", "onnx"], 2
    args.cores = len(os.sched_getaffinity(0))
    info = machine_info()
    print(f"{info['cpu']}, {args.cores} cores, load {info['load_avg_at_start']}; {info['weights']}")

    from sonovec.models.registry import get_spec
    from sonovec.models.weights import load_model

    flops = {}
    for model in args.models:
        spec = get_spec(model)
        flops[model] = count_flops(load_model(model, "random")[0], spec.sample_rate, spec.channels)
    peaks = gemm_peaks(args.cores, 3 if args.quick else 10)
    peak = max(v for k, v in peaks.items() if "fp32" in k and k.endswith("_1t"))  # per core
    if args.device == "cuda":
        peaks.update(cuda_peaks(3 if args.quick else 10))
    print("GFLOP per audio-second:", {m: {k: round(v, 3) for k, v in f.items()} for m, f in flops.items()})
    print("GEMM peak GFLOP/s:", {k: round(v) for k, v in peaks.items()})
    rows = measure_backends(args, flops, peaks, peak)
    table = print_table(rows, COLUMNS)
    suffix = "_cuda" if args.device == "cuda" else ""
    name = args.name or ("limit_quick" if args.quick else "limit") + suffix
    write_json(name, {"machine": info, "args": vars(args), "flops_g_per_audio_s": flops,
                      "gemm_peak_gflops": peaks, "rows": rows, "table": table})
    plot(rows, peak, name)


if __name__ == "__main__":
    main()
