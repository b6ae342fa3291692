"""Read-mostly collections too big for RAM: IVF-PQ with memory-mapped inverted lists.

Built offline by ``sonovec index build`` (``index_build.py``) from extract folders, served by
``Collections`` without loading them into RAM. A built collection is a folder::

    <data_dir>/indexes/<name>/
        collection.json   the CollectionInfo (space: model + weights fingerprint of the extracts)
        build.json        factory, count, rerank depth, sources, build timings
        index.faiss       the trained index (quantizer, PQ codebooks, OPQ matrix) without its lists
        lists.ivfdata     the inverted lists (codes + ids): OnDiskInvertedLists, memory-mapped
        vectors.npy       [N, D] float32, the vectors as extracted (memory-mapped; exact re-ranking, get)
        ids.bytes.npy, ids.offsets.npy  item ids (utf-8), row i's is bytes[offsets[i]:offsets[i+1]]
        ids.hash.npy, ids.order.npy   sorted 64-bit hashes of the ids and their rows (id -> row)

Nothing per item lives in Python objects: the process holds the coarse quantizer and codebooks
(megabytes); codes, ids and vectors are pages of files that the kernel reads in and may drop again.

A search: the OPQ rotation (if any) is applied to the query, the IVF lists are scanned with
``nprobe`` given per call (``SearchParametersIVF``; nothing shared is set), and the top
``k * rerank`` candidates are re-scored exactly against their stored vectors. Scores are therefore
exact cosines; recall depends on the candidates that PQ finds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mmap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from sonovec.server.collections.spec import CollectionInfo, Hit, Item
from sonovec.server.collections.state import RWLock

log = logging.getLogger(__name__)

INFO = "collection.json"
BUILD = "build.json"
INDEX = "index.faiss"
LISTS = "lists.ivfdata"
VECTORS = "vectors.npy"


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """``[N]`` uint64: the first 8 bytes of each id's blake2b digest (id -> row lookup)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids),
        np.uint64, len(ids),
    )


@dataclasses.dataclass
class _Stored:
    """What ``Collections`` reads from a record: the vector as added."""

    vector: np.ndarray


def _random_access(array: np.ndarray) -> np.ndarray:
    """No read-ahead on a memory-mapped array read row by row at random (a re-ranked search
    touches k x rerank rows; read-ahead would pull in ~32 pages around each)."""
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)
    return array


class _Ids:
    """Row <-> item id over memory-mapped files."""

    def __init__(self, directory: Path) -> None:
        self._blob = np.load(directory / "ids.bytes.npy", mmap_mode="r")
        self._offsets = np.load(directory / "ids.offsets.npy", mmap_mode="r")
        self._hashes = np.load(directory / "ids.hash.npy", mmap_mode="r")
        self._order = np.load(directory / "ids.order.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def id(self, row: int) -> str:
        return bytes(self._blob[self._offsets[row] : self._offsets[row + 1]]).decode()

    def row(self, item_id: str) -> int | None:
        wanted = id_hashes([item_id])[0]
        at = int(np.searchsorted(self._hashes, wanted))
        while at < len(self._hashes) and self._hashes[at] == wanted:
            row = int(self._order[at])
            if self.id(row) == item_id:
                return row
            at += 1
        return None


class _Items:
    """``state.items.get(id)`` for the by-id query path of ``Collections``."""

    def __init__(self, owner: DiskCollection) -> None:
        self._owner = owner

    def get(self, item_id: str) -> _Stored | None:
        row = self._owner.ids.row(item_id)
        return None if row is None else _Stored(np.array(self._owner.vectors[row], np.float32))

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self._owner.ids.row(item_id) is not None


class DiskCollection:
    """One built collection, opened read-only. Quacks like ``CollectionState`` for reads."""

    read_only = True

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.info = CollectionInfo.from_json((directory / INFO).read_text())
        self.build = json.loads((directory / BUILD).read_text())
        self.rerank = int(self.build["rerank"])
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY  # lists: mmap'd from this folder
        index = faiss.read_index(str(directory / INDEX), flags)
        self._index = index  # owns the chain below
        self._transforms: list[faiss.VectorTransform] = []  # OPQ etc.: applied to the query here,
        if isinstance(index, faiss.IndexPreTransform):  # so that the IVF gets its params directly
            chain: Any = index.chain  # a SWIG vector
            self._transforms = [faiss.downcast_VectorTransform(chain.at(i)) for i in range(chain.size())]
        self._ivf = faiss.extract_index_ivf(index)
        self.vectors = _random_access(np.load(directory / VECTORS, mmap_mode="r"))
        self.ids = _Ids(directory)
        if not (len(self.ids) == len(self.vectors) == self._ivf.ntotal):
            raise ValueError(f"{directory}: {len(self.ids)} ids, {len(self.vectors)} vectors, "
                             f"{self._ivf.ntotal} in the index")
        self.items = _Items(self)
        self.postings: dict[str, set[int]] = {}  # built collections carry no labels
        self.lock = RWLock()  # only readers ever take it; there for the ``Collections`` read path
        self.dropped = False

    @property
    def name(self) -> str:
        return self.info.name

    def __len__(self) -> int:
        return int(self._ivf.ntotal)

    def item(self, item_id: str) -> Item | None:
        row = self.ids.row(item_id)
        if row is None:
            return None
        return Item(item_id, np.array(self.vectors[row], np.float32), (), {})

    def labelled(self, classes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        return np.empty((0, self.info.space.dim), np.float32), []

    def candidates(self, unit_query: np.ndarray, count: int, nprobe: int | None) -> np.ndarray:
        """``[<=count]`` rows that IVF-PQ ranks highest for this query."""
        faiss.omp_set_num_threads(1)  # as in index.py: one query, one thread
        x = np.ascontiguousarray(unit_query.reshape(1, -1), dtype=np.float32)
        for transform in self._transforms:
            x = transform.apply(x)
        probe = min(nprobe or self.info.index.nprobe, int(self._ivf.nlist))
        params = faiss.SearchParametersIVF(nprobe=probe)  # type: ignore[call-arg]
        _, rows = self._ivf.search(x, count, params=params)
        return rows[0][rows[0] >= 0]

    def search(
        self,
        unit_query: np.ndarray,
        k: int,
        *,
        labels: Sequence[str] | None = None,
        exclude: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        rerank: int | None = None,
    ) -> tuple[list[Hit], bool]:
        """As ``CollectionState.search``; exact cosines for the re-ranked candidates. ``rerank``:
        re-score k x this many candidates (default: the build's ``--rerank``)."""
        if labels is not None:
            return [], False  # no item carries a label
        want = k + (exclude is not None)
        rows = self.candidates(unit_query, want * max(1, rerank or self.rerank), nprobe)
        sorted_rows = np.sort(rows)
        scores = self._exact_scores(sorted_rows, unit_query)
        order = np.argsort(-scores, kind="stable")
        ranked = sorted_rows[order]
        hits = []
        for score, row in zip(scores[order].tolist(), ranked.tolist(), strict=True):
            item_id = self.ids.id(row)
            if item_id != exclude:
                hits.append(Hit(item_id, float(score), (), {}))
            if len(hits) == k:
                break
        return hits, False

    def _exact_scores(self, sorted_rows: np.ndarray, unit_query: np.ndarray) -> np.ndarray:
        stored = np.asarray(self.vectors[sorted_rows], np.float32)  # sorted: fewer, ordered page reads
        if not self.info.space.normalize:
            norms = np.linalg.norm(stored, axis=1, keepdims=True)
            stored = stored / np.maximum(norms, 1e-12)
        return stored @ unit_query.astype(np.float32)

    def memory(self) -> dict[str, Any]:
        """What the process holds for this collection besides file pages."""
        return {"quantizer_bytes": int(self._ivf.quantizer.ntotal * self._ivf.d * 4),
                "lists_bytes_on_disk": (self.directory / LISTS).stat().st_size}


class DiskCollections:
    """Every built collection under one folder, opened at start (missing folder: none)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.states: dict[str, DiskCollection] = {}

    def open(self, taken: Sequence[str] = ()) -> None:
        if self.root is None or not self.root.is_dir():
            return
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (directory / BUILD).exists():
                log.warning("%s: not a built index (no %s); left alone", directory, BUILD)
                continue
            try:
                state = DiskCollection(directory)
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                log.error("%s: cannot open the built index, skipped: %s", directory, exc)
                continue
            if state.name in taken or state.name in self.states:
                log.error("%s: a collection named %r exists already; built index skipped",
                          directory, state.name)
                continue
            self.states[state.name] = state
            log.info("collection %s: %d items, read-only on-disk index (%s)",
                     state.name, len(state), state.build["factory"])
