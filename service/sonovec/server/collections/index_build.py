"""``sonovec index build``: extract folders -> a read-mostly on-disk IVF-PQ collection (``ondisk.py``).

FAISS's own recipe for indexes larger than RAM (``faiss/contrib/ondisk.py``), in four steps::

    train   index_factory(FACTORY) trained on a uniform sample of --train-size vectors (L2-normalised)
    add     the rows cut into shards of --shard-rows; --workers processes each add one shard to a
            copy of the trained, empty index and write it out (shard-XXXXX.index)
    merge   merge_ondisk: the shards' inverted lists -> one OnDiskInvertedLists file (lists.ivfdata)
    publish vectors.npy (a hard link to a single source's embeddings.npy, else a copy), the ids and
            their hash lookup, collection.json, build.json; the staging folder is renamed into place

Every extract folder must come from the same model, weights fingerprint, pooling and normalisation
(their ``model.json``); mixing is refused. Internal ids are rows, in the order of the folders given.
A build killed part-way resumes from its staging folder (``.building-NAME``): training and finished
shards are kept when the options are the same.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm import tqdm

from sonovec.server.collections import ondisk
from sonovec.server.collections.spec import CollectionInfo, EmbeddingSpace, IndexSpec, check_name
from sonovec.server.errors import SonovecError

log = logging.getLogger(__name__)

SPACE_KEYS = ("model", "weights_fingerprint", "pooling", "normalize")
_READ_ROWS = 100_000  # rows read, normalised and added at a time inside a shard


@dataclass(frozen=True)
class BuildOptions:
    inputs: tuple[Path, ...]
    name: str
    root: Path  # the service's data_dir / "indexes"
    factory: str = "OPQ32,IVF4096,PQ32"
    train_size: int = 200_000
    kmeans_iters: int = 10
    shard_rows: int = 1_000_000
    workers: int = 2
    nprobe: int = 32
    rerank: int = 30
    seed: int = 0
    progress: bool = True

    def key(self) -> dict[str, Any]:
        """What a resumed build must share with the one it resumes."""
        return {"inputs": [str(p.resolve()) for p in self.inputs], "factory": self.factory,
                "train_size": self.train_size, "kmeans_iters": self.kmeans_iters,
                "shard_rows": self.shard_rows, "seed": self.seed}


@dataclass(frozen=True)
class Source:
    folder: Path
    header: dict[str, Any]
    rows: int
    dim: int

    @property
    def vectors_path(self) -> Path:
        return self.folder / "embeddings.npy"

    def vectors(self) -> np.ndarray:
        return np.load(self.vectors_path, mmap_mode="r")


@dataclass(frozen=True)
class Shard:
    number: int
    source: int
    start: int  # rows of that source
    stop: int
    first_id: int  # the internal id of its first row


def _fail(message: str) -> SystemExit:
    return SystemExit(f"sonovec index build: {message}")


def open_sources(folders: tuple[Path, ...]) -> list[Source]:
    """Each extract folder's header and shape; one embedding space across all, or refuse."""
    sources = []
    for folder in folders:
        if not (folder / "model.json").exists() or not (folder / "embeddings.npy").exists():
            raise _fail(f"{folder} is not a finished extract folder (model.json, embeddings.npy)")
        header = json.loads((folder / "model.json").read_text())
        vectors = np.load(folder / "embeddings.npy", mmap_mode="r")
        if vectors.ndim != 2 or vectors.dtype != np.float32:
            raise _fail(f"{folder}/embeddings.npy is {vectors.dtype} {vectors.shape}, not [N, D] float32")
        sources.append(Source(folder, header, int(vectors.shape[0]), int(vectors.shape[1])))
    first = sources[0]
    for other in sources[1:]:
        mine = {k: first.header.get(k) for k in SPACE_KEYS} | {"dim": first.dim}
        theirs = {k: other.header.get(k) for k in SPACE_KEYS} | {"dim": other.dim}
        if mine != theirs:
            raise _fail(f"{other.folder} is in another embedding space than {first.folder}: "
                        f"{theirs} vs {mine}; build one index per model and weights")
    return sources


def plan_shards(sources: list[Source], shard_rows: int) -> list[Shard]:
    shards: list[Shard] = []
    first_id = 0
    for i, source in enumerate(sources):
        for start in range(0, source.rows, shard_rows):
            stop = min(start + shard_rows, source.rows)
            shards.append(Shard(len(shards), i, start, stop, first_id))
            first_id += stop - start
    return shards


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def trained_index(sources: list[Source], options: BuildOptions) -> faiss.Index:
    """The factory's index, trained on a uniform sample of every source's rows."""
    dim = sources[0].dim
    try:
        index = faiss.index_factory(dim, options.factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError as exc:
        raise _fail(f"--factory {options.factory!r}: not an IVF index FAISS can build ({exc}); "
                    "e.g. OPQ32,IVF4096,PQ32 (exact re-ranking comes from --rerank)") from None
    if isinstance(ivf, faiss.IndexIVFPQR):
        raise _fail("IVFPQR cannot be stored on disk; use IVF..,PQ.. with --rerank")
    total = sum(s.rows for s in sources)
    need = max(ivf.nlist, 256)
    if total < need:
        raise _fail(f"{total} vectors are too few to train {ivf.nlist} lists (at least {need})")
    concrete = faiss.downcast_index(ivf)
    if isinstance(concrete, faiss.IndexIVFPQ):
        concrete.do_polysemous_training = False  # type: ignore[attr-defined]  # the factory's default; 10x the training time, unused here
    ivf.cp.niter = options.kmeans_iters
    ivf.cp.seed = options.seed
    picks = np.sort(np.random.default_rng(options.seed).choice(total, min(options.train_size, total),
                                                               replace=False))
    sample = np.concatenate(list(_rows_at(sources, picks)))
    faiss.omp_set_num_threads(options.workers)
    index.train(unit(sample))
    return index


def _rows_at(sources: list[Source], picks: np.ndarray) -> Iterator[np.ndarray]:
    """The rows at these global (sorted) positions, source by source."""
    offset = 0
    for source in sources:
        mine = picks[(picks >= offset) & (picks < offset + source.rows)] - offset
        if len(mine):
            yield np.asarray(source.vectors()[mine], np.float32)
        offset += source.rows


def add_shard(trained: str, vectors: str, start: int, stop: int, first_id: int, out: str) -> int:
    """One worker process: rows ``[start, stop)`` of ``vectors`` added to the trained index,
    written to ``out`` (atomically). Returns the rows added."""
    faiss.omp_set_num_threads(1)  # the workers are the parallelism
    index = faiss.read_index(trained)
    rows = np.load(vectors, mmap_mode="r")
    for at in range(start, stop, _READ_ROWS):
        end = min(at + _READ_ROWS, stop)
        ids = np.arange(first_id + at - start, first_id + end - start, dtype=np.int64)
        index.add_with_ids(unit(rows[at:end]), ids)
    faiss.write_index(index, out + ".tmp")
    os.replace(out + ".tmp", out)
    return stop - start


def build(options: BuildOptions) -> Path:
    """Build (or resume building) the collection; returns its folder."""
    try:
        check_name(options.name)
    except SonovecError as exc:
        raise _fail(exc.message) from None
    final = options.root / options.name
    if final.exists():
        raise _fail(f"{final} exists; remove it first to rebuild (the server must be restarted after)")
    sources = open_sources(options.inputs)
    staging = options.root / f".building-{options.name}"
    _prepare_staging(staging, options)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    trained_path = staging / "trained.index"
    if not trained_path.exists():
        log.info("training %s on %d vectors", options.factory,
                 min(options.train_size, sum(s.rows for s in sources)))
        index = trained_index(sources, options)
        faiss.write_index(index, str(trained_path) + ".tmp")
        os.replace(str(trained_path) + ".tmp", trained_path)
    timings["train_s"] = time.perf_counter() - started
    shards = plan_shards(sources, options.shard_rows)
    at = time.perf_counter()
    _add_shards(staging, trained_path, sources, shards, options)
    timings["add_s"] = time.perf_counter() - at
    at = time.perf_counter()
    index = faiss.read_index(str(trained_path))
    from faiss.contrib.ondisk import merge_ondisk

    merge_ondisk(index, [str(_shard_path(staging, s)) for s in shards], str(staging / ondisk.LISTS))
    faiss.write_index(index, str(staging / ondisk.INDEX))
    timings["merge_s"] = time.perf_counter() - at
    at = time.perf_counter()
    _publish_vectors(staging, sources)
    _write_ids(staging, sources)
    timings["publish_s"] = time.perf_counter() - at
    timings["total_s"] = time.perf_counter() - started
    _write_info(staging, sources, options, faiss.extract_index_ivf(index), timings)
    for leftover in [trained_path, *(_shard_path(staging, s) for s in shards), staging / "options.json"]:
        leftover.unlink()
    os.replace(staging, final)
    log.info("built %s: %d vectors in %.1f s", final, int(index.ntotal), timings["total_s"])
    return final


def _prepare_staging(staging: Path, options: BuildOptions) -> None:
    key = json.dumps(options.key(), sort_keys=True)
    marker = staging / "options.json"
    if staging.exists() and (not marker.exists() or marker.read_text() != key):
        shutil.rmtree(staging)  # another build's leftovers: start over
    staging.mkdir(parents=True, exist_ok=True)
    marker.write_text(key)


def _shard_path(staging: Path, shard: Shard) -> Path:
    return staging / f"shard-{shard.number:05d}.index"


def _add_shards(staging: Path, trained: Path, sources: list[Source], shards: list[Shard],
                options: BuildOptions) -> None:
    todo = [s for s in shards if not _shard_path(staging, s).exists()]
    bar = tqdm(total=sum(s.stop - s.start for s in shards), unit="vec", disable=not options.progress,
               initial=sum(s.stop - s.start for s in shards if s not in todo))
    context = multiprocessing.get_context("spawn")  # no fork of a process holding OpenMP threads
    with concurrent.futures.ProcessPoolExecutor(max(1, options.workers), mp_context=context) as pool:
        futures = [pool.submit(add_shard, str(trained), str(sources[s.source].vectors_path), s.start, s.stop,
                               s.first_id, str(_shard_path(staging, s))) for s in todo]
        for future in concurrent.futures.as_completed(futures):
            bar.update(future.result())
    bar.close()


def _publish_vectors(staging: Path, sources: list[Source]) -> None:
    """``vectors.npy``: a hard link to the one source (extract replaces its file, never rewrites
    it in place, so the link keeps this build's rows), else a copy, chunk by chunk."""
    target = staging / ondisk.VECTORS
    if target.exists():
        target.unlink()
    if len(sources) == 1:
        try:
            os.link(sources[0].vectors_path, target)
            return
        except OSError:
            pass  # another file system: copy
    out = np.lib.format.open_memmap(target, mode="w+", dtype=np.float32,
                                    shape=(sum(s.rows for s in sources), sources[0].dim))
    row = 0
    for source in sources:
        rows = source.vectors()
        for at in range(0, source.rows, _READ_ROWS):
            chunk = rows[at : at + _READ_ROWS]
            out[row : row + len(chunk)] = chunk
            row += len(chunk)
    out.flush()
    del out


def _item_ids(sources: list[Source]) -> Iterator[str]:
    """Each row's id: its path in the extract folder (``FOLDER/path`` when several are given)."""
    for source in sources:
        prefix = f"{source.folder.name}/" if len(sources) > 1 else ""
        count = 0
        with open(source.folder / "paths.txt", encoding="utf-8") as f:
            for line in f:
                if count < source.rows:
                    yield prefix + line.rstrip("\n")
                count += 1
        if count < source.rows:
            raise _fail(f"{source.folder}/paths.txt has {count} lines for {source.rows} vectors")


def _write_ids(staging: Path, sources: list[Source], chunk: int = 1_000_000) -> None:
    total = sum(s.rows for s in sources)
    offsets = np.empty(total + 1, np.int64)
    offsets[0] = 0
    hashes = np.empty(total, np.uint64)
    with open(staging / "ids.bytes.raw", "wb") as blob:
        batch: list[str] = []
        row = 0
        for item_id in _item_ids(sources):
            batch.append(item_id)
            if len(batch) == chunk:
                row = _flush_ids(blob, batch, row, offsets, hashes)
                batch = []
        row = _flush_ids(blob, batch, row, offsets, hashes)
    raw = np.memmap(staging / "ids.bytes.raw", np.uint8, mode="r") if offsets[-1] else np.empty(0, np.uint8)
    out = np.lib.format.open_memmap(staging / "ids.bytes.npy", mode="w+", dtype=np.uint8,
                                    shape=(int(offsets[-1]),))
    out[:] = raw
    out.flush()
    del out, raw
    (staging / "ids.bytes.raw").unlink()
    order = np.argsort(hashes, kind="stable")
    np.save(staging / "ids.offsets.npy", offsets)
    np.save(staging / "ids.hash.npy", hashes[order])
    np.save(staging / "ids.order.npy", order.astype(np.int64))
    _check_unique(staging)


def _flush_ids(blob: Any, batch: list[str], row: int, offsets: np.ndarray, hashes: np.ndarray) -> int:
    encoded = [i.encode() for i in batch]
    lengths = np.fromiter((len(e) for e in encoded), np.int64, len(encoded))
    offsets[row + 1 : row + 1 + len(batch)] = offsets[row] + np.cumsum(lengths)
    hashes[row : row + len(batch)] = ondisk.id_hashes(batch)
    blob.write(b"".join(encoded))
    return row + len(batch)


def _check_unique(staging: Path) -> None:
    hashes = np.load(staging / "ids.hash.npy", mmap_mode="r")
    same = np.flatnonzero(hashes[1:] == hashes[:-1])
    if len(same):
        ids = ondisk._Ids(staging)  # same package
        order = np.load(staging / "ids.order.npy", mmap_mode="r")
        for at in same.tolist():
            a, b = ids.id(int(order[at])), ids.id(int(order[at + 1]))
            if a == b:
                raise _fail(f"item id {a!r} occurs twice; give folders with distinct names")


def _write_info(staging: Path, sources: list[Source], options: BuildOptions, ivf: faiss.IndexIVF,
                timings: dict[str, float]) -> None:
    header = sources[0].header
    space = EmbeddingSpace(model=header["model"], weights_fingerprint=header["weights_fingerprint"],
                           pooling=header["pooling"], normalize=bool(header["normalize"]), dim=sources[0].dim)
    spec = IndexSpec(kind="ivf", nlist=min(int(ivf.nlist), 65536), nprobe=min(options.nprobe, int(ivf.nlist)))
    info = CollectionInfo(
        name=options.name, space=space, index=spec,
        description=f"read-only on-disk {options.factory}, {int(ivf.ntotal)} vectors (sonovec index build)",
    )
    (staging / ondisk.INFO).write_text(info.to_json())
    body = {
        "factory": options.factory, "count": int(ivf.ntotal), "nlist": int(ivf.nlist),
        "code_size": int(ivf.code_size), "rerank": options.rerank, "train_size": options.train_size,
        "kmeans_iters": options.kmeans_iters, "shard_rows": options.shard_rows, "workers": options.workers,
        "sources": [{"folder": str(s.folder.resolve()), "rows": s.rows, "model": s.header} for s in sources],
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    (staging / ondisk.BUILD).write_text(json.dumps(body, indent=2))


def options_from(**given: Any) -> BuildOptions:
    fields = {f.name for f in dataclasses.fields(BuildOptions)}
    return BuildOptions(**{k: v for k, v in given.items() if k in fields and v is not None})
