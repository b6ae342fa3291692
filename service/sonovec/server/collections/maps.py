"""Maps and clusters of a collection's embedding space, for the explorer (cached per version).

::

    items (by id, sorted) --cap: seeded subsample beyond max_points--> vectors [N, D], L2-normalised
       map:      PCA to min(50, N-1, D) dims --> t-SNE (openTSNE) | UMAP (umap-learn) | first 2 PCs
       clusters: k-means | HDBSCAN on the vectors themselves (never on the 2-D map)
                 --> per cluster: size, majority label, purity = majority count / labelled members

A result is a pure function of (collection incarnation, its version ``seq``, the options): the
cache key. Each kind computes one at a time in a worker thread (CPU-bound); t-SNE logs its progress
every 50 iterations for large collections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter

from sonovec.server.collections.state import CollectionState
from sonovec.server.errors import ErrorKind, SonovecError, invalid
from sonovec.server.pooling import l2_normalize

log = logging.getLogger(__name__)

MAP_METHODS = ("tsne", "umap", "pca")
CLUSTER_METHODS = ("kmeans", "hdbscan")
MAX_POINTS = 20_000  # the highest cap a request may ask for
PCA_DIMS = 50
MIN_NONLINEAR = 5  # t-SNE / UMAP need a few points; PCA maps any number
_CACHE_ENTRIES = 64
_PROGRESS_FROM = 2000  # items: log t-SNE iterations from this size on


def _between(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise invalid(f"{name} = {value:g}", field=name, allowed=f"{low:g} to {high:g}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise invalid(f"unknown {name} {value!r}", field=name, allowed=", ".join(allowed))


@dataclass(frozen=True)
class MapOptions:
    """``method`` tsne | umap | pca; ``perplexity`` (t-SNE), ``n_neighbors`` (UMAP); ``seed`` for
    the embedding and the subsample; at most ``max_points`` items (a seeded subsample beyond)."""

    method: str = "tsne"
    perplexity: float = 30.0
    n_neighbors: int = 15
    seed: int = 0
    max_points: int = 5000

    def check(self) -> MapOptions:
        _one_of("method", self.method, MAP_METHODS)
        _between("perplexity", self.perplexity, 1, 500)
        _between("n_neighbors", self.n_neighbors, 2, 500)
        _between("seed", self.seed, 0, 2**31 - 1)
        _between("max_points", self.max_points, 2, MAX_POINTS)
        return self


@dataclass(frozen=True)
class ClusterOptions:
    """``method`` kmeans (``k`` clusters) | hdbscan (``min_cluster_size``); ``seed``, ``max_points``
    as for maps."""

    method: str = "kmeans"
    k: int = 8
    min_cluster_size: int = 5
    seed: int = 0
    max_points: int = 5000

    def check(self) -> ClusterOptions:
        _one_of("method", self.method, CLUSTER_METHODS)
        _between("k", self.k, 1, 1000)
        _between("min_cluster_size", self.min_cluster_size, 2, 10_000)
        _between("seed", self.seed, 0, 2**31 - 1)
        _between("max_points", self.max_points, 2, MAX_POINTS)
        return self


@dataclass
class Points:
    """The items a map or clustering covers: ids sorted, their labels, metadata, unit vectors."""

    ids: list[str]
    labels: list[tuple[str, ...]]
    metadata: list[dict[str, Any]]
    vectors: np.ndarray  # [N, D] L2-normalised
    total: int  # items in the collection (N < total when subsampled)
    seq: int


@dataclass
class MapResult:
    collection: str
    method: str
    params: dict[str, Any]  # the effective ones (perplexity clamped to what N allows)
    points: Points
    coords: np.ndarray  # [N, 2]
    has_audio: list[bool]
    seconds: float
    cached: bool = False


@dataclass
class Cluster:
    id: int  # -1: HDBSCAN's noise
    size: int
    label: str | None  # the most common label among its labelled members
    purity: float | None  # that label's share of its labelled members


@dataclass
class ClusterResult:
    collection: str
    method: str
    params: dict[str, Any]
    points: Points
    assignments: np.ndarray  # [N] cluster id per point
    clusters: list[Cluster]
    purity: float | None  # labelled points in their cluster's majority label / labelled points
    seconds: float
    cached: bool = False


@dataclass
class _Cache:
    entries: OrderedDict[tuple[Any, ...], Any] = field(default_factory=OrderedDict)

    def get(self, key: tuple[Any, ...]) -> Any:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        return None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        self.entries[key] = value
        while len(self.entries) > _CACHE_ENTRIES:
            self.entries.popitem(last=False)


class Maps:
    """Computes maps and clusters once per (collection version, options); counts cache lookups in
    ``sonovec_map_cache_requests{kind, result}``."""

    def __init__(self, lookups: Counter | None = None) -> None:
        # without the runtime's metrics: counted on a counter of no registry
        self.lookups = lookups or Counter("sonovec_map_cache_requests", "Map cache lookups.",
                                          ["kind", "result"], registry=None)
        self._cache = _Cache()
        self._busy = {"map": asyncio.Semaphore(1), "clusters": asyncio.Semaphore(1)}

    async def map(self, state: CollectionState, options: MapOptions, kept: set[str]) -> MapResult:
        options.check()
        result: MapResult = await self._cached("map", state, options, lambda p: compute_map(p, options))
        result.has_audio = [i in kept for i in result.points.ids]  # kept audio is not part of the key
        return result

    async def clusters(self, state: CollectionState, options: ClusterOptions) -> ClusterResult:
        options.check()
        result: ClusterResult = await self._cached(
            "clusters", state, options, lambda p: compute_clusters(p, options)
        )
        return result

    async def _cached(
        self, kind: str, state: CollectionState, options: Any, compute: Callable[[Points], Any]
    ) -> Any:
        key = (kind, state.info.uid, state.seq, options)
        hit = self._cache.get(key)
        self.lookups.labels(kind, "hit" if hit is not None else "miss").inc()
        if hit is not None:
            return _as_cached(hit)
        async with self._busy[kind]:
            hit = self._cache.get(key)  # computed meanwhile by a request with the same key
            if hit is not None:
                return _as_cached(hit)
            points = await state.lock.run_read(lambda: gather(state, options.max_points, options.seed))
            if not points.ids:
                raise SonovecError(ErrorKind.INVALID, f"collection {state.name!r} is empty: nothing to map",
                                   field="collection", allowed="a collection with at least one item")
            result = await asyncio.to_thread(compute, points)
            result.collection = state.name
            self._cache.put((kind, state.info.uid, points.seq, options), result)
            return result


def _as_cached(result: Any) -> Any:
    return dataclasses.replace(result, cached=True)


def gather(state: CollectionState, max_points: int, seed: int) -> Points:
    """The collection's items sorted by id; a seeded subsample of ``max_points`` beyond (read lock)."""
    ids = sorted(state.items)
    total = len(ids)
    if total > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
        ids = [ids[i] for i in chosen.tolist()]
    records = [state.items[i] for i in ids]
    dim = state.info.space.dim
    vectors = np.stack([r.vector for r in records]) if records else np.empty((0, dim), np.float32)
    return Points(ids, [r.labels for r in records], [dict(r.metadata) for r in records],
                  l2_normalize(vectors.astype(np.float32)), total, state.seq)


def _pca(vectors: np.ndarray, dims: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    dims = min(dims, vectors.shape[0], vectors.shape[1])
    if dims < 1 or vectors.shape[0] < 2:
        return np.zeros((vectors.shape[0], max(dims, 1)), np.float32)
    return np.asarray(PCA(n_components=dims, random_state=seed, svd_solver="full").fit_transform(vectors))


def compute_map(points: Points, options: MapOptions) -> MapResult:
    started = time.perf_counter()
    n = len(points.ids)
    if options.method != "pca" and n < MIN_NONLINEAR:
        raise invalid(f"{n} items: too few for {options.method}", field="method",
                      allowed=f"pca, or at least {MIN_NONLINEAR} items")
    params: dict[str, Any] = {"seed": options.seed, "max_points": options.max_points}
    if options.method == "pca":
        coords = _pca(points.vectors, 2, options.seed)
        if coords.shape[1] < 2:
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    else:
        reduced = _pca(points.vectors, PCA_DIMS, options.seed)
        params["pca_dims"] = reduced.shape[1]
        if options.method == "tsne":
            perplexity = min(options.perplexity, (n - 1) / 3)
            params["perplexity"] = perplexity
            coords = _tsne(reduced, perplexity, options.seed)
        else:
            neighbors = min(options.n_neighbors, n - 1)
            params["n_neighbors"] = neighbors
            coords = _umap(reduced, neighbors, options.seed)
    seconds = time.perf_counter() - started
    log.info("map of %d items (%s) in %.2f s", n, options.method, seconds)
    return MapResult("", options.method, params, points, np.asarray(coords, np.float64), [], seconds)


def _tsne(reduced: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    from openTSNE import TSNE

    n = len(reduced)

    def progress(iteration: int, error: float, _embedding: Any) -> None:
        log.info("map: t-SNE of %d items, iteration %d, KL divergence %.3f", n, iteration, error)

    tsne = TSNE(n_components=2, perplexity=perplexity, random_state=seed, initialization="pca", n_jobs=1,
                callbacks=progress if n >= _PROGRESS_FROM else None, callbacks_every_iters=50)
    return np.asarray(tsne.fit(reduced))


def _umap(reduced: np.ndarray, neighbors: int, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError:
        raise SonovecError(ErrorKind.INVALID, "UMAP needs umap-learn, not installed on this server",
                           field="method", allowed="tsne, pca (or install sonovec-server[umap])") from None
    model = umap.UMAP(n_neighbors=neighbors, random_state=seed, n_jobs=1)
    return np.asarray(model.fit_transform(reduced))


def compute_clusters(points: Points, options: ClusterOptions) -> ClusterResult:
    started = time.perf_counter()
    n = len(points.ids)
    params: dict[str, Any] = {"seed": options.seed, "max_points": options.max_points}
    if options.method == "kmeans":
        from sklearn.cluster import KMeans

        k = min(options.k, n)
        params["k"] = k
        assignments = KMeans(n_clusters=k, n_init=10, random_state=options.seed).fit_predict(points.vectors)
    else:
        from sklearn.cluster import HDBSCAN

        if n < 2:
            raise invalid(f"{n} item: too few for hdbscan", field="method",
                          allowed="kmeans, or at least 2 items")
        size = min(options.min_cluster_size, n)
        params["min_cluster_size"] = size
        assignments = HDBSCAN(min_cluster_size=size, copy=True).fit_predict(points.vectors)
    assignments = np.asarray(assignments, np.int64)
    clusters, purity = label_purity(assignments, points.labels)
    return ClusterResult("", options.method, params, points, assignments, clusters, purity,
                         time.perf_counter() - started)


def label_purity(
    assignments: np.ndarray, labels: list[tuple[str, ...]]
) -> tuple[list[Cluster], float | None]:
    """Per cluster: its majority label (an item's first label) and that label's share of the
    cluster's labelled members; overall: the labelled points that carry their cluster's majority."""
    clusters = []
    agree = labelled = 0
    for cluster_id in sorted(set(assignments.tolist())):
        members = np.flatnonzero(assignments == cluster_id)
        tally = Tally(labels[i][0] for i in members.tolist() if labels[i])
        count = sum(tally.values())
        if count:
            label, top = tally.most_common(1)[0]
            clusters.append(Cluster(cluster_id, len(members), label, top / count))
            agree, labelled = agree + top, labelled + count
        else:
            clusters.append(Cluster(cluster_id, len(members), None, None))
    return clusters, (agree / labelled if labelled else None)
