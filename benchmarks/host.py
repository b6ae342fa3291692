"""The host side: how fast this machine turns uploaded files into model input, without the model.

A GPU encodes EnCodec 48 kHz far faster than real time; what feeds it is the host: decoding the
uploaded FLAC (libsndfile), resampling 44.1 -> 48 kHz (soxr, HQ), checking and mixing, then cutting
and stacking the 1 s windows of a batch. This measures that path exactly as the service runs it
(``sonovec.server.audio.decode_audio`` + ``plan_windows`` + ``np.stack``) on the study's fragments,
on 1 thread and on every core (the service runs ingestion in a thread pool; libsndfile and soxr
release the GIL), and prints how many GPUs' worth of model throughput the host could feed.

    python benchmarks/host.py --quick     # CI: 8 fragments of 10 s
    python benchmarks/host.py             # 32 fragments of 10 s and of 60 s
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import (
    SCRATCH,
    Meter,
    cut_fragments,
    machine_info,
    make_corpus,
    print_table,
    save_figure,
    write_json,
)
from tqdm import tqdm

MODEL = "encodec_48khz"


def ingest(data: bytes) -> float:
    """One upload through the service's host path; returns its duration in seconds."""
    from sonovec.models.base import plan_windows
    from sonovec.models.registry import get_spec
    from sonovec.server.audio import AudioLimits, decode_audio

    spec = get_spec(MODEL)
    limits = AudioLimits(max_bytes=2**30, max_seconds=3600.0, max_channels=8)
    recording = decode_audio(data, target_rate=spec.sample_rate, target_channels=spec.channels, limits=limits)
    samples = recording.samples  # [C, T] float32 at 48 kHz
    full = [w for w in plan_windows(spec, samples.shape[1]) if w.length == spec.window]
    if full:
        np.stack([samples[:, w.fed] for w in full])  # what the engine stacks into a batch
    return samples.shape[1] / spec.sample_rate


def measure(blobs: list[bytes], threads: int, repeats: int) -> dict:
    best = None
    for _ in range(repeats):
        with ThreadPoolExecutor(threads) as pool, Meter() as meter:
            seconds = sum(pool.map(ingest, blobs))
        result = meter.result
        if best is None or result.wall_s < best[1].wall_s:  # type: ignore[union-attr]
            best = (seconds, result)
    seconds, result = best  # type: ignore[misc]
    return {
        "threads": threads, "audio_s": seconds, "wall_s": result.wall_s,
        "x_realtime": seconds / result.wall_s, "x_per_cpu_s": seconds / result.cpu_s,
        "load_avg": result.load_avg, "others_cpu": result.others_cpu,
    }


COLUMNS = [
    ("fragment_s", "fragment s", "g"), ("threads", "threads", "d"), ("audio_s", "audio s", ".0f"),
    ("wall_s", "wall s", ".2f"), ("x_realtime", "x real time", ".0f"), ("x_per_cpu_s", "x per CPU-s", ".0f"),
    ("load_avg", "load", ".1f"), ("others_cpu", "others' cores", ".2f"),
]


def plot(rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [f"{r['fragment_s']:g} s fragments, {r['threads']} thread(s)" for r in rows]
    y = np.arange(len(rows))
    ax.barh(y, [r["x_realtime"] for r in rows], color="tab:blue", label="wall clock")
    ax.barh(y, [r["x_per_cpu_s"] for r in rows], height=0.35, color="tab:orange", label="per CPU-second")
    ax.axvline(1000, color="green", ls=":", label="GPU target: 1,000x")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("x real time (decode FLAC + resample 44.1 -> 48 kHz + windows)")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.1))
    save_figure(name, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 8 fragments of 10 s.")
    parser.add_argument("--recordings", type=int, default=32)
    parser.add_argument("--fragments", type=lambda s: [float(x) for x in s.split(",")], default=[10.0, 60.0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.recordings, args.fragments, args.repeats = 8, [10.0], 2
    cores = len(os.sched_getaffinity(0))
    info = machine_info()
    print(f"{info['cpu']}, {cores} cores, load {info['load_avg_at_start']}")
    seconds = max(args.fragments) + 1
    corpus = make_corpus(SCRATCH / f"corpus-{args.recordings}x{seconds:g}s", args.recordings, seconds)
    rows = []
    jobs = [(f, t) for f in args.fragments for t in sorted({1, cores})]
    for fragment_s, threads in tqdm(jobs, desc="host path", unit="run"):
        folder = SCRATCH / f"fragments-{args.recordings}x{seconds:g}s-{fragment_s:g}s"
        blobs = [Path(p).read_bytes() for p in cut_fragments(corpus, folder, fragment_s)]
        ingest(blobs[0])  # imports, soxr's first plan
        rows.append({"fragment_s": fragment_s, **measure(blobs, threads, args.repeats)})
    table = print_table(rows, COLUMNS)
    per_core = max(r["x_per_cpu_s"] for r in rows)
    print(f"one core turns uploads into model input at {per_core:.0f}x real time: a host needs "
          f"{1000 / per_core:.1f} cores per 1,000x of model throughput")
    name = "host_quick" if args.quick else "host"
    write_json(name, {"machine": info, "args": vars(args), "rows": rows, "table": table,
                      "per_core_x_realtime": per_core, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    plot(rows, name)


if __name__ == "__main__":
    main()
