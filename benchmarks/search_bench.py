"""Collection search over random vectors: flat (exact), HNSW and IVF, through the service's own
collection code (``CollectionState``: FAISS plus the id and metadata mapping of every hit).

For each index: build time (adding every vector, IVF training included), per-query latency
(p50, p99; one query at a time, k=10, as a request does) and recall@10 against the exact answer,
at a few search settings. Prints a table; writes ``results/search_bench.json`` and ``.png``.

    python benchmarks/search_bench.py            # 100,000 x 128-d, 1,000 queries
    python benchmarks/search_bench.py --quick    # 10,000 vectors, 200 queries (CI; results/tmp/)
    python benchmarks/search_bench.py --data clustered

Random unit vectors (``--data random``, the default) are the hardest case for approximate search:
no structure to exploit, every point nearly equidistant in 128-d. ``--data clustered`` draws them
from 1,000 Gaussian clusters instead, closer to real embeddings, where HNSW and IVF reach a given
recall at much lower ``ef_search`` / ``nprobe``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from sonovec.server.collections.spec import CollectionInfo, EmbeddingSpace, IndexSpec
from sonovec.server.collections.state import CollectionState, Op

RESULTS = Path(__file__).resolve().parent / "results"
K = 10


@dataclass
class Row:
    index: str
    setting: str
    build_s: float
    p50_ms: float
    p99_ms: float
    recall_at_10: float


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_rows(count: int, dim: int, seed: int, clusters: int = 1000) -> np.ndarray:
    """Unit vectors around ``clusters`` random centres (the same centres for every seed)."""
    spread = 0.6  # noise norm relative to the centre's: clusters overlap a little
    centres = unit_rows(clusters, dim, seed=12345)
    rng = np.random.default_rng(seed)
    members = centres[rng.integers(clusters, size=count)]
    x = members + spread * rng.standard_normal((count, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(spec: IndexSpec, vectors: np.ndarray, batch: int = 10_000) -> tuple[CollectionState, float]:
    space = EmbeddingSpace("bench", "random", "mean", True, vectors.shape[1])
    state = CollectionState(CollectionInfo("bench", space, spec))
    started = time.perf_counter()
    for start in range(0, len(vectors), batch):
        rows = range(start, min(start + batch, len(vectors)))
        state.apply([Op("upsert", f"v{i}", vectors[i], (), {}, seq=i + 1) for i in rows])
    return state, time.perf_counter() - started


def measure(state: CollectionState, queries: np.ndarray, **params: int) -> tuple[np.ndarray, list[list[str]]]:
    """Per-query seconds and the ids found."""
    for q in queries[:20]:  # warm-up
        state.search(q, K, **params)
    times, found = [], []
    for q in queries:
        started = time.perf_counter()
        hits, _ = state.search(q, K, **params)
        times.append(time.perf_counter() - started)
        found.append([h.id for h in hits])
    return np.array(times), found


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def run(count: int, dim: int, num_queries: int, data: str) -> list[Row]:
    rows_of = unit_rows if data == "random" else clustered_rows
    vectors = rows_of(count, dim, seed=0)
    queries = rows_of(num_queries, dim, seed=1)
    # a power of two near 4 sqrt(N), small enough that IVF trains (39 per list) on what it holds
    nlist = 2 ** int(np.log2(min(4 * np.sqrt(count), count / 39)))
    plans: list[tuple[str, IndexSpec, list[dict[str, int]]]] = [
        ("flat", IndexSpec(kind="flat"), [{}]),
        ("hnsw", IndexSpec(kind="hnsw", hnsw_m=32, ef_construction=200),
         [{"ef_search": ef} for ef in (32, 64, 128, 256, 512)]),
        ("ivf", IndexSpec(kind="ivf", nlist=nlist), [{"nprobe": n} for n in (8, 32, 128, 256)]),
    ]
    rows: list[Row] = []
    truth: list[list[str]] = []
    for name, spec, settings in plans:
        state, build_s = build(spec, vectors)
        for params in settings:
            times, found = measure(state, queries, **params)
            if name == "flat":
                truth = found
            setting = ", ".join(f"{k}={v}" for k, v in params.items()) or "exact"
            if name == "ivf":
                setting += f" (nlist={nlist})"
            rows.append(Row(name, setting, build_s, 1000 * float(np.percentile(times, 50)),
                            1000 * float(np.percentile(times, 99)), recall(found, truth)))
            print_row(rows[-1])
        del state
    return rows


def print_row(row: Row) -> None:
    print(f"{row.index:<5} {row.setting:<26} build {row.build_s:7.1f} s   p50 {row.p50_ms:7.3f} ms   "
          f"p99 {row.p99_ms:7.3f} ms   recall@10 {row.recall_at_10:.3f}", flush=True)


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, marker, color in (("flat", "s", "C0"), ("hnsw", "o", "C2"), ("ivf", "^", "C4")):
        mine = [r for r in rows if r.index == name]
        recalls = [r.recall_at_10 for r in mine]
        ax.plot([r.p50_ms for r in mine], recalls, marker=marker, color=color, label=f"{name} p50")
        ax.plot([r.p99_ms for r in mine], recalls, marker=marker, color=color, linestyle=":", alpha=0.4,
                label=f"{name} p99")
        for r in mine:
            ax.annotate(r.setting.split(" ")[0], (r.p50_ms, r.recall_at_10), fontsize=7,
                        textcoords="offset points", xytext=(4, -9))
    ax.set_xscale("log")
    ax.set_xlabel("latency per query, ms (log)")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true", help="10,000 vectors, 200 queries")
    parser.add_argument("--data", choices=["random", "clustered"], default="random")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.count, args.queries = 10_000, 200
        if args.out == RESULTS:
            args.out = RESULTS / "tmp"  # CI-sized runs stay out of the committed results
    cpu = platform.processor() or platform.machine()
    threads = faiss.omp_get_max_threads()
    machine = f"{cpu}, {os.cpu_count()} cores, faiss {faiss.__version__}, {threads} OpenMP threads"
    print(f"{args.count:,} {args.data} unit vectors, {args.dim}-d; {args.queries:,} single queries, "
          f"k={K}; {machine}")
    rows = run(args.count, args.dim, args.queries, args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "search_bench" + ("_clustered" if args.data == "clustered" else "")
    stem += "_quick" if args.quick else ""
    report = {"count": args.count, "dim": args.dim, "data": args.data, "queries": args.queries, "k": K,
              "machine": machine, "rows": [r.__dict__ for r in rows]}
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    title = f"{args.count:,} x {args.dim}-d {args.data} vectors, k={K} ({machine})"
    plot(rows, args.out / f"{stem}.png", title)
    print(f"wrote {args.out / stem}.json and .png")


if __name__ == "__main__":
    main()
