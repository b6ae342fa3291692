"""What each step of the ONNX export buys: the 48 kHz encoder on 16 full 1 s windows, one core.

Each variant is exported, then all are run interleaved (round after round) in one single-threaded
ONNX Runtime session each, timing the thread's CPU time (what other processes on a shared machine
disturb least). Variants, cumulative:

    plain            torch.onnx.export of the unmodified encoder, one call on the batch of 16
    plain/window     the same graph, one call per window (activations stay in cache)
    +static-pads     reflect pads without encodec's full-length no-op Slice
    +exp-elu         ELU as max(x, exp(min(x, 0)) - 1) (ORT's Elu kernel is scalar)
    +conv2d          Conv1d as Conv2d over [B, C, 1, T] (ORT's NCHWc kernels)
    split            the backend's graphs: front per window, LSTM tail on all 16 at once

    python benchmarks/onnx_ablation.py --quick   # 3 rounds
    python benchmarks/onnx_ablation.py           # 9 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import SCRATCH, machine_info, print_table, save_figure, write_json
from tqdm import tqdm

from sonovec.models import onnx_export as ox
from sonovec.models.registry import get_spec
from sonovec.models.weights import load_model

MODEL = "encodec_48khz"
WINDOWS = 16


@contextlib.contextmanager
def rewrites(exp_elu: bool, conv2d: bool) -> Iterator[None]:
    """``onnx_export.rewrite_for_ort`` (static pads always) with some of its rewrites switched off."""
    saved = ox.ExpELU, ox.Conv1dAs2d
    if not exp_elu:
        ox.ExpELU = lambda: torch.nn.ELU()  # type: ignore[assignment,misc]
    if not conv2d:
        ox.Conv1dAs2d = lambda conv: conv  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        ox.ExpELU, ox.Conv1dAs2d = saved


def export_variants(folder: Path) -> dict[str, Path]:
    spec = get_spec(MODEL)
    prepared = ox.prepare(load_model(MODEL, "random")[0], spec)
    folder.mkdir(parents=True, exist_ok=True)
    audio = torch.randn(2, spec.channels, spec.window)
    paths = {"plain": folder / "plain.onnx"}
    graph = ox.FrontGraph(copy.deepcopy(prepared.encoder), spec.normalize)  # whole encoder, no rewrite
    ox._export(graph, (audio,), paths["plain"], ["audio"], ["latents", "scales"], {"audio": {0: "batch"}})
    variants = (("+static-pads", (False, False)), ("+exp-elu", (True, False)), ("+conv2d", (True, True)))
    for name, flags in variants:
        paths[name] = folder / f"{name.strip('+')}.onnx"
        with rewrites(*flags):
            encoder = ox.rewrite_for_ort(copy.deepcopy(prepared.encoder), dynamic=False)
        ox._export(ox.FrontGraph(encoder.model, spec.normalize), (audio,), paths[name], ["audio"],
                   ["latents", "scales"], {"audio": {0: "batch"}})
    for name in (f"front_fixed_{spec.window}", "tail"):
        paths[name] = folder / f"{name}.onnx"
        ox.export_graph(name, prepared, spec, paths[name])
    return paths


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runners(paths: dict[str, Path]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    s = {name: session(path) for name, path in paths.items()}

    def whole(name: str) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: s[name].run(None, {"audio": x})[0]

    def windows(name: str, x: np.ndarray) -> np.ndarray:
        return np.concatenate([s[name].run(None, {"audio": x[i : i + 1]})[0] for i in range(len(x))])

    def per_window(name: str) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: windows(name, x)

    def split(x: np.ndarray) -> np.ndarray:
        return s["tail"].run(None, {"hidden": windows("front_fixed_48000", x)})[0]

    return {"plain": whole("plain"), "plain/window": per_window("plain"),
            "+static-pads": per_window("+static-pads"), "+exp-elu": per_window("+exp-elu"),
            "+conv2d": per_window("+conv2d"), "split": split}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, load {info['load_avg_at_start']}; {info['weights']}")
    run = runners(export_variants(SCRATCH / "ablation"))
    x = (0.1 * np.random.default_rng(0).standard_normal((WINDOWS, 2, 48_000))).astype(np.float32)
    reference = run["plain"](x)
    times: dict[str, list[float]] = {name: [] for name in run}
    scale = np.abs(reference).max()
    errors = {name: float(np.abs(fn(x) - reference).max() / scale) for name, fn in run.items()}
    for _ in tqdm(range(rounds), desc="rounds"):
        for name, fn in run.items():
            started = time.thread_time()
            fn(x)
            times[name].append(time.thread_time() - started)
    base = WINDOWS / float(np.median(times["plain"]))
    rows = [{"variant": name, "x_per_core": WINDOWS / float(np.median(t)), "best": WINDOWS / min(t),
             "vs_plain": WINDOWS / float(np.median(t)) / base, "max_rel_error": errors[name]}
            for name, t in times.items()]
    table = print_table(rows, [("variant", "variant", ""), ("x_per_core", "x RT per core (median)", ".1f"),
                               ("best", "best", ".1f"), ("vs_plain", "vs plain", ".2f"),
                               ("max_rel_error", "max rel. error vs plain", ".1e")])
    name = "onnx_ablation_quick" if args.quick else "onnx_ablation"
    write_json(name, {"machine": info, "rounds": rounds, "rows": rows, "table": table, "times_s": times})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh([r["variant"] for r in rows], [r["x_per_core"] for r in rows], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("x real time per core (thread CPU time, median)")
    ax.set_title("48 kHz encoder on ONNX Runtime, 16 x 1 s windows, one thread")
    save_figure(name, fig)


if __name__ == "__main__":
    main()
