"""The MAESTRO study's workload, replayed on this machine: EnCodec 48 kHz latents of one fragment
per recording, 10 s and 60 s long, from 44.1 kHz stereo files.

The study (an RTX 4060) took 30 min for 1,184 x 10 s fragments and 2 h 40 min for 1,184 x 60 s
(6.6x and 7.4x real time). Measured here, in one run, on the same generated recordings:

    loop            the study's way: a per-file Python loop with the encodec package (soundfile read
                    of the fragment, resample, ``EncodecModel.encode``, latents pooled)
    extract/<b>     ``sonovec extract --fragment-seconds S`` (in process) on backend <b>
    serve/<b>/rest  ``sonovec serve --backend <b>`` in a subprocess, fragment files uploaded by
    serve/<b>/grpc  concurrent clients (``sonovec.client.AsyncClient``) over REST and over gRPC

For each: audio seconds per wall second (x real time), per CPU-second, the projected time of the
full 1,184-recording workloads and its ratio to the study's time, and the ratio to ``loop``.

    python benchmarks/study_replay.py --quick        # CI: 4 recordings, 10 s fragments only
    python benchmarks/study_replay.py                # 16 recordings of 3 min, 10 s and 60 s fragments

Weights are random-init (the pretrained checkpoint cannot be downloaded here): the same FLOPs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
from common import (
    SCRATCH,
    Meter,
    Server,
    cut_fragments,
    grpc_client_available,
    machine_info,
    make_corpus,
    print_table,
    save_figure,
    write_json,
)
from tqdm import tqdm

RECORDINGS = 1184
STUDY_SECONDS = {10.0: 30 * 60.0, 60.0: 160 * 60.0}  # the study's wall time per fragment length
MODEL = "encodec_48khz"


# ---- (a) the study's per-file loop -------------------------------------------------------------------


def study_loop(paths: list[Path], fragment_s: float, model: torch.nn.Module) -> list[np.ndarray]:
    """What a researcher writes with the encodec package: one file at a time, ``model.encode``,
    the latents of its codes pooled. (encodec's ``convert_audio`` needs torchaudio, which does not
    load with this torch; soxr stands in for its resampler.)"""
    vectors = []
    for path in tqdm(paths, desc=f"loop {fragment_s:g} s", unit="file", leave=False):
        with soundfile.SoundFile(path) as f:
            wav = f.read(int(fragment_s * f.samplerate), dtype="float32", always_2d=True)  # [T, C]
            rate = f.samplerate
        wav = soxr.resample(wav, rate, model.sample_rate, quality="HQ").T  # [C, T]
        x = torch.from_numpy(np.ascontiguousarray(wav))[None]
        with torch.no_grad():
            frames = model.encode(x)
            latents = torch.cat([model.quantizer.decode(codes.transpose(0, 1)) for codes, _ in frames], -1)
        vectors.append(latents.mean(-1)[0].numpy())
    return vectors


def run_loop(paths: list[Path], fragment_s: float) -> dict:
    from sonovec.models.weights import load_model

    model, _ = load_model(MODEL, "random")
    model.set_target_bandwidth(6.0)
    study_loop(paths[:1], 1.0, model)  # warm-up, not timed
    with Meter() as meter:
        study_loop(paths, fragment_s, model)
    return meter.result.as_dict()  # type: ignore[union-attr]


# ---- (b) sonovec extract, in process --------------------------------------------------------------


def settings(backend: str, precision: str = "fp32", **extra: object):  # type: ignore[no-untyped-def]
    from sonovec.server.settings import Settings

    return Settings(backend=backend, precision=precision, weights="random", models=[MODEL], grpc_port=0,
                    max_wait_ms=20.0, cache_entries=0, data_dir=SCRATCH / "data", log_level="warning",
                    **extra)


def run_extract(folder: Path, fragment_s: float, backend: str, precision: str) -> dict:
    from sonovec.server.core import Service
    from sonovec.server.extract import ExtractOptions, _extract

    output = SCRATCH / f"extract-{backend}-{precision}-{fragment_s:g}"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    options = ExtractOptions(input=folder, output=output, fragment_seconds=fragment_s, progress=True)
    service = Service.from_settings(settings(backend, precision))
    service.start()  # loads (and on the first run exports) the model: not timed
    try:
        with Meter() as meter:
            failures = asyncio.run(_extract(service, options))
    finally:
        service.batcher.stop(timeout=60)
    if failures:
        raise RuntimeError(f"extract failed; see {output / 'errors.jsonl'}")
    return meter.result.as_dict()  # type: ignore[union-attr]


# ---- (c) the running service, concurrent clients ----------------------------------------------------


async def _upload_all(url: str, paths: list[Path], concurrency: int, label: str) -> None:
    from sonovec.client import AsyncClient

    slots = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(paths), desc=label, unit="file", leave=False)
    async with AsyncClient(url, timeout=600.0) as client:

        async def one(path: Path) -> None:
            async with slots:
                await client.embed(path)
                bar.update(1)

        await asyncio.gather(*(one(p) for p in paths))
    bar.close()


def run_service(server: Server, url: str, fragments: list[Path], concurrency: int, label: str) -> dict:
    asyncio.run(_upload_all(url, fragments[:1], 1, "warm-up"))
    with Meter([server.proc.pid]) as meter:  # type: ignore[union-attr]
        asyncio.run(_upload_all(url, fragments, concurrency, label))
    return meter.result.as_dict()  # type: ignore[union-attr]


# ---- the run -------------------------------------------------------------------------------------------


def row(method: str, fragment_s: float, files: int, m: dict, loop_x: float | None) -> dict:
    audio = files * fragment_s
    x_rt = audio / m["wall_s"]
    projected = RECORDINGS * fragment_s / x_rt
    study = STUDY_SECONDS.get(fragment_s)
    return {
        "method": method, "fragment_s": fragment_s, "files": files, "audio_s": audio, **m,
        "x_realtime": x_rt, "x_per_cpu_s": audio / m["cpu_s"], "x_2cores_cpu_bound": 2 * audio / m["cpu_s"],
        "projected_min": projected / 60, "vs_study": study / projected if study else None,
        "vs_loop": x_rt / loop_x if loop_x else (1.0 if method == "loop" else None),
    }


def measure(args: argparse.Namespace, corpus: list[Path], folder: Path) -> list[dict]:
    rows = []
    for fragment_s in args.fragments:
        where = SCRATCH / f"fragments-{len(corpus)}x{args.seconds:g}s-{fragment_s:g}s"
        fragments = cut_fragments(corpus, where, fragment_s)
        results: list[tuple[str, Callable[[], dict]]] = []
        if "loop" in args.methods:
            results.append(("loop", lambda fs=fragment_s: run_loop(corpus, fs)))
        for spec in args.extract:
            backend, _, precision = spec.partition("-")
            results.append((f"extract/{spec}", lambda fs=fragment_s, b=backend, p=precision or "fp32":
                            run_extract(folder, fs, b, p)))
        loop_x = None
        for method, fn in results:
            print(f"== {method}, {fragment_s:g} s fragments x {len(corpus)}", flush=True)
            rows.append(row(method, fragment_s, len(corpus), fn(), loop_x))
            loop_x = rows[-1]["x_realtime"] if method == "loop" else loop_x
        rows += measure_service(args, fragments, fragment_s, loop_x)
    return rows


def measure_service(args: argparse.Namespace, fragments: list[Path], fragment_s: float,
                    loop_x: float | None) -> list[dict]:
    rows = []
    for backend in args.serve:
        grpc = grpc_client_available() and not args.no_grpc
        log = SCRATCH / f"serve-{backend}.log"
        with Server("--backend", backend, "--weights", "random", "--models", MODEL, "--data-dir",
                    str(SCRATCH / "data"), "--cache-entries", "0", grpc=grpc, log=log) as server:
            urls = [("rest", server.url)] + ([("grpc", server.grpc_url)] if grpc else [])
            for transport, url in urls:
                method = f"serve/{backend}/{transport}"
                print(f"== {method}, {fragment_s:g} s fragments x {len(fragments)}", flush=True)
                m = run_service(server, url, fragments, args.concurrency, method)  # type: ignore[arg-type]
                rows.append(row(method, fragment_s, len(fragments), m, loop_x))
    return rows


COLUMNS = [
    ("method", "method", ""), ("fragment_s", "fragment s", "g"), ("files", "files", "d"),
    ("wall_s", "wall s", ".1f"), ("x_realtime", "x real time", ".1f"), ("x_per_cpu_s", "x per CPU-s", ".1f"),
    ("projected_min", "1,184 files, min", ".1f"), ("vs_study", "vs study", ".1f"),
    ("vs_loop", "vs loop", ".2f"),
    ("load_avg", "load", ".1f"), ("others_cpu", "others' cores", ".2f"),
]


def plot(rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fragments = sorted({r["fragment_s"] for r in rows})
    fig, axes = plt.subplots(1, len(fragments), figsize=(6 * len(fragments), 4), squeeze=False)
    for ax, fragment_s in zip(axes[0], fragments, strict=True):
        sub = [r for r in rows if r["fragment_s"] == fragment_s]
        y = np.arange(len(sub))
        ax.barh(y, [r["x_realtime"] for r in sub], color="tab:blue", label="wall clock (measured)")
        ax.barh(y, [r["x_per_cpu_s"] for r in sub], height=0.3, color="tab:orange", label="per CPU-second")
        ax.set_yticks(y, [r["method"] for r in sub])
        ax.invert_yaxis()
        study = STUDY_SECONDS.get(fragment_s)
        if study:
            ax.axvline(RECORDINGS * fragment_s / study, color="red", ls="--", label="study, RTX 4060")
        ax.axvline(15, color="green", ls=":", label="target: 15x")
        ax.set_xlabel("x real time")
        ax.set_title(f"{fragment_s:g} s fragments (48 kHz, random-init weights)")
        ax.legend(fontsize=7, loc="lower right")
    save_figure(name, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 4 recordings of 11 s, 10 s fragments.")
    parser.add_argument("--recordings", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=180.0, help="Length of each generated recording.")
    parser.add_argument("--fragments", type=lambda s: [float(x) for x in s.split(",")], default=[10.0, 60.0])
    parser.add_argument("--methods", default="loop", help="'loop' includes the study's loop; '' skips it.")
    parser.add_argument("--extract", type=lambda s: [x for x in s.split(",") if x], default=["torch", "onnx"],
                        help="Backends for sonovec extract: torch, torch-bf16, onnx.")
    parser.add_argument("--serve", type=lambda s: [x for x in s.split(",") if x], default=["onnx"],
                        help="Backends for the served runs.")
    parser.add_argument("--concurrency", type=int, default=8, help="Requests in flight (served runs).")
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument("--name", default=None, help="Results file name (default study_replay[_quick]).")
    args = parser.parse_args()
    if args.quick:
        args.recordings, args.seconds, args.fragments = 4, 11.0, [10.0]
    name = args.name or ("study_replay_quick" if args.quick else "study_replay")
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, load {info['load_avg_at_start']}; {info['weights']}")
    folder = SCRATCH / f"corpus-{args.recordings}x{args.seconds:g}s"
    started = time.perf_counter()
    corpus = make_corpus(folder, args.recordings, args.seconds)
    print(f"corpus: {len(corpus)} x {args.seconds:g} s, 44.1 kHz stereo FLAC in {folder} "
          f"({time.perf_counter() - started:.0f} s)")
    rows = measure(args, corpus, folder)
    table = print_table(rows, COLUMNS)
    write_json(name, {"machine": info, "args": vars(args), "rows": rows, "table": table,
                      "load_avg_at_end": list(os.getloadavg())})
    plot(rows, name)


if __name__ == "__main__":
    main()
