"""Reduced precision vs fp32, layer by layer: which encoder layers would have to stay fp32 for bf16
(or fp16) codes to agree with fp32's (the bar: >= 99 %), and what it does to pooled embeddings.

The 48 kHz encoder is run module by module with autocast on every layer but the ones named fp32;
8 windows of a chord with noise (the accuracy tests' input); codes at the lowest and the highest
bandwidth, quantized in fp32 from each variant's latents.

    python benchmarks/precision.py                 # bf16 and fp16 (CPU autocast), ~2 min
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from common import machine_info, print_table, save_figure, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from audiofiles import chord_batch

MODEL = "encodec_48khz"


def run(layers: list, x: torch.Tensor, fp32: set[int], dtype: torch.dtype) -> np.ndarray:
    h = x
    with torch.inference_mode():
        for i, layer in enumerate(layers):
            if i in fp32:
                h = layer(h.float())
            else:
                with torch.autocast("cpu", dtype=dtype):
                    h = layer(h)
    return h.float().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precisions", default="bf16,fp16")
    args = parser.parse_args()
    from sonovec.models.base import BackendOptions
    from sonovec.models.registry import load_backend

    backend = load_backend("torch", BackendOptions(model=MODEL, weights="random"))
    spec, layers = backend.spec, list(backend.model.encoder.model)
    audio = chord_batch(1.0, spec.sample_rate, spec.channels, 8, 22)
    x = torch.from_numpy(audio)
    x = x / (1e-8 + x.mean(1, keepdim=True).pow(2).mean(2, keepdim=True).sqrt())  # the model's RMS scale
    want = run(layers, x, set(range(len(layers))), torch.float32)
    last = len(layers) - 1
    lstm = {i for i, layer in enumerate(layers) if type(layer).__name__ == "SLSTM"}
    configs = {"none": set(), "first conv": {0}, "last conv": {last}, "LSTM": lstm,
               "first conv + LSTM + last conv": {0, last} | lstm}
    low, high = spec.bandwidths[0], spec.bandwidths[-1]
    rows = []
    for name in args.precisions.split(","):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
        for label, fp32 in configs.items():
            got = run(layers, x, fp32, dtype)
            a, b = got.mean(-1), want.mean(-1)
            cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
            rows.append({
                "precision": name, "fp32_layers": label,
                "rel_error": float(np.abs(got - want).max() / np.abs(want).max()),
                "codes_low": float((backend.quantize(got, low) == backend.quantize(want, low)).mean()),
                "codes_high": float((backend.quantize(got, high) == backend.quantize(want, high)).mean()),
                "pooled_cosine_min": float(cosine.min()),
            })
    columns = [("precision", "precision", ""), ("fp32_layers", "layers kept fp32", ""),
               ("rel_error", "latents max rel. error", ".2e"),
               ("codes_low", f"codes equal, {low:g} kbps", ".4f"),
               ("codes_high", f"codes equal, {high:g} kbps", ".4f"),
               ("pooled_cosine_min", "pooled cosine", ".6f")]
    table = print_table(rows, columns)
    write_json("precision", {"machine": machine_info(), "rows": rows, "table": table})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.4 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r["codes_low"] for r in rows], height=0.4, label=f"{low:g} kbps")
    ax.barh(y + 0.2, [r["codes_high"] for r in rows], height=0.4, label=f"{high:g} kbps")
    ax.axvline(0.99, color="red", ls="--", label="bar: 99 %")
    ax.set_yticks(y, [f"{r['precision']}, fp32: {r['fp32_layers']}" for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0.75, 1.0)
    ax.set_xlabel("codes equal to fp32's (48 kHz, random-init weights)")
    ax.legend(fontsize=8, loc="lower left")
    save_figure("precision", fig)


if __name__ == "__main__":
    main()
