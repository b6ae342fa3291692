"""FAISS over L2-normalised vectors, so inner product is cosine similarity.

Internal ids are int64, assigned by the collection (``state.py``); callers' string ids never get here.

* ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact; removal in place.
* ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``. HNSW cannot remove, so a removed id becomes a tombstone,
  filtered out at search time by an ``IDSelector``; the graph is rebuilt once tombstones reach a
  quarter of the live items.
* ``ivf``: ``IndexIVFFlat`` (ids stored natively, hash-table direct map for reconstruction; an
  ``IndexIDMap`` over IVF would compact ids wrongly on removal). Until the collection holds
  ``IndexSpec.ivf_train_size`` items it is a flat index; then it trains once on what it holds.

Search parameters (``efSearch``, ``nprobe``) and filters go in per call through
``faiss.SearchParameters*``: nothing shared is mutated, so concurrent searches are safe. Mutations
need the caller's exclusive lock (one writer).

A search answers one query, which FAISS does not split across threads; its OpenMP team is set to
one thread (per calling thread), since waking a team per query cost 5-10x in latency on a busy
2-core machine. Writes (adding many vectors, training, rebuilding) keep every core.
"""

from __future__ import annotations

import faiss
import numpy as np

from sonovec.server.collections.spec import IndexSpec

_WRITE_THREADS = faiss.omp_get_max_threads()
EXACT_FILTER_MAX = 20_000  # filtered searches over at most this many items are done exactly
_REBUILD_FRACTION = 0.25


def _flat(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _ids(ids: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(ids, dtype=np.int64)


class VectorIndex:
    def __init__(self, spec: IndexSpec, dim: int, index: faiss.Index | None = None,
                 tombstones: set[int] | None = None) -> None:
        self.spec = spec
        self.dim = dim
        self.tombstones: set[int] = tombstones or set()
        self._index = index if index is not None else self._empty()

    def _empty(self) -> faiss.Index:
        if self.spec.kind == "hnsw":
            hnsw = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = self.spec.ef_construction
            return faiss.IndexIDMap2(hnsw)
        return _flat(self.dim)

    # ---- state ----

    @property
    def trained_ivf(self) -> bool:
        return isinstance(self._index, faiss.IndexIVF)

    @property
    def exact(self) -> bool:
        return self.spec.kind == "flat" or (self.spec.kind == "ivf" and not self.trained_ivf)

    @property
    def live(self) -> int:
        return int(self._index.ntotal) - len(self.tombstones)

    def serialize(self) -> np.ndarray:
        return faiss.serialize_index(self._index)

    @classmethod
    def deserialize(cls, spec: IndexSpec, dim: int, blob: np.ndarray, tombstones: set[int]) -> VectorIndex:
        return cls(spec, dim, faiss.deserialize_index(np.ascontiguousarray(blob, dtype=np.uint8)), tombstones)

    # ---- writes (caller holds the exclusive lock) ----

    def add(self, ids: np.ndarray, unit_vectors: np.ndarray) -> None:
        """``[N]`` new internal ids, ``[N, dim]`` L2-normalised float32."""
        faiss.omp_set_num_threads(_WRITE_THREADS)
        self._index.add_with_ids(np.ascontiguousarray(unit_vectors, dtype=np.float32), _ids(ids))
        untrained_ivf = self.spec.kind == "ivf" and not self.trained_ivf
        if untrained_ivf and self._index.ntotal >= self.spec.ivf_train_size:
            self._train_ivf()

    def remove(self, ids: np.ndarray) -> None:
        faiss.omp_set_num_threads(_WRITE_THREADS)
        if self.spec.kind != "hnsw":
            self._index.remove_ids(_ids(ids))  # type: ignore[arg-type]  # SWIG takes arrays too
            return
        self.tombstones.update(int(i) for i in ids)
        if len(self.tombstones) > max(1000, _REBUILD_FRACTION * self.live):
            self._rebuild_hnsw()

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        """Every stored (internal id, unit vector), tombstones included."""
        if isinstance(self._index, faiss.IndexIDMap2):
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        else:
            raise AssertionError("only IDMap2 indexes are listed")
        return ids, self._index.reconstruct_batch(ids)

    def _train_ivf(self) -> None:
        ids, vectors = self._all()
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.spec.nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.own_fields = True
        quantizer.this.disown()  # type: ignore[attr-defined]
        ivf.train(vectors)
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
        ivf.add_with_ids(vectors, ids)
        self._index = ivf

    def _rebuild_hnsw(self) -> None:
        ids, vectors = self._all()
        keep = ~np.isin(ids, np.fromiter(self.tombstones, np.int64, len(self.tombstones)))
        self._index = self._empty()
        self.tombstones = set()
        if keep.any():
            self._index.add_with_ids(vectors[keep], ids[keep])

    # ---- reads (shared lock) ----

    def search(
        self,
        query: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """``[dim]`` unit query -> (``[<=k]`` scores, ``[<=k]`` internal ids, exact?), best first.
        ``allowed``: only these internal ids (a label filter)."""
        faiss.omp_set_num_threads(1)  # this thread only; see the module docstring
        if allowed is not None and len(allowed) <= EXACT_FILTER_MAX:
            return (*self._exact_among(query, k, _ids(allowed)), True)
        params = self._params(allowed, ef_search, nprobe)
        scores, ids = self._index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        found = ids[0] >= 0
        return scores[0][found], ids[0][found], self.exact

    def _exact_among(self, query: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.tombstones:
            allowed = allowed[~np.isin(allowed, np.fromiter(self.tombstones, np.int64, len(self.tombstones)))]
        if len(allowed) == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        scores = self._index.reconstruct_batch(allowed) @ query.astype(np.float32)
        top = np.argsort(-scores, kind="stable")[:k]
        return scores[top], allowed[top]

    def _params(
        self, allowed: np.ndarray | None, ef_search: int | None, nprobe: int | None
    ) -> faiss.SearchParameters:
        refs: list[faiss.IDSelector] = []  # FAISS holds raw pointers: keep every selector alive
        if allowed is not None:
            refs.append(faiss.IDSelectorBatch(_ids(allowed)))
        if self.tombstones:
            refs.append(faiss.IDSelectorBatch(_ids(np.fromiter(self.tombstones, np.int64))))
            refs.append(faiss.IDSelectorNot(refs[-1]))
            if allowed is not None:
                refs.append(faiss.IDSelectorAnd(refs[0], refs[-1]))
        if self.spec.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=ef_search or self.spec.ef_search)  # type: ignore[attr-defined]
        elif self.trained_ivf:
            nprobe = min(nprobe or self.spec.nprobe, self.spec.nlist)
            params = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        else:
            params = faiss.SearchParameters()
        if refs:
            params.sel = refs[-1]
            params.selector_refs = refs
        return params
