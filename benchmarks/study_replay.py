"""The MAESTRO study's workload, replayed on this machine: EnCodec 48 kHz latents of one fragment
per recording, 10 s and 60 s long, from 44.1 kHz stereo files.

The study (an RTX 4060) took 30 min for 1,184 x 10 s fragments and 2 h 40 min for 1,184 x 60 s
(6.6x and 7.4x real time). Measured here, in one run, on the same generated recordings, in rounds:
each method processes every ``rounds``-th file per round, methods in rotating order, so that the
load other processes put on a shared machine falls on every method alike:

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
import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
from common import (
    RESULTS,
    SCRATCH,
    Measurement,
    Meter,
    Server,
    Variant,
    cut_fragments,
    grpc_client_available,
    machine_info,
    make_corpus,
    print_table,
    save_figure,
    variants,
    write_json,
)
from tqdm import tqdm

from sonovec.models.weights import torch_threads

RECORDINGS = 1184
STUDY_SECONDS = {10.0: 30 * 60.0, 60.0: 160 * 60.0}  # the study's wall time per fragment length
MODEL = "encodec_48khz"
# torch's intra-op threads as a fresh script gets them (one per core), read before any sonovec
# backend loads: the torch backend sets the process-wide count to 1 for its single-thread calls,
# and a loop run after it in this process would otherwise inherit that (it did until 2026-12-02).
SCRIPT_THREADS = torch.get_num_threads()


# ---- (a) the study's per-file loop -------------------------------------------------------------------


def study_loop(paths: list[Path], fragment_s: float, model: torch.nn.Module,
               device: str = "cpu") -> list[np.ndarray]:
    """What a researcher writes with the encodec package: one file at a time, ``model.encode``,
    the latents of its codes pooled. (encodec's ``convert_audio`` needs torchaudio, which does not
    load with this torch; soxr stands in for its resampler.)"""
    vectors = []
    for path in tqdm(paths, desc=f"loop {fragment_s:g} s", unit="file", leave=False):
        with soundfile.SoundFile(path) as f:
            wav = f.read(int(fragment_s * f.samplerate), dtype="float32", always_2d=True)  # [T, C]
            rate = f.samplerate
        wav = soxr.resample(wav, rate, model.sample_rate, quality="HQ").T  # [C, T]
        x = torch.from_numpy(np.ascontiguousarray(wav))[None].to(device)
        with torch.no_grad():
            frames = model.encode(x)
            latents = torch.cat([model.quantizer.decode(codes.transpose(0, 1)) for codes, _ in frames], -1)
        vectors.append(latents.mean(-1)[0].cpu().numpy())
    return vectors


# ---- the methods: each loaded once, then run on one share of the files per round --------------------


class Loop:
    """(a) The study's loop, on its own model instance (torch's default threads, as a script has)."""

    name = "loop"
    pids: list[int] = []

    def __init__(self, device: str) -> None:
        from sonovec.models.weights import load_model

        self.device = device
        self.model = load_model(MODEL, "random")[0].to(self.device)
        self.model.set_target_bandwidth(6.0)

    def warm_up(self, recordings: list[Path], fragments: list[Path]) -> None:
        with torch_threads(SCRIPT_THREADS):
            study_loop(recordings[:1], 1.0, self.model, self.device)

    def run(self, recordings: list[Path], fragments: list[Path], fragment_s: float, tag: str) -> None:
        with torch_threads(SCRIPT_THREADS):
            study_loop(recordings, fragment_s, self.model, self.device)

    def close(self) -> None:
        pass


def settings(variant: Variant, device: str, batch_seconds: float):  # type: ignore[no-untyped-def]
    from sonovec.server.settings import Settings

    return Settings(backend=variant.backend, precision=variant.precision, workers=variant.workers,
                    device=device, max_batch_seconds=batch_seconds, weights="random", models=[MODEL],
                    grpc_port=0, max_wait_ms=20.0, cache_entries=0, data_dir=SCRATCH / "data",
                    log_level="warning")


class Extract:
    """(b) ``sonovec extract --fragment-seconds S`` in process: the same service and ``_extract`` the
    command runs, on a folder holding (links to) this round's recordings."""

    pids: list[int] = []

    def __init__(self, variant: Variant, args: argparse.Namespace) -> None:
        from sonovec.server.runtime import Runtime

        self.name = f"extract/{variant.name}"
        self.concurrency = args.concurrency
        # loads (and on a first run exports) the model: not timed
        self.runtime = Runtime(settings(variant, args.device, args.batch_seconds)).start_sync()
        self.service = self.runtime.service

    def warm_up(self, recordings: list[Path], fragments: list[Path]) -> None:
        self.run(recordings[:1], fragments[:1], 1.0, "warm-up")

    def run(self, recordings: list[Path], fragments: list[Path], fragment_s: float, tag: str) -> None:
        from sonovec.server.extract import ExtractOptions, _extract

        work = SCRATCH / "extract" / self.name.replace("/", "-") / tag
        shutil.rmtree(work, ignore_errors=True)
        (work / "in").mkdir(parents=True)
        (work / "out").mkdir()
        for path in recordings:
            (work / "in" / path.name).symlink_to(path.resolve())
        options = ExtractOptions(input=work / "in", output=work / "out", fragment_seconds=fragment_s,
                                 concurrency=self.concurrency, progress=False)
        if asyncio.run(_extract(self.service, options)):
            raise RuntimeError(f"{self.name} failed; see {work / 'out' / 'errors.jsonl'}")

    def close(self) -> None:
        self.runtime.stop(timeout=60)


class Served:
    """(c) The running service (a ``sonovec serve`` subprocess), fragment files uploaded by
    ``concurrency`` clients at once over one transport."""

    def __init__(self, server: Server, variant: Variant, transport: str, concurrency: int) -> None:
        self.url = server.url if transport == "rest" else server.grpc_url
        self.name = f"serve/{variant.name}/{transport}"
        self.concurrency = concurrency
        self.pids = [server.proc.pid]  # type: ignore[union-attr]

    def warm_up(self, recordings: list[Path], fragments: list[Path]) -> None:
        asyncio.run(_upload_all(self.url, fragments[:1], 1))  # type: ignore[arg-type]

    def run(self, recordings: list[Path], fragments: list[Path], fragment_s: float, tag: str) -> None:
        asyncio.run(_upload_all(self.url, fragments, self.concurrency))  # type: ignore[arg-type]

    def close(self) -> None:
        pass


async def _upload_all(url: str, paths: list[Path], concurrency: int) -> None:
    from sonovec.client import AsyncClient

    slots = asyncio.Semaphore(concurrency)
    async with AsyncClient(url, timeout=600.0) as client:

        async def one(path: Path) -> None:
            async with slots:
                await client.embed(path)

        await asyncio.gather(*(one(p) for p in paths))


# ---- the run: rounds, so that every method sees the same changes of load ------------------------------


@dataclass
class Total:
    wall_s: float = 0.0
    cpu_s: float = 0.0
    others_core_s: float = 0.0
    load_s: float = 0.0

    def add(self, m: Measurement) -> None:
        self.wall_s += m.wall_s
        self.cpu_s += m.cpu_s
        self.others_core_s += m.others_cpu * m.wall_s
        self.load_s += m.load_avg * m.wall_s


def row(method: str, fragment_s: float, files: int, t: Total) -> dict:
    audio = files * fragment_s
    x_rt = audio / t.wall_s
    projected = RECORDINGS * fragment_s / x_rt
    study = STUDY_SECONDS.get(fragment_s)
    return {
        "method": method, "fragment_s": fragment_s, "files": files, "audio_s": audio,
        "wall_s": t.wall_s, "cpu_s": t.cpu_s, "others_cpu": t.others_core_s / t.wall_s,
        "load_avg": t.load_s / t.wall_s, "x_realtime": x_rt, "x_per_cpu_s": audio / t.cpu_s,
        "projected_min": projected / 60, "vs_study": study / projected if study else None,
    }


def measure_fragment(methods: list, corpus: list[Path], fragments: list[Path], fragment_s: float,
                     rounds: int) -> list[dict]:
    """Round r runs every method on files r, r + rounds, ...; the method order rotates each round."""
    totals = {m.name: Total() for m in methods}
    for r in tqdm(range(rounds), desc=f"{fragment_s:g} s fragments, rounds", unit="round"):
        share = slice(r, None, rounds)
        for method in methods[r % len(methods):] + methods[: r % len(methods)]:
            with Meter(method.pids) as meter:
                method.run(corpus[share], fragments[share], fragment_s, f"{fragment_s:g}-{r}")
            totals[method.name].add(meter.result)  # type: ignore[arg-type]
    rows = [row(m.name, fragment_s, len(corpus), totals[m.name]) for m in methods]
    loop = next((r for r in rows if r["method"] == "loop"), None)
    for r in rows:
        r["vs_loop"] = r["x_realtime"] / loop["x_realtime"] if loop else None
        r["vs_loop_cpu"] = r["x_per_cpu_s"] / loop["x_per_cpu_s"] if loop else None
    return rows


def measure(args: argparse.Namespace, corpus: list[Path]) -> list[dict]:
    grpc = grpc_client_available() and not args.no_grpc
    with contextlib.ExitStack() as stack:
        methods: list = [Loop(args.device)] if "loop" in args.methods else []
        for variant in args.extract:
            methods.append(stack.enter_context(contextlib.closing(Extract(variant, args))))
        for variant in args.serve:
            log = SCRATCH / f"serve-{variant.name}.log"
            server = stack.enter_context(Server(
                *variant.serve_args(), "--device", args.device,
                "--max-batch-seconds", str(args.batch_seconds), "--weights", "random", "--models", MODEL,
                "--data-dir", str(SCRATCH / "data"), "--cache-entries", "0", grpc=grpc, log=log))
            methods += [Served(server, variant, t, args.concurrency) for t in ("rest", "grpc")[: 1 + grpc]]
        rows = []
        for fragment_s in args.fragments:
            where = SCRATCH / f"fragments-{len(corpus)}x{args.seconds:g}s-{fragment_s:g}s"
            fragments = cut_fragments(corpus, where, fragment_s)
            for method in methods:
                method.warm_up(corpus, fragments)
            rows += measure_fragment(methods, corpus, fragments, fragment_s, args.rounds)
    return rows


COLUMNS = [
    ("method", "method", ""), ("fragment_s", "fragment s", "g"), ("files", "files", "d"),
    ("wall_s", "wall s", ".1f"), ("x_realtime", "x real time", ".1f"), ("x_per_cpu_s", "x per CPU-s", ".1f"),
    ("projected_min", "1,184 files, min", ".1f"), ("vs_study", "vs study", ".1f"),
    ("vs_loop", "vs loop", ".2f"), ("vs_loop_cpu", "vs loop per CPU-s", ".2f"),
    ("load_avg", "load", ".1f"), ("others_cpu", "others' cores", ".2f"),
]


def plot(rows: list[dict], name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fragments = sorted({r["fragment_s"] for r in rows})
    fig, axes = plt.subplots(1, len(fragments), figsize=(6.5 * len(fragments), 4.2), squeeze=False,
                             gridspec_kw={"wspace": 0.45})
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
        ax.axvline(25, color="green", ls=":", label="target (issue 11): 25x")
        ax.set_xlabel("x real time")
        ax.set_title(f"{fragment_s:g} s fragments (48 kHz, random-init weights)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.08))
    save_figure(name, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 4 recordings of 11 s, 10 s fragments.")
    parser.add_argument("--recordings", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=180.0, help="Length of each generated recording.")
    parser.add_argument("--fragments", type=lambda s: [float(x) for x in s.split(",")], default=[10.0, 60.0])
    parser.add_argument("--methods", default="loop", help="'loop' includes the study's loop; '' skips it.")
    parser.add_argument("--extract", type=variants, default=variants("torch,onnx"),
                        help="Backends for sonovec extract, BACKEND[-PRECISION][-wWORKERS]: torch, "
                        "torch-bf16, torch-w2, torch-fp16-w2, onnx, ...")
    parser.add_argument("--serve", type=variants, default=variants("onnx"),
                        help="Backends for the served runs (same form).")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: every method, the loop included.")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="Files in flight: requests (served runs) and sonovec extract's --concurrency.")
    parser.add_argument("--batch-seconds", type=float, default=16.0,
                        help="The service's --max-batch-seconds (a GPU wants 128-512).")
    parser.add_argument("--rounds", type=int, default=4,
                        help="Each method does 1/rounds of the files per round (load changes hit all alike).")
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument("--name", default=None, help="Results file name (default study_replay[_quick]).")
    parser.add_argument("--plot-only", action="store_true", help="Redraw the PNG from the JSON of a run.")
    args = parser.parse_args()
    if args.plot_only:
        name = args.name or ("study_replay_quick" if args.quick else "study_replay")
        plot(json.loads((RESULTS / f"{name}.json").read_text())["rows"], name)
        return
    if args.quick:
        args.recordings, args.seconds, args.fragments, args.rounds = 4, 11.0, [10.0], 2
    name = args.name or ("study_replay_quick" if args.quick else "study_replay")
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, load {info['load_avg_at_start']}; {info['weights']}")
    folder = SCRATCH / f"corpus-{args.recordings}x{args.seconds:g}s"
    started = time.perf_counter()
    corpus = make_corpus(folder, args.recordings, args.seconds)
    print(f"corpus: {len(corpus)} x {args.seconds:g} s, 44.1 kHz stereo FLAC in {folder} "
          f"({time.perf_counter() - started:.0f} s)")
    rows = measure(args, corpus)
    table = print_table(rows, COLUMNS)
    write_json(name, {"machine": info, "args": vars(args), "rows": rows, "table": table,
                      "load_avg_at_end": list(os.getloadavg())})
    plot(rows, name)


if __name__ == "__main__":
    main()
