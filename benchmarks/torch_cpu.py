"""Why torch on CPU was slower than the per-file loop, and what the backend does instead.

The 48 kHz encoder on full 1 s windows, per window: wall time and our CPU time for

- ``batch16 @ N threads``: the old backend: one call, torch's intra-op threads (all cores)
- ``batch1 @ N threads``: what the encodec per-file loop does (its default threads)
- ``batch1 @ 1 thread``: one window on one core
- ``backend (pool)``: ``TorchBackend.encode`` now: one single-thread call per core side by side
  (fronts one window each, the LSTM tail on the batch split per core)

CPU time per window shows the cost of intra-op threading: the threads wait at each op's barrier for
the slowest one (a core shared with other processes stalls them all) and spin while they wait.

    python benchmarks/torch_cpu.py [--windows 16] [--repeats 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import Meter, machine_info, print_table, save_figure, write_json

from sonovec.models.base import BackendOptions, cpu_count
from sonovec.models.registry import load_backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    info = machine_info()
    cores = cpu_count()
    backend = load_backend("torch", BackendOptions(model="encodec_48khz", weights="random"))
    encoder = backend.model.encoder  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal((args.windows, 2, 48_000))).astype(np.float32)
    x = torch.from_numpy(audio)

    def batch(threads: int, size: int) -> None:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            for start in range(0, args.windows, size):
                encoder(x[start : start + size])

    def pool() -> None:
        torch.set_num_threads(1)
        backend.encode(audio)

    methods = {
        f"batch16 @ {cores} threads": lambda: batch(cores, 16),
        f"batch1 @ {cores} threads (the loop)": lambda: batch(cores, 1),
        "batch1 @ 1 thread": lambda: batch(1, 1),
        f"backend: {cores} single-thread calls": pool,
    }
    for run in methods.values():  # warm-up
        run()
    sums = {name: [0.0, 0.0, [], []] for name in methods}
    for repeat in range(args.repeats):
        order = list(methods) if repeat % 2 == 0 else list(methods)[::-1]
        for name in order:
            with Meter() as meter:
                methods[name]()
            assert meter.result is not None
            entry = sums[name]
            entry[0] += meter.result.wall_s  # type: ignore[operator]
            entry[1] += meter.result.cpu_s  # type: ignore[operator]
            entry[2].append(meter.result.others_cpu)  # type: ignore[union-attr]
            entry[3].append(meter.result.load_avg)  # type: ignore[union-attr]
    n = args.windows * args.repeats
    rows = [{"method": name, "ms_per_window": 1000 * wall / n, "cpu_ms_per_window": 1000 * cpu / n,
             "x_realtime": n / wall, "others_cpu": float(np.mean(others)), "load": float(np.mean(loads))}
            for name, (wall, cpu, others, loads) in sums.items()]  # type: ignore[misc]
    loop = rows[1]["x_realtime"]
    for row in rows:
        row["vs_loop"] = row["x_realtime"] / loop
    table = print_table(rows, [
        ("method", "method", ""), ("ms_per_window", "wall ms/window", ".0f"),
        ("cpu_ms_per_window", "CPU ms/window", ".0f"), ("x_realtime", "x real time", ".1f"),
        ("vs_loop", "vs loop", ".2f"), ("load", "load", ".1f"), ("others_cpu", "others' cores", ".2f"),
    ])
    write_json("torch_cpu", {"machine": info, "args": vars(args), "rows": rows, "table": table})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["ms_per_window"] for r in rows], 0.4, label="wall ms / window")
    ax.barh(y + 0.2, [r["cpu_ms_per_window"] for r in rows], 0.4, label="CPU ms / window")
    ax.set_yticks(y, [r["method"] for r in rows])
    ax.invert_yaxis()
    ax.legend()
    others = np.mean([r["others_cpu"] for r in rows])
    ax.set_title(f"torch fp32, 48 kHz encoder, 1 s windows (others' cores {others:.2f})")
    save_figure("torch_cpu", fig)


if __name__ == "__main__":
    main()
