"""On-disk IVF-PQ collections at 1M and 10M vectors: build time, bytes per vector, resident memory
while serving, recall@10 vs exact, p50/p99 latency per nprobe; a projection to 100M.

For each size N the benchmark
1. writes N synthetic clustered unit vectors (128-d; about 1,000 per cluster) as an extract folder
   (model.json, embeddings.npy, paths.txt), 500,000 rows at a time (never all in RAM);
2. computes the exact top-10 of Q held-out queries by brute force over the same chunks;
3. runs ``sonovec index build`` as a user does (a subprocess: train on a sample, shards added by
   worker processes, lists merged into OnDiskInvertedLists);
4. opens the built collection in a fresh process (``DiskCollection``, the class the server uses)
   and searches one query at a time, single-threaded, as a request does: the FAISS scan, the exact
   re-ranking of k x rerank candidates from the memory-mapped vectors, the id lookup. Memory is read
   from /proc/self/status: RssAnon (the process's own memory) and RssFile (file pages mapped in,
   which the kernel can drop).

    python benchmarks/ivf_bench.py --sizes 1000000            # about 5 min here
    nice -n 10 python benchmarks/ivf_bench.py --sizes 1000000 10000000
    python benchmarks/ivf_bench.py --quick                     # 100k, CI-sized (results/tmp/)

Writes results/ivf_bench.json and .png (``--quick``: results/tmp/). The data folders go to
``--work`` (default /tmp/sonovec-ivf-bench; 10M takes 5.5 GB) and are deleted afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DIM = 128
K = 10
CHUNK = 500_000
PER_CLUSTER = 1_000
NPROBES = (4, 8, 16, 32, 64)
RERANKS = (10, 30)  # candidates re-scored exactly: k x this
HEADER = {"model": "synthetic", "weights_fingerprint": "clustered-v1", "pretrained": False,
          "pooling": "mean", "normalize": True, "fragment_seconds": None, "fragment_offset": 0.0}


def factory_for(count: int) -> tuple[str, int]:
    """IVF lists of about 1,200 vectors (nlist a power of two near N / 1,200, capped at 4096 so
    that k-means trains in minutes on 2 shared cores: 65536 lists would want 2.6M training vectors
    and hours here) behind an HNSW quantizer (assigning 10M vectors to 4096 centroids exhaustively
    is 1e13 flops; the HNSW graph visits a few hundred), PQ32 codes
    (32 bytes a vector). Trained on 39 vectors per list (the least FAISS accepts without warning)
    and at least 100,000 (the PQ codebooks: 256 centroids per sub-vector want as many)."""
    nlist = int(min(4096, 2 ** round(np.log2(max(count / 1_200, 64)))))
    return f"IVF{nlist}_HNSW32,PQ32", min(count, max(39 * nlist, 100_000))


def clustered(count: int, seed: int, clusters: int) -> np.ndarray:
    """Unit vectors around ``clusters`` fixed centres; noise 0.6 of the centre's norm."""
    centres = np.random.default_rng(12345).standard_normal((clusters, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(clusters, size=count)] + 0.6 * rng.standard_normal((count, DIM), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def load() -> float:
    return round(os.getloadavg()[0], 2)


def write_data(folder: Path, count: int, queries: np.ndarray, clusters: int) -> np.ndarray:
    """The extract folder, chunk by chunk; returns the exact top-K rows of each query."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(HEADER))
    shape = (count, DIM)
    out = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+", dtype=np.float32, shape=shape)
    best_scores = np.full((len(queries), K), -np.inf, np.float32)
    best_rows = np.zeros((len(queries), K), np.int64)
    with open(folder / "paths.txt", "w") as paths:
        for start in range(0, count, CHUNK):
            chunk = clustered(min(CHUNK, count - start), seed=start + 1, clusters=clusters)
            out[start : start + len(chunk)] = chunk
            paths.write("".join(f"c/{i:09d}.wav\n" for i in range(start, start + len(chunk))))
            scores = queries @ chunk.T
            top = np.argpartition(-scores, K, axis=1)[:, :K]
            merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
            merged_rows = np.concatenate([best_rows, top + start], axis=1)
            keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :K]
            best_scores = np.take_along_axis(merged_scores, keep, 1)
            best_rows = np.take_along_axis(merged_rows, keep, 1)
    out.flush()
    del out
    return best_rows


def build(folder: Path, data_dir: Path, factory: str, train_size: int, workers: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "sonovec.server.cli", "index", "build", str(folder), "--name", "bench",
               "--data-dir", str(data_dir), "--factory", factory, "--train-size", str(train_size),
               "--workers", str(workers), "--no-progress"]
    started, load_before = time.perf_counter(), load()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-4000:])
    built = data_dir / "indexes" / "bench"
    info = json.loads((built / "build.json").read_text())
    sizes = {p.name: p.stat().st_size for p in built.iterdir()}
    return {"wall_s": round(time.perf_counter() - started, 1), "timings": info["timings"], "files": sizes,
            "load_before": load_before, "load_after": load()}


def memory() -> dict[str, int]:
    fields = (line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {k: int(v.split()[0]) * 1024 for k, v in fields if k in ("RssAnon", "RssFile", "VmRSS")}


def serve(folder: Path, queries_path: Path, truth_path: Path) -> dict[str, Any]:
    """In a fresh process: open the collection, search each query at each nprobe."""
    from sonovec.server.collections.ondisk import DiskCollection

    queries, truth = np.load(queries_path), np.load(truth_path)
    before = memory()
    collection = DiskCollection(folder)
    opened = memory()
    rows = []
    for rerank, nprobe in ((r, n) for r in RERANKS for n in NPROBES):
        for q in queries[:20]:  # warm-up
            collection.search(q, K, nprobe=nprobe, rerank=rerank)
        times, recalls = [], []
        for q, t in zip(queries, truth, strict=True):
            started = time.perf_counter()
            hits, _ = collection.search(q, K, nprobe=nprobe, rerank=rerank)
            times.append(time.perf_counter() - started)
            found = {int(h.id[2:-4]) for h in hits}
            recalls.append(len(found & set(t.tolist())) / K)
        rows.append({"rerank": rerank, "nprobe": nprobe, "p50_ms": 1000 * float(np.percentile(times, 50)),
                     "p99_ms": 1000 * float(np.percentile(times, 99)),
                     "recall_at_10": float(np.mean(recalls)),
                     "load": load()})
    return {"memory_before_open": before, "memory_opened": opened, "memory_after_search": memory(),
            "rows": rows, "nlist": int(collection._ivf.nlist), "rerank": collection.rerank}


def run_size(count: int, queries: int, work: Path, workers: int, keep: bool) -> dict[str, Any]:
    clusters = max(10, count // PER_CLUSTER)
    folder, data_dir = work / f"extract-{count}", work / f"data-{count}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    q = clustered(queries, seed=10**9, clusters=clusters)
    started = time.perf_counter()
    truth = write_data(folder, count, q, clusters)
    generate_s = time.perf_counter() - started
    factory, train_size = factory_for(count)
    print(f"{count:,}: data and exact top-{K} in {generate_s:.0f} s; building {factory} "
          f"(train {train_size:,}), load {load()}", flush=True)
    built = build(folder, data_dir, factory, train_size, workers)
    np.save(work / "queries.npy", q)
    np.save(work / "truth.npy", truth)
    served = subprocess.run([sys.executable, __file__, "--serve", str(data_dir / "indexes" / "bench"),
                             str(work / "queries.npy"), str(work / "truth.npy")],
                            capture_output=True, text=True)
    if served.returncode != 0:
        raise SystemExit(served.stderr[-4000:])
    result = {"count": count, "clusters": clusters, "factory": factory, "train_size": train_size,
              "generate_s": round(generate_s, 1), "build": built,
              "serve": json.loads(served.stdout.strip().splitlines()[-1])}  # faiss may print before it
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def bytes_per_vector(result: dict[str, Any]) -> dict[str, float]:
    files, n = result["build"]["files"], result["count"]
    index = files["lists.ivfdata"] + files["index.faiss"]
    ids = sum(v for k, v in files.items() if k.startswith("ids."))
    return {"index": index / n, "ids": ids / n, "vectors": files["vectors.npy"] / n}


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'N':>11} {'factory':<22} {'build s':>8} {'B/vec idx':>9} {'+ids':>6} {'anon MB':>8} "
          f"{'file MB':>8} {'rerank':>6} {'nprobe':>6} {'p50 ms':>7} {'p99 ms':>7} {'recall@10':>9}")
    for r in results:
        b, mem = bytes_per_vector(r), r["serve"]["memory_after_search"]
        for i, row in enumerate(r["serve"]["rows"]):
            lead = (f"{r['count']:>11,} {r['factory']:<22} {r['build']['timings']['total_s']:>8.0f} "
                    f"{b['index']:>9.1f} {b['ids']:>6.1f} {mem['RssAnon'] / 2**20:>8.0f} "
                    f"{mem['RssFile'] / 2**20:>8.0f}") if i == 0 else " " * 78
            print(f"{lead} {row['rerank']:>6} {row['nprobe']:>6} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} "
                  f"{row['recall_at_10']:>9.3f}")


def projection(results: list[dict[str, Any]], target: int = 100_000_000) -> dict[str, Any]:
    """Straight lines through the measured sizes (least squares on N), read at ``target``."""
    ns = np.array([r["count"] for r in results], float)

    def at(values: list[float]) -> float:
        if len(ns) < 2:
            return float(values[0] * target / ns[0])
        slope, intercept = np.polyfit(ns, values, 1)
        return float(slope * target + intercept)

    disk = at([sum(r["build"]["files"].values()) for r in results])
    lists = at([r["build"]["files"]["lists.ivfdata"] for r in results])
    return {
        "count": target,
        "build_s": at([r["build"]["timings"]["total_s"] for r in results]),
        "add_s": at([r["build"]["timings"]["add_s"] for r in results]),
        "disk_bytes": disk, "lists_bytes": lists,
        "rss_anon_bytes": at([r["serve"]["memory_after_search"]["RssAnon"] for r in results]),
        "note": "build time assumes the same nlist; at 100M a larger nlist (e.g. 65536) keeps lists short "
                "and latency near the 10M figures, at a k-means cost best paid on a bigger machine",
    }


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    curves = [(i, j, r, rerank) for i, r in enumerate(results) for j, rerank in enumerate(RERANKS)]
    for i, j, r, rerank in curves:
        rows = [x for x in r["serve"]["rows"] if x["rerank"] == rerank]
        label, color = f"{r['count']:,} ({r['factory']}, rerank {rerank})", f"C{2 * i + j}"
        recalls = [x["recall_at_10"] for x in rows]
        ax.plot([x["p50_ms"] for x in rows], recalls, marker="o", color=color, label=f"{label} p50")
        ax.plot([x["p99_ms"] for x in rows], recalls, marker="o", color=color, linestyle=":", alpha=0.4,
                label=f"{label} p99")
        for x in rows:
            ax.annotate(f"nprobe={x['nprobe']}", (x["p50_ms"], x["recall_at_10"]), fontsize=6,
                        textcoords="offset points", xytext=(4, -9))
    ax.axvline(5, color="grey", linewidth=0.8, linestyle="--")
    ax.axhline(0.9, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("latency per query, ms (log)")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        print(json.dumps(serve(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="Processes adding shards.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sonovec-ivf-bench"))
    parser.add_argument("--keep", action="store_true", help="Keep the data and index folders.")
    parser.add_argument("--quick", action="store_true", help="100,000 vectors, 200 queries")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="ivf_bench", help="Result file stem.")
    parser.add_argument("--combine", type=Path, nargs="+", default=None,
                        help="Instead of running: join earlier runs' JSON (one size each) into one report.")
    args = parser.parse_args()
    if args.combine:
        runs = [json.loads(p.read_text()) for p in args.combine]
        report_and_plot([r for run in runs for r in run["results"]], args.queries, runs[0]["machine"], args)
        return
    if args.quick:
        args.sizes, args.queries = [100_000], 200
        if args.out == RESULTS:
            args.out = RESULTS / "tmp"
    import faiss

    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"faiss {faiss.__version__}")
    print(f"sizes {args.sizes}, {DIM}-d clustered, {args.queries} queries, k={K}; {machine}; load {load()}")
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for count in args.sizes:
        results.append(run_size(count, args.queries, args.work, args.workers, args.keep))
        print_table(results[-1:])
    report_and_plot(results, args.queries, machine, args)


def report_and_plot(results: list[dict[str, Any]], queries: int, machine: str,
                    args: argparse.Namespace) -> None:
    print_table(results)
    report = {"dim": DIM, "k": K, "queries": queries, "machine": machine, "results": results,
              "bytes_per_vector": [bytes_per_vector(r) for r in results],
              "projection_100M": projection(results)}
    print("\nprojection to 100M:", json.dumps(report["projection_100M"], indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    plot(results, args.out / f"{args.name}.png", f"on-disk IVF-PQ, {DIM}-d clustered, k={K} ({machine})")
    print(f"wrote {args.out / args.name}.json and .png")

if __name__ == "__main__":
    main()
