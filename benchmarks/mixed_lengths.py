"""Mixed clip lengths through the engine: windows of many lengths in one call vs one call per length.

A realistic mix of clip lengths (0.5-30 s, see ``MIX``) is cut into windows by ``plan_windows`` and
packed into batches, as the batcher does; the same windows then run two ways, alternating batch by
batch (so load changes fall on both alike):

- ``by-length``: the engine before issue 11: one ``encode`` call per distinct window length, one after
  another (``base.encode_by_length``), in batches of ``--before-batch-seconds`` (16: the budget then).
  24 kHz tails never share a call.
- ``windows``: ``encode_windows`` in batches of the model's default budget (``ModelSpec.batch_seconds``:
  48 kHz 16 s, 24 kHz 64 s; ``--batch-seconds`` overrides): fronts one window per core side by side,
  the frame-rate layers (LSTM + last conv) per ``tail_groups``, 24 kHz tails right-padded together.

Per model and backend: throughput (x real time), model calls per batch, audio seconds per call
relative to the batch budget ("call fullness"), and for ``windows`` the share of the frame-rate
layers' frames that are real (not padding).

    python benchmarks/mixed_lengths.py --quick
    python benchmarks/mixed_lengths.py                    # both models, onnx and torch
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import Meter, machine_info, print_table, save_figure, write_json

from sonovec.models.base import BackendOptions, encode_by_length, plan_windows, tail_groups
from sonovec.models.registry import load_backend

MIX = ((0.5, 0.15), (2.0, 0.25), (5.0, 0.25), (10.0, 0.2), (30.0, 0.15))  # seconds, share; +-30 % jitter


def clips(sample_rate: int, channels: int, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths, shares = zip(*MIX, strict=True)
    out = []
    for seconds in rng.choice(lengths, count, p=shares):
        n = int(seconds * rng.uniform(0.7, 1.3) * sample_rate)
        t = np.arange(n) / sample_rate
        tone = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(80, 2000, 3))
        out.append((0.1 * tone + 0.02 * rng.standard_normal((channels, n))).astype(np.float32))
    return out


def batches(spec, wavs: list[np.ndarray], budget_s: float) -> list[list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Windows in arrival order, packed up to ``budget_s`` audio seconds per batch (the batcher's rule)."""
    out: list[list[np.ndarray]] = [[]]
    cost = 0.0
    for wav in wavs:
        for window in plan_windows(spec, wav.shape[1]):
            seconds = window.length / spec.sample_rate
            if out[-1] and cost + seconds > budget_s:
                out.append([])
                cost = 0.0
            out[-1].append(np.ascontiguousarray(wav[:, window.fed]))
            cost += seconds
    return out


def measure(model: str, kind: str, args: argparse.Namespace) -> list[dict]:
    backend = load_backend(kind, BackendOptions(model=model, weights="random", cache_dir=args.cache_dir))
    spec = backend.spec
    wavs = clips(spec.sample_rate, spec.channels, args.clips)
    budgets = {"by-length": args.before_batch_seconds, "windows": args.batch_seconds or spec.batch_seconds}
    work = {way: batches(spec, wavs, budget) for way, budget in budgets.items()}
    backend.encode_windows(work["windows"][0])  # warm-up, both paths' shapes
    encode_by_length(backend.encode, work["by-length"][0], False)
    ways = {
        "by-length": lambda b: encode_by_length(backend.encode, b, False),
        "windows": lambda b: backend.encode_windows(b),
    }
    wall = {w: 0.0 for w in ways}
    cpu = {w: 0.0 for w in ways}
    others, loads = [], []
    # the same windows both ways: each way's batches in turn, a share of the audio at a time
    for i in range(max(len(b) for b in work.values())):
        for way in (list(ways) if i % 2 == 0 else list(ways)[::-1]):
            share = _share(work[way], i, max(len(b) for b in work.values()))
            for batch in share:
                with Meter() as meter:
                    ways[way](batch)
                assert meter.result is not None
                wall[way] += meter.result.wall_s
                cpu[way] += meter.result.cpu_s
                others.append(meter.result.others_cpu)
                loads.append(meter.result.load_avg)
    audio_s = sum(w.shape[-1] for b in work["windows"] for w in b) / spec.sample_rate
    rows = []
    for way in ways:
        calls, real, computed = 0, 0, 0
        for batch in work[way]:
            lengths = [w.shape[-1] for w in batch]
            if way == "by-length":
                calls += len(set(lengths))
            else:
                calls += 1
                frames = [spec.num_frames(n) for n in lengths]
                groups = tail_groups(spec, frames)
                real += sum(frames)
                computed += sum(len(indices) * f for indices, f in groups)
        fed_s = sum(w.shape[-1] for b in work[way] for w in b) / spec.sample_rate
        rows.append({
            "model": model, "backend": kind, "way": way, "batch_seconds": budgets[way],
            "batches": len(work[way]),
            "audio_s": round(audio_s, 1), "wall_s": round(wall[way], 2),
            "x_realtime": audio_s / wall[way], "x_per_cpu_s": audio_s / cpu[way],
            "calls_per_batch": calls / len(work[way]),
            "call_fullness": fed_s / calls / budgets[way],
            "padding_efficiency": real / computed if computed else None,
            "others_cpu": float(np.mean(others)), "load": float(np.mean(loads)),
        })
    rows[1]["vs_by_length"] = rows[1]["x_realtime"] / rows[0]["x_realtime"]
    if hasattr(backend, "close"):
        backend.close()
    return rows


def _share(batches: list, turn: int, turns: int) -> list:  # type: ignore[type-arg]
    """The batches of ``turn`` out of ``turns`` equal shares (a way with fewer, larger batches runs
    one of them every few turns)."""
    return batches[turn * len(batches) // turns : (turn + 1) * len(batches) // turns]


COLUMNS = [("model", "model", ""), ("backend", "backend", ""), ("way", "engine", ""),
           ("batch_seconds", "batch s", ".0f"), ("batches", "batches", "d"), ("audio_s", "audio s", ".0f"),
           ("x_realtime", "x real time", ".1f"),
           ("x_per_cpu_s", "x per CPU-s", ".1f"),
           ("vs_by_length", "vs by-length", ".2f"), ("calls_per_batch", "calls/batch", ".1f"),
           ("call_fullness", "call fullness", ".0%"), ("padding_efficiency", "real frames", ".0%"),
           ("load", "load", ".1f"), ("others_cpu", "others' cores", ".2f")]


def plot(rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({(r["model"], r["backend"]) for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(labels))
    names = {"by-length": "by-length, 16 s batches (before)", "windows": "windows, the model's budget (now)"}
    for offset, way in ((-0.2, "by-length"), (0.2, "windows")):
        sel = {(r["model"], r["backend"]): r for r in rows if r["way"] == way}
        axes[0].bar(x + offset, [sel[k]["x_realtime"] for k in labels], 0.4, label=names[way])
        axes[1].bar(x + offset, [100 * sel[k]["call_fullness"] for k in labels], 0.4, label=names[way])
    titles = ("throughput, x real time", "audio per model call, % of the budget")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xticks(x, [f"{m.removeprefix('encodec_')}\n{b}" for m, b in labels])
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
    load = np.mean([r["others_cpu"] for r in rows])
    fig.suptitle(f"mixed clip lengths 0.5-30 s through the engine (others' cores {load:.2f})")
    save_figure(name, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 12 clips, 24 kHz onnx only.")
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--models", default="encodec_24khz,encodec_48khz")
    parser.add_argument("--backends", default="onnx,torch")
    parser.add_argument("--batch-seconds", type=float, default=None,
                        help="The windows engine's budget [the model's own: 48 kHz 16, 24 kHz 64].")
    parser.add_argument("--before-batch-seconds", type=float, default=16.0,
                        help="The by-length engine's budget (the service's before issue 11).")
    parser.add_argument("--cache-dir", default=None, help="Where ONNX exports are cached.")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.models, args.backends = 12, "encodec_24khz", "onnx"
    name = "mixed_lengths_quick" if args.quick else "mixed_lengths"
    info = machine_info()
    started = time.time()
    rows = [row for model in args.models.split(",") for kind in args.backends.split(",")
            for row in measure(model, kind, args)]
    table = print_table(rows, COLUMNS)
    write_json(name, {"machine": info, "args": vars(args), "mix": MIX, "rows": rows, "table": table,
                      "minutes": (time.time() - started) / 60})
    plot(rows, name)


if __name__ == "__main__":
    main()
