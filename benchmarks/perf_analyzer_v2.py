"""Triton's ``perf_analyzer`` against sonovec's Open Inference Protocol (/v2 REST and gRPC).

A closed-loop concurrency sweep on ``encodec_48khz_embed`` with one 1 s mono WAVEFORM [1, 48000]
per request, over HTTP (binary tensors) and gRPC. The server runs the fake backend with the
embedding cache off (``--cache-entries 0``): every request is decoded, windowed, batched and
pooled, so the figures are the protocol and service overhead around a model that costs nothing
(``--model-seconds S`` simulates S s of model time per audio second).

Where perf_analyzer comes from: PyPI's ``perf-analyzer`` is a placeholder (0.1.0, no binary) and
newer ``tritonclient`` wheels no longer carry it; the ``tritonclient==2.40.0`` wheel ships
``bin/perf_analyzer``. It links ``libb64.so.0d`` (Debian ``libb64-0d``) and ``libcudart.so.12``
(PyPI ``nvidia-cuda-runtime-cu12``; no GPU is used). This script downloads both wheels with pip
into ``.cache/perf_analyzer`` and runs the binary from there.

    python benchmarks/perf_analyzer_v2.py --quick     # concurrency 1, 4; 2 s windows
    python benchmarks/perf_analyzer_v2.py             # concurrency 1, 2, 4, 8, 16; 4 s windows
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from common import SCRATCH, Meter, Server, machine_info, print_table, save_figure, write_json

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "perf_analyzer"
WHEEL = "tritonclient==2.40.0"
MODEL = "encodec_48khz_embed"
RATE = 48_000
# perf_analyzer repeats a level until 3 windows agree within this much; 7 other agents share 2 cores
STABILITY_PERCENT = 50


def _pip_download(requirement: str, into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", requirement, "-d", str(into)],
        check=True,
    )
    name = requirement.split("=")[0].replace("-", "_")
    return next(p for p in into.glob("*.whl") if p.name.lower().startswith(name))


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """The binary and the environment it runs in (built once under .cache/perf_analyzer)."""
    binary, libs = CACHE / "perf_analyzer", CACHE / "lib"
    if not binary.exists():
        wheels = CACHE / "wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_pip_download(WHEEL, wheels)) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith("/bin/perf_analyzer"))
            binary.write_bytes(wheel.read(member))
        binary.chmod(0o755)
        libs.mkdir(exist_ok=True)
        with zipfile.ZipFile(_pip_download("nvidia-cuda-runtime-cu12", wheels)) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith("/libcudart.so.12"))
            (libs / "libcudart.so.12").write_bytes(wheel.read(member))
    env = {**os.environ, "LD_LIBRARY_PATH": f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    missing = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
    if "not found" in missing:
        lines = [line.strip() for line in missing.splitlines() if "not found" in line]
        raise SystemExit(f"perf_analyzer cannot load {lines}; libb64: apt-get install libb64-0d")
    return binary, env


def sweep(
    binary: Path, env: dict[str, str], server: Server, protocol: str, args: argparse.Namespace
) -> list[dict]:
    port = server.port if protocol == "http" else server.grpc_port
    out = SCRATCH / f"perf_analyzer_{protocol}.csv"
    levels = ",".join(str(c) for c in args.concurrency)
    command = [
        str(binary),
        "-m",
        MODEL,
        "-i",
        protocol,
        "-u",
        f"127.0.0.1:{port}",
        "--input-data",
        str(SCRATCH / "perf_analyzer_input.json"),
        "--measurement-interval",
        str(args.window_ms),
        "--stability-percentage",
        str(STABILITY_PERCENT),
        "--max-trials",
        "10",
        "-f",
        str(out),
    ]
    rows = []
    for level in levels.split(","):
        with Meter([server.proc.pid]) as meter:  # type: ignore[union-attr]
            run = subprocess.run(
                [*command, "--concurrency-range", level], capture_output=True, text=True, env=env, timeout=600
            )
        if run.returncode != 0:
            raise SystemExit(
                f"perf_analyzer {protocol} c={level} failed:\n{run.stdout[-2000:]}\n{run.stderr}"
            )
        with open(out) as file:
            record = next(csv.DictReader(file))
        rate = float(record["Inferences/Second"])
        rows.append(
            {
                "protocol": protocol,
                "concurrency": int(level),
                "infer_per_s": rate,
                "x_real_time": rate * 1.0,  # 1 s of audio per inference
                "p50_ms": float(record["p50 latency"]) / 1000,
                "p99_ms": float(record["p99 latency"]) / 1000,
                "load_avg": meter.result.load_avg if meter.result else None,  # type: ignore[union-attr]
                "others_cpu": meter.result.others_cpu if meter.result else None,  # type: ignore[union-attr]
            }
        )
    return rows


def plot(rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for protocol in ("http", "grpc"):
        mine = [r for r in rows if r["protocol"] == protocol]
        levels = [r["concurrency"] for r in mine]
        left.plot(levels, [r["infer_per_s"] for r in mine], marker="o", label=protocol)
        right.plot(levels, [r["p50_ms"] for r in mine], marker="o", label=f"{protocol} p50")
        right.plot(levels, [r["p99_ms"] for r in mine], marker="x", linestyle="--", label=f"{protocol} p99")
    left.set(
        xscale="log",
        xlabel="concurrency",
        ylabel="inferences/s (1 s of audio each)",
        title=f"perf_analyzer, {MODEL}",
    )
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="latency (ms)", title="client latency")
    left.legend()
    right.legend()
    save_figure(name, figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="concurrency 1, 4; 2 s windows")
    parser.add_argument("--model-seconds", type=float, default=0.0, help="fake model time per audio second")
    args = parser.parse_args()
    args.concurrency = [1, 4] if args.quick else [1, 2, 4, 8, 16]
    args.window_ms = 2000 if args.quick else 4000
    binary, env = perf_analyzer()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    wave = (0.1 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)
    data = {"data": [{"WAVEFORM": {"content": wave.tolist(), "shape": [1, RATE]}}]}
    (SCRATCH / "perf_analyzer_input.json").write_text(json.dumps(data))
    info = machine_info()
    server_args = [
        "--backend",
        "fake",
        "--weights",
        "random",
        "--cache-entries",
        "0",
        "--fake-seconds-per-audio-second",
        str(args.model_seconds),
    ]
    with Server(*server_args, log=SCRATCH / "perf_analyzer_server.log") as server:
        rows = [row for protocol in ("http", "grpc") for row in sweep(binary, env, server, protocol, args)]
    columns = [
        ("protocol", "protocol", "s"),
        ("concurrency", "concurrency", "d"),
        ("infer_per_s", "infer/s", ".1f"),
        ("p50_ms", "p50 ms", ".2f"),
        ("p99_ms", "p99 ms", ".2f"),
        ("load_avg", "load avg", ".2f"),
        ("others_cpu", "others' CPU (cores)", ".2f"),
    ]
    table = print_table(rows, columns)
    name = "perf_analyzer_v2_quick" if args.quick else "perf_analyzer_v2"
    write_json(
        name,
        {
            "machine": info,
            "binary": f"perf_analyzer from {WHEEL}",
            "model": MODEL,
            "stability_percent": STABILITY_PERCENT,
            "server": server_args,
            "input": "WAVEFORM FP32 [1, 48000] (1 s mono at 48 kHz)",
            "load_avg_at_end": list(os.getloadavg()),
            "rows": rows,
            "table": table,
        },
    )
    plot(rows, name)
    (SCRATCH / "perf_analyzer_input.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
