"""Throughput of the encoders against the batch size: where it stops rising.

The service batches requests up to ``--max-batch-seconds`` of audio per model call. On a GPU a
larger call fills more of the chip until it is full; past that, a larger batch only adds latency
and memory. This runs ``backend.encode`` (the service's path: host array in, pinned copy up, model,
latents and scales copied back) on batches of 1, 2, 4, ... full windows (48 kHz: 1 s windows;
24 kHz: 10 s) per call, for each backend variant (``torch``, ``torch-bf16``, ``torch-fp16-w2``:
``BACKEND[-PRECISION][-wWORKERS]``, workers making such calls at once from as many threads), and
reports audio seconds per wall second, per host CPU-second, milliseconds per call, and on CUDA the
peak GPU memory of a call. A sweep stops at the first batch that does not fit in memory, after two
doublings that gain under 3 %, or when its share of ``--budget-s`` is spent.

The knee of a sweep is the smallest batch reaching 95 % of the sweep's best throughput: the batch
budget to choose for that device and precision.

    python benchmarks/batch_sweep.py --quick                       # CPU, CI size (seconds)
    python benchmarks/batch_sweep.py --device cuda                 # both encoders, fp32/bf16/fp16

Weights are random-init (the same FLOPs as the trained ones).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import SCRATCH, Meter, Variant, machine_info, print_table, save_figure, variants, write_json
from tqdm import tqdm

MODELS = ("encodec_48khz", "encodec_24khz")
KNEE = 0.95  # the knee: the smallest batch within 5 % of the best
FLAT = 1.03  # a doubling that gains less than 3 % counts as flat; two in a row end the sweep


def load(variant: Variant, model: str, device: str):  # type: ignore[no-untyped-def]
    from sonovec.models import BackendOptions, load_backend

    options = BackendOptions(model=model, weights="random", precision=variant.precision, device=device,
                             workers=variant.workers, cache_dir=str(SCRATCH / "data" / "models"))
    return load_backend(variant.backend, options)


def _cuda(device: str):  # type: ignore[no-untyped-def]
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda


def point(backend, variant: Variant, batch: int, device: str, min_time: float) -> dict:  # type: ignore[no-untyped-def]
    """One batch size: two warm-up rounds, then rounds of ``workers`` concurrent calls until
    ``min_time`` seconds (at least 3 rounds); the median round."""
    spec = backend.spec
    audio = (0.1 * np.random.default_rng(batch).standard_normal((batch, spec.channels, spec.window)))
    audio = audio.astype(np.float32)
    cuda = _cuda(device)
    pool = ThreadPoolExecutor(variant.workers)

    def round_() -> None:
        list(pool.map(lambda _: backend.encode(audio), range(variant.workers)))

    try:
        round_()
        if cuda is not None:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
        round_()
        walls: list[float] = []
        cpus: list[float] = []
        started = time.perf_counter()
        while len(walls) < 3 or time.perf_counter() - started < min_time:
            with Meter() as meter:
                round_()
            walls.append(meter.result.wall_s)  # type: ignore[union-attr]
            cpus.append(meter.result.cpu_s)  # type: ignore[union-attr]
    finally:
        pool.shutdown()
    seconds = variant.workers * batch * spec.window / spec.sample_rate
    wall = float(np.median(walls))
    return {
        "batch": batch, "audio_s_per_call": batch * spec.window / spec.sample_rate, "rounds": len(walls),
        "ms_per_round": 1000 * wall, "x_realtime": seconds / wall, "x_realtime_best": seconds / min(walls),
        "x_per_cpu_s": seconds / max(float(np.median(cpus)), 1e-9),
        "peak_gib": cuda.max_memory_allocated() / 2**30 if cuda is not None else None,
    }


def _out_of_memory(error: Exception) -> bool:
    return "out of memory" in str(error).lower() or type(error).__name__ == "OutOfMemoryError"


def sweep(model: str, variant: Variant, args: argparse.Namespace, deadline: float) -> list[dict]:
    """Batches 1, 2, 4, ... up to ``--max-call-seconds`` of audio, until flat, full or out of time."""
    backend = load(variant, model, args.device)
    spec = backend.spec
    rows: list[dict] = []
    batch, flat = 1, 0
    base = {"model": model, "backend": variant.name, "precision": variant.precision,
            "workers": variant.workers}
    try:
        while batch == 1 or batch * spec.window / spec.sample_rate <= args.max_call_seconds:
            if time.monotonic() > deadline:
                rows.append({**base, "batch": batch, "stopped": "time budget"})
                break
            try:
                row = {**base, **point(backend, variant, batch, args.device, args.min_time)}
            except (RuntimeError, MemoryError) as error:
                if not _out_of_memory(error):
                    raise
                rows.append({**base, "batch": batch, "stopped": "out of memory"})
                break
            best = max((r["x_realtime"] for r in rows if "x_realtime" in r), default=0.0)
            flat = flat + 1 if row["x_realtime"] < FLAT * best else 0
            rows.append(row)
            if flat >= 2 and not args.no_early_stop:
                rows[-1]["stopped"] = "flat"
                break
            batch *= 2
    finally:
        if hasattr(backend, "close"):
            backend.close()
        del backend
        cuda = _cuda(args.device)
        if cuda is not None:
            cuda.empty_cache()
    return rows


def knees(rows: list[dict]) -> list[dict]:
    """Per sweep: the best throughput, and the smallest batch within 5 % of it."""
    out = []
    for key in dict.fromkeys((r["model"], r["backend"]) for r in rows):
        measured = [r for r in rows if (r["model"], r["backend"]) == key and "x_realtime" in r]
        if not measured:
            continue
        best = max(measured, key=lambda r: r["x_realtime"])
        knee = next(r for r in measured if r["x_realtime"] >= KNEE * best["x_realtime"])
        stopped = [r["stopped"] for r in rows if (r["model"], r["backend"]) == key and "stopped" in r]
        out.append({"model": key[0], "backend": key[1], "best_x_realtime": best["x_realtime"],
                    "best_batch": best["batch"], "knee_batch": knee["batch"],
                    "knee_audio_s_per_call": knee["audio_s_per_call"], "knee_x_realtime": knee["x_realtime"],
                    "knee_peak_gib": knee["peak_gib"], "largest_batch": measured[-1]["batch"],
                    "stopped": stopped[0] if stopped else "max call seconds"})
    return out


COLUMNS = [
    ("model", "model", ""), ("backend", "backend", ""), ("batch", "windows/call", "d"),
    ("audio_s_per_call", "audio s/call", "g"), ("ms_per_round", "ms/call", ".1f"),
    ("x_realtime", "x RT (wall)", ".4g"), ("x_per_cpu_s", "x RT per CPU-s", ".4g"),
    ("peak_gib", "peak GiB", ".2f"), ("stopped", "stopped", ""),
]
KNEE_COLUMNS = [
    ("model", "model", ""), ("backend", "backend", ""), ("best_x_realtime", "best x RT", ".4g"),
    ("best_batch", "at windows", "d"), ("knee_batch", "knee windows", "d"),
    ("knee_audio_s_per_call", "knee audio s/call", "g"), ("knee_x_realtime", "knee x RT", ".4g"),
    ("knee_peak_gib", "knee peak GiB", ".2f"), ("stopped", "sweep ended", ""),
]


def plot(rows: list[dict], summary: list[dict], name: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, ScalarFormatter

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for s in (s for s in summary if s["model"] == model):
            points = [r for r in rows
                      if (r["model"], r["backend"]) == (model, s["backend"]) and "x_realtime" in r]
            memory = f", {s['knee_peak_gib']:.1f} GiB" if s["knee_peak_gib"] is not None else ""
            label = f"{s['backend']} (knee {s['knee_audio_s_per_call']:g} s{memory})"
            line, = ax.plot([r["audio_s_per_call"] for r in points], [r["x_realtime"] for r in points],
                            marker="o", label=label)
            ax.plot([s["knee_audio_s_per_call"]], [s["knee_x_realtime"]], marker="*", ms=14,
                    color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("audio seconds per call (full windows)")
        ax.set_ylabel("x real time (encode, wall clock)")
        ax.set_title(f"{model}: {title}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title="* knee (95 % of best)", title_fontsize=7)
    save_figure(name, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 48 kHz, batches 1-4, short points.")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N.")
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--backends", type=variants, default=None,
                        help="Variants, BACKEND[-PRECISION][-wN] (default: torch on CPU; "
                        "torch,torch-bf16,torch-fp16 on CUDA).")
    parser.add_argument("--max-call-seconds", type=float, default=None,
                        help="Largest batch, in audio seconds per call (default 1024 on CUDA, 16 on CPU).")
    parser.add_argument("--min-time", type=float, default=1.0, help="Seconds of timed rounds per point.")
    parser.add_argument("--budget-s", type=float, default=600.0,
                        help="Wall-clock budget of the whole sweep; a sweep out of time stops and says so.")
    parser.add_argument("--no-early-stop", action="store_true", help="Keep doubling after two flat steps.")
    parser.add_argument("--name", default=None, help="Results name (default batch_sweep[_quick][_cuda]).")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    if args.quick:
        args.models, args.min_time = ["encodec_48khz"], 0.2
        args.max_call_seconds = args.max_call_seconds or 4.0
    if args.backends is None:
        args.backends = variants("torch,torch-bf16,torch-fp16" if cuda else "torch")
    if args.max_call_seconds is None:
        args.max_call_seconds = 1024.0 if cuda else 16.0
    name = args.name or "batch_sweep" + ("_quick" if args.quick else "") + ("_cuda" if cuda else "")
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, GPU {info['gpu']}, load {info['load_avg_at_start']}; "
          f"{info['weights']}")
    started = time.monotonic()
    jobs = [(m, v) for m in args.models for v in args.backends]
    rows: list[dict] = []
    for i, (model, variant) in enumerate(tqdm(jobs, desc="sweeps", unit="sweep")):
        # each sweep gets an equal share of what is left, so one slow sweep cannot starve the rest
        share = (args.budget_s - (time.monotonic() - started)) / (len(jobs) - i)
        rows += sweep(model, variant, args, time.monotonic() + share)
        # after every sweep, so that a run stopped from outside (gpu.sh's timeout) keeps what it measured
        write_json(name, {"machine": info, "args": vars(args), "rows": rows, "knees": knees(rows),
                          "partial": i + 1 < len(jobs), "wall_s": time.monotonic() - started})
    table = print_table(rows, COLUMNS)
    summary = knees(rows)
    knee_table = print_table(summary, KNEE_COLUMNS)
    write_json(name, {"machine": info, "args": vars(args), "rows": rows, "knees": summary, "table": table,
                      "knee_table": knee_table, "partial": False, "wall_s": time.monotonic() - started})
    plot(rows, summary, name, f"{info['gpu'] or info['cpu']}, random-init weights")


if __name__ == "__main__":
    main()
