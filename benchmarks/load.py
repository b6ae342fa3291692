"""Load: a concurrency sweep against ``sonovec serve`` over REST and gRPC, clips of mixed lengths.

At each concurrency level, that many clients send ``embed`` requests back to back (closed loop)
for a fixed time, alternating REST and gRPC level by level. Every request is a distinct clip (a
random slice of a long generated piano recording, sent as WAV), so the embedding cache never hits;
the cache-hit path is measured separately at the end by sending clips a second time.

Per level: requests and audio seconds done, throughput (x real time, requests/s), latency p50 / p95 /
p99 (client side), and from the server's ``/metrics`` (deltas over the level): mean queue wait of a
window, windows and audio seconds per model call.

Clip lengths (seconds, each jittered by +-20 %), ``--mix``: ``pieces`` 2 s 20 %, 5 s 25 %, 10 s 25 %,
30 s 20 %, 60 s 10 % (mean about 16 s): short sound events to whole pieces; ``events`` 0.5 s 15 %, 2 s
25 %, 5 s 25 %, 10 s 20 %, 30 s 15 % (mean about 8 s; issue 11's 24 kHz mix).

    python benchmarks/load.py --quick        # CI: concurrency 1, 4, 16; 6 s per level
    python benchmarks/load.py                # concurrency 1..64; 40 s per level
    python benchmarks/load.py --model encodec_24khz --mix events --name load_24khz

The server runs ``--weights random`` (the pretrained checkpoint cannot be downloaded here).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import time
from dataclasses import dataclass

import numpy as np
from common import (
    RESULTS,
    SCRATCH,
    Meter,
    Server,
    grpc_client_available,
    machine_info,
    piano_recording,
    print_table,
    save_figure,
    write_json,
)
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

MIXES = {
    "pieces": ((2.0, 0.20), (5.0, 0.25), (10.0, 0.25), (30.0, 0.20), (60.0, 0.10)),
    "events": ((0.5, 0.15), (2.0, 0.25), (5.0, 0.25), (10.0, 0.20), (30.0, 0.15)),
}
MIX = MIXES["pieces"]
SOURCE_RATE = 44_100


class Clips:
    """Distinct WAV clips cut from one long recording: a new random offset for every request."""

    def __init__(self, seconds: float, seed: int = 0, mix: tuple = MIX) -> None:  # type: ignore[type-arg]
        import soundfile

        self.mix = mix
        audio = piano_recording(seconds, SOURCE_RATE, seed)
        self.pcm = np.ascontiguousarray((audio.T * 32767).astype(np.int16))  # [T, 2]
        self.rng = np.random.default_rng(seed)
        self.used: set[tuple[int, int]] = set()
        self._soundfile = soundfile

    def draw(self) -> tuple[bytes, float]:
        lengths, weights = zip(*self.mix, strict=True)
        seconds = float(self.rng.choice(lengths, p=weights)) * self.rng.uniform(0.8, 1.2)
        frames = int(seconds * SOURCE_RATE)
        while True:
            start = int(self.rng.integers(0, len(self.pcm) - frames))
            if (start, frames) not in self.used:
                self.used.add((start, frames))
                break
        buffer = io.BytesIO()
        clip = self.pcm[start : start + frames]
        self._soundfile.write(buffer, clip, SOURCE_RATE, format="WAV", subtype="PCM_16")
        return buffer.getvalue(), frames / SOURCE_RATE


@dataclass
class Done:
    latency_s: float
    audio_s: float
    cached: bool


async def closed_loop(url: str, clips: Clips | list[tuple[bytes, float]], concurrency: int,
                      duration_s: float, label: str) -> tuple[list[Done], int, float]:
    """``concurrency`` clients sending back to back for ``duration_s``; (done, errors, elapsed)."""
    from sonovec.client import AsyncClient, SonovecClientError

    done: list[Done] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + duration_s
    bar = tqdm(desc=label, unit="req", leave=False)
    fixed = list(clips) if isinstance(clips, list) else None

    async def client_loop(client: AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < deadline and (fixed is None or fixed):
            data, seconds = fixed.pop() if fixed is not None else clips.draw()  # type: ignore[union-attr]
            t0 = time.perf_counter()
            try:
                result = await client.embed(data, timeout=600.0)
            except SonovecClientError:
                errors += 1
                continue
            done.append(Done(time.perf_counter() - t0, seconds, result.cached))
            bar.update(1)

    async with AsyncClient(url, timeout=600.0, retries=0) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    bar.close()
    return done, errors, time.perf_counter() - started


# ---- /metrics ------------------------------------------------------------------------------------------


def scrape(server: Server) -> dict[str, dict[str, float]]:
    """Histogram sums and counts (summed over labels) of the batching metrics, plus buckets."""
    wanted = {"sonovec_queue_wait_seconds", "sonovec_batch_windows", "sonovec_batch_audio_seconds",
              "sonovec_cache_requests"}
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(server.metrics()):
        if family.name not in wanted:
            continue
        values = out.setdefault(family.name, {})
        for sample in family.samples:
            key = sample.name.removeprefix(family.name) or "value"
            if "le" in sample.labels:
                key = f"le={sample.labels['le']}"
            elif "result" in sample.labels:
                key = sample.labels["result"]
            values[key] = values.get(key, 0.0) + sample.value
    return out


def server_stats(before: dict, after: dict) -> dict[str, float | None]:
    def delta(name: str, key: str) -> float:
        return after.get(name, {}).get(key, 0.0) - before.get(name, {}).get(key, 0.0)

    def mean(name: str) -> float | None:
        count = delta(name, "_count")
        return delta(name, "_sum") / count if count else None

    calls = delta("sonovec_batch_windows", "_count")
    return {"queue_wait_mean_s": mean("sonovec_queue_wait_seconds"), "model_calls": calls,
            "windows_per_call": mean("sonovec_batch_windows"),
            "audio_s_per_call": mean("sonovec_batch_audio_seconds"),
            "cache_hits": delta("sonovec_cache_requests", "hit")}


# ---- the sweep -----------------------------------------------------------------------------------------


def summarise(label: str, transport: str, concurrency: int, done: list[Done], errors: int, elapsed: float,
              meter: Meter, stats: dict) -> dict:
    latencies = np.array([d.latency_s for d in done]) if done else np.array([np.nan])
    audio = sum(d.audio_s for d in done)
    m = meter.result
    return {
        "phase": label, "transport": transport, "concurrency": concurrency,
        "requests": len(done), "errors": errors, "audio_s": audio, "elapsed_s": elapsed,
        "x_realtime": audio / elapsed, "req_per_s": len(done) / elapsed,
        "x_per_cpu_s": audio / m.cpu_s if m and m.cpu_s else None,  # type: ignore[union-attr]
        "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
        "p99_s": float(np.percentile(latencies, 99)), "cached": sum(d.cached for d in done),
        "load_avg": m.load_avg if m else None, "others_cpu": m.others_cpu if m else None,  # type: ignore[union-attr]
        **stats,
    }


def run_level(server: Server, url: str, transport: str, clips: Clips | list, concurrency: int,
              duration_s: float, label: str) -> dict:
    before = scrape(server)
    with Meter([server.proc.pid]) as meter:  # type: ignore[union-attr]
        done, errors, elapsed = asyncio.run(closed_loop(url, clips, concurrency, duration_s,
                                                        f"{label} {transport} x{concurrency}"))
    stats = server_stats(before, scrape(server))
    return summarise(label, transport, concurrency, done, errors, elapsed, meter, stats)


def sweep(args: argparse.Namespace, server: Server, clips: Clips) -> list[dict]:
    urls = [("rest", server.url)] + ([("grpc", server.grpc_url)] if server.grpc_url else [])
    rows = []
    for concurrency in args.levels:
        for transport, url in urls:
            rows.append(run_level(server, url, transport, clips, concurrency, args.seconds, "sweep"))
            r = rows[-1]
            print(f"{transport:4s} x{concurrency:<3d} {r['requests']:4d} req  {r['x_realtime']:6.1f}x RT  "
                  f"p50 {r['p50_s']:.2f} s  p99 {r['p99_s']:.2f} s  errors {r['errors']}", flush=True)
    return rows


def cache_hits(args: argparse.Namespace, server: Server, clips: Clips) -> list[dict]:
    """The same clips twice: the first pass fills the cache, the second is all hits."""
    batch = [clips.draw() for _ in range(args.cache_clips)]
    rows = []
    for label in ("cache-fill", "cache-hit"):
        rows.append(run_level(server, server.url, "rest", list(batch), args.cache_concurrency, 3600.0, label))
    return rows


COLUMNS = [
    ("phase", "phase", ""), ("transport", "transport", ""), ("concurrency", "clients", "d"),
    ("requests", "requests", "d"), ("errors", "errors", "d"), ("x_realtime", "x real time", ".1f"),
    ("req_per_s", "req/s", ".2f"), ("p50_s", "p50 s", ".2f"), ("p95_s", "p95 s", ".2f"),
    ("p99_s", "p99 s", ".2f"),
    ("queue_wait_mean_s", "queue wait s", ".2f"), ("windows_per_call", "windows/call", ".1f"),
    ("audio_s_per_call", "audio s/call", ".1f"), ("load_avg", "load", ".1f"),
    ("others_cpu", "others' cores", ".2f"),
]


def plot(rows: list[dict], name: str, model: str = "encodec_48khz") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"wspace": 0.4})
    others = left.twinx()
    for transport, color, shift in (("rest", "tab:blue", 0.93), ("grpc", "tab:green", 1.07)):
        sub = [r for r in rows if r["phase"] == "sweep" and r["transport"] == transport]
        if not sub:
            continue
        c = [r["concurrency"] for r in sub]
        left.plot(c, [r["x_realtime"] for r in sub], "o-", color=color, label=f"{transport}, wall clock")
        left.plot(c, [r["x_per_cpu_s"] for r in sub], "^:", color=color, label=f"{transport}, per CPU-second")
        others.bar([x * shift for x in c], [r["others_cpu"] for r in sub], width=[0.1 * x for x in c],
                   color=color, alpha=0.2)
        right.plot(c, [r["p50_s"] for r in sub], "o-", color=color, label=f"{transport} p50")
        right.plot(c, [r["p99_s"] for r in sub], "s--", color=color, label=f"{transport} p99")
    others.set_ylim(0, 2)
    others.set_ylabel("cores used by other processes (bars)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.legend(fontsize=7, loc="upper left")
    left.set_ylim(bottom=0)
    left.set_ylabel("audio seconds per second (x real time)")
    right.set_ylabel("latency, s")
    right.set_yscale("log")
    fig.suptitle(f"sonovec serve, {model}, random-init weights, mixed clip lengths")
    save_figure(name, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 3 levels of 6 s.")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--seconds", type=float, default=40.0, help="Duration of each level.")
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--cache-clips", type=int, default=32)
    parser.add_argument("--cache-concurrency", type=int, default=8)
    parser.add_argument("--no-grpc", action="store_true")
    parser.add_argument("--model", default="encodec_48khz")
    parser.add_argument("--mix", choices=sorted(MIXES), default="pieces", help="Clip lengths (see above).")
    parser.add_argument("--serve-arg", action="append", default=[], help="An extra `sonovec serve` flag.")
    parser.add_argument("--name", default=None, help="Results name [load, load_quick].")
    parser.add_argument("--plot-only", action="store_true", help="Redraw the PNG from the JSON of a run.")
    args = parser.parse_args()
    name = args.name or ("load_quick" if args.quick else "load")
    if args.plot_only:
        saved = json.loads((RESULTS / f"{name}.json").read_text())
        plot(saved["rows"], name, saved["args"].get("model", "encodec_48khz"))
        return
    if args.quick:
        args.levels, args.seconds, args.cache_clips = [1, 4, 16], 6.0, 8
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, load {info['load_avg_at_start']}; {info['weights']}")
    clips = Clips(120.0 if args.quick else 600.0, mix=MIXES[args.mix])
    grpc = grpc_client_available() and not args.no_grpc
    with Server("--backend", args.backend, "--weights", "random", "--models", args.model, "--data-dir",
                str(SCRATCH / "data"), *args.serve_arg, grpc=grpc, log=SCRATCH / "load-serve.log") as server:
        rows = sweep(args, server, clips) + cache_hits(args, server, clips)
    table = print_table(rows, COLUMNS)
    write_json(name, {"machine": info, "args": vars(args), "mix": MIXES[args.mix], "rows": rows,
                      "table": table, "load_avg_at_end": list(os.getloadavg())})
    plot(rows, name, args.model)


if __name__ == "__main__":
    main()
