"""Overload: open-loop arrivals at twice the saturating rate, default admission settings.

1. Saturating rate: ``--concurrency`` clients send embed requests back to back (closed loop) for
   ``--saturate-s``; the rate of completed requests is what the server sustains.
2. Overload: Poisson arrivals at ``--factor`` (2) times that rate for ``--overload-s``, each a
   distinct clip (no cache hits). Every reply is recorded: status, Retry-After, latency.

What must hold (and is printed, and exits 1 if not): only 200 and 429; every 429 carries
Retry-After; p99 latency of accepted requests under ``max_queue_wait_s`` plus one batch; goodput
(completed requests per second during the overload) at least 80 % of the saturating rate.

The model is the fake backend with ``--fake-seconds-per-audio-second`` (default 1/30: what the
torch backend does on this machine's CPU, benchmarks/results/load.json), so the figures are the
server's admission and queueing, not a model's arithmetic.

    python benchmarks/overload.py --quick   # 8 s + 40 s
    python benchmarks/overload.py           # 20 s + 120 s
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import soundfile
from common import Server, machine_info, print_table, save_figure, write_json

SAMPLE_RATE = 48_000


@dataclass
class Reply:
    sent: float
    status: int
    latency: float
    retry_after: str | None


def clip(seconds: float, index: int) -> bytes:
    """A distinct WAV: a chord whose pitch depends on ``index`` (so nothing is cached)."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    root = 110.0 * 2 ** ((index % 600) / 120)
    x = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.25, 1.5)) / 4
    buffer = io.BytesIO()
    stereo = np.stack([x, x], 1).astype(np.float32)
    soundfile.write(buffer, stereo, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


async def embed(client, data: bytes, started: float) -> Reply:  # type: ignore[no-untyped-def]
    import httpx

    sent = time.monotonic()
    try:
        response = await client.post("/v1/embed", files={"audio": ("a.wav", data)})
        status, retry = response.status_code, response.headers.get("retry-after")
    except httpx.HTTPError:
        status, retry = -1, None
    return Reply(sent - started, status, time.monotonic() - sent, retry)


async def saturate(url: str, seconds: float, concurrency: int, clip_s: float) -> float:
    """Completed requests per second with ``concurrency`` closed-loop clients."""
    import httpx

    done = 0
    end = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal done
        while time.monotonic() < end:
            reply = await embed(client, clip(clip_s, next(counter)), 0.0)
            if reply.status == 200 and time.monotonic() <= end:
                done += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        start = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return done / (min(time.monotonic(), end) - start)


async def overload(url: str, rate: float, seconds: float, clip_s: float, seed: int) -> list[Reply]:
    """Poisson arrivals at ``rate`` per second for ``seconds``; every reply."""
    import httpx

    rng = random.Random(seed)
    clips = [clip(clip_s, 10_000 + i) for i in range(int(rate * seconds * 1.3) + 10)]
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        tasks = []
        started = time.monotonic()
        at = 0.0
        for data in clips:
            at += rng.expovariate(rate)
            if at > seconds:
                break
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            tasks.append(asyncio.create_task(embed(client, data, started)))
        return list(await asyncio.gather(*tasks))


def summarise(replies: list[Reply], seconds: float, saturating: float, bound_s: float) -> dict:
    ok = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status == 429]
    latencies = np.array([r.latency for r in ok]) if ok else np.zeros(1)
    done_in_window = sum(1 for r in ok if r.sent + r.latency <= seconds)
    goodput = done_in_window / seconds
    statuses = sorted({r.status for r in replies})
    return {
        "offered_per_s": len(replies) / seconds,
        "requests": len(replies),
        "ok": len(ok),
        "refused_429": len(refused),
        "other": len(replies) - len(ok) - len(refused),
        "statuses": statuses,
        "retry_after_on_all_429": all(r.retry_after for r in refused),
        "p50_s": float(np.percentile(latencies, 50)),
        "p99_s": float(np.percentile(latencies, 99)),
        "max_s": float(latencies.max()),
        "bound_s": bound_s,
        "goodput_per_s": goodput,
        "saturating_per_s": saturating,
        "goodput_ratio": goodput / saturating,
    }


def figure(replies: list[Reply], summary: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    ok = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status == 429]
    left.scatter([r.sent for r in ok], [r.latency for r in ok], s=4, label="200")
    left.scatter([r.sent for r in refused], [r.latency for r in refused], s=4, label="429", alpha=0.5)
    left.axhline(summary["bound_s"], color="k", linestyle="--", label="wait bound + one batch")
    left.set_xlabel("sent at (s)")
    left.set_ylabel("latency (s)")
    left.legend()
    offered, saturating = summary["offered_per_s"], summary["saturating_per_s"]
    left.set_title(f"offered {offered:.1f}/s, saturating {saturating:.1f}/s")
    edges = np.arange(0, max(r.sent for r in replies) + 2, 2.0)
    right.hist([r.sent + r.latency for r in ok], bins=edges, label="200 completed", alpha=0.7)
    right.hist([r.sent for r in refused], bins=edges, label="429 sent", alpha=0.5)
    right.set_xlabel("time (s), 2 s bins")
    right.set_ylabel("requests")
    right.legend()
    save_figure(name, fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--clip-s", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--fake-seconds-per-audio-second", type=float, default=1 / 30)
    parser.add_argument("--saturate-s", type=float)
    parser.add_argument("--overload-s", type=float)
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `sonovec serve` flags")
    args = parser.parse_args()
    saturate_s = args.saturate_s or (8.0 if args.quick else 20.0)
    overload_s = args.overload_s or (40.0 if args.quick else 120.0)
    from sonovec.models import MODEL_SPECS
    from sonovec.server.settings import Settings

    defaults = Settings()
    batch_s = defaults.max_batch_seconds or MODEL_SPECS["encodec_48khz"].batch_seconds
    bound_s = defaults.max_queue_wait_s + batch_s * args.fake_seconds_per_audio_second
    serve = ["--backend", "fake", "--weights", "random", "--models", "encodec_48khz", "--cache-entries", "0",
             "--fake-seconds-per-audio-second", str(args.fake_seconds_per_audio_second), *args.serve_arg]
    machine = machine_info()
    with Server(*serve, grpc=False) as server:
        saturating = asyncio.run(saturate(server.url, saturate_s, args.concurrency, args.clip_s))
        replies = asyncio.run(overload(server.url, args.factor * saturating, overload_s, args.clip_s, 0))
    summary = summarise(replies, overload_s, saturating, bound_s)
    summary["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    columns = [("offered_per_s", "offered/s", ".2f"), ("saturating_per_s", "saturating/s", ".2f"),
               ("goodput_per_s", "goodput/s", ".2f"), ("goodput_ratio", "goodput ratio", ".2f"),
               ("ok", "200", "d"), ("refused_429", "429", "d"), ("other", "other", "d"),
               ("p50_s", "p50 s", ".2f"), ("p99_s", "p99 s", ".2f"), ("max_s", "max s", ".2f"),
               ("bound_s", "bound s", ".2f")]
    table = print_table([summary], columns)
    checks = {
        "only 200 and 429": set(summary["statuses"]) <= {200, 429},
        "Retry-After on every 429": summary["retry_after_on_all_429"],
        "p99 of accepted under the bound": summary["p99_s"] <= bound_s,
        "goodput >= 80 % of saturating": summary["goodput_ratio"] >= 0.8,
    }
    for name, passed in checks.items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")
    name = "overload_quick" if args.quick else "overload"
    write_json(name, {"machine": machine, "args": vars(args), "serve": serve, "summary": summary,
                      "checks": checks, "table": table, "replies": [r.__dict__ for r in replies]})
    figure(replies, summary, name)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
