"""``Collections``: the core API for named vector collections, kNN classification and probes.

The runtime builds it (``runtime.collections``); REST and gRPC call these methods and only
translate. Arguments and results are plain Python and numpy (``spec.py``). Audio goes through the
``Embedder`` it is given (the core service: so through the cache and the batcher), with the
collection's own model, pooling and normalisation; the weights fingerprint of the result must be
the collection's.

Storage is a ``LocalStore`` (write-ahead log + snapshots under ``data_dir``) or, with
``--redis-url``, a ``RedisStore`` (Redis is the source of truth, every replica follows it).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sonovec.server import pooling as pooling_ops
from sonovec.server.collections import classify as knn
from sonovec.server.collections.blobs import BlobStore, Codec, KeptAudio, LocalBlobStore
from sonovec.server.collections.classify import Probe
from sonovec.server.collections.local import LocalStore
from sonovec.server.collections.maps import ClusterOptions, ClusterResult, MapOptions, MapResult, Maps
from sonovec.server.collections.ondisk import DiskCollection, DiskCollections
from sonovec.server.collections.options import ClassifyOptions, CreateOptions, ProbeOptions, SearchOptions
from sonovec.server.collections.spec import (
    Classification,
    CollectionInfo,
    EmbeddingSpace,
    Item,
    NewItem,
    ProbeInfo,
    Query,
    SearchResult,
    SpaceClaim,
    check_item_id,
    check_labels,
    check_lookup_id,
    check_metadata,
    check_name,
    check_vector,
)
from sonovec.server.collections.state import CollectionState, Op
from sonovec.server.core import AudioSource, EmbedOptions, EmbedResult, ModelInfo
from sonovec.server.errors import ErrorKind, SonovecError, invalid, not_found
from sonovec.server.metrics import Metrics
from sonovec.server.settings import Settings

MAX_ITEMS_PER_WRITE = 1024
# The defaults of each request's options (immutable: shared safely as default arguments).
_CREATE, _SEARCH, _CLASSIFY, _PROBE = CreateOptions(), SearchOptions(), ClassifyOptions(), ProbeOptions()


class Store(Protocol):
    kind: str
    states: dict[str, CollectionState]

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def create(self, info: CollectionInfo) -> CollectionState: ...
    async def drop(self, state: CollectionState) -> None: ...
    async def write(self, state: CollectionState, ops: list[Op]) -> list[bool]: ...
    async def save_probe(self, collection: str, probe: dict[str, Any]) -> int: ...
    async def load_probes(self, collection: str) -> list[dict[str, Any]]: ...
    def check_available(self) -> None:
        """Raise UNAVAILABLE when the store cannot serve reads (Redis: never loaded yet)."""


class Embedder(Protocol):
    """What collections need of the core: what a model is, and audio -> pooled vector."""

    def model(self, name: str | None) -> ModelInfo: ...
    async def embed(self, source: AudioSource, options: EmbedOptions) -> EmbedResult: ...


def store_for(settings: Settings) -> Store:
    if settings.redis_url:
        from sonovec.server.collections.redis_store import RedisStore

        return RedisStore(settings.redis_url, settings.redis_prefix)
    return LocalStore(settings.data_dir / "collections", snapshot_interval_s=settings.snapshot_interval_s)


def blobs_for(settings: Settings) -> BlobStore:
    """Where collections keep recordings (``CreateOptions.keep_audio``): Redis with ``--redis-url``
    (every replica plays every item), else ``data_dir/audio``."""
    if settings.redis_url:
        from sonovec.server.collections.redis_blobs import RedisBlobStore

        return RedisBlobStore(settings.redis_url, settings.redis_prefix)
    return LocalBlobStore(settings.data_dir / "audio")


async def _all_or_none(calls: list[Coroutine[Any, Any, np.ndarray]]) -> list[np.ndarray]:
    """Every result, or the first error with the other calls cancelled (no embedding left
    running for a write that has already failed)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Collections:
    def __init__(
        self, embedder: Embedder, store: Store, *, max_recordings: int, indexes_dir: Path | None = None,
        blobs: BlobStore | None = None, codec: Codec | None = None, metrics: Metrics | None = None,
    ) -> None:
        self._embedder = embedder
        self._audio = KeptAudio(blobs, codec)
        self._maps = Maps(None if metrics is None else metrics.map_cache)
        self.store = store
        self._max_recordings = max_recordings
        # read-only collections built by ``sonovec index build`` (ondisk.py); none without a folder
        self.built = DiskCollections(indexes_dir)
        self._opened = False
        self._open_lock: asyncio.Lock | None = None
        self._training = asyncio.Semaphore(1)
        self._probes: dict[tuple[str, str, int], Probe] = {}

    # ---- life cycle ----

    async def open(self) -> None:
        """Load (local: snapshots + logs; Redis: start following). Idempotent; every method
        calls it, the server calls it before it reports ready."""
        if self._opened:
            return
        self._open_lock = self._open_lock or asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.store.open()
                await asyncio.to_thread(self.built.open, list(self.store.states))
                self._opened = True

    async def close(self) -> None:
        """Local: a final snapshot; both: stop the background task."""
        if self._opened:
            await self.store.close()
            self._opened = False

    async def _ready(self) -> None:
        await self.open()
        self.store.check_available()

    async def _state(self, name: str) -> CollectionState:
        """The collection; a built one (``DiskCollection``) answers the same read methods."""
        await self._ready()
        state: Any = self.store.states.get(name)
        if state is None:
            state = self.built.states.get(name)
        if state is None:
            raise not_found(f"collection {name!r} does not exist", field="collection")
        return state

    async def _writable(self, name: str) -> CollectionState:
        state = await self._state(name)
        if isinstance(state, DiskCollection):
            raise SonovecError(ErrorKind.CONFLICT, f"collection {name!r} is read-only (built by "
                               "sonovec index build); rebuild it to change it", field="collection")
        return state

    # ---- collections ----

    async def create(self, name: str, options: CreateOptions = _CREATE) -> CollectionInfo:
        """A new collection bound to its model's current weights and its pooling (CONFLICT if the
        name is taken)."""
        await self.open()
        check_name(name)
        if name in self.built.states:
            raise SonovecError(ErrorKind.CONFLICT, f"collection {name!r} exists", field="name")
        options.check()
        model = self._embedder.model(options.model)
        self._audio.check_create(options, model.bandwidths)
        space = EmbeddingSpace(
            model=model.name, weights_fingerprint=model.weights_fingerprint, pooling=options.pooling,
            normalize=options.normalize, dim=model.latent_dim * (2 if options.pooling == "mean_std" else 1),
        )
        info = CollectionInfo(name=name, space=space, index=options.index, description=options.description)
        state = await self.store.create(info)
        await self._audio.start(info, options)
        return dataclasses.replace(state.info, count=len(state))

    async def info(self, name: str) -> CollectionInfo:
        state = await self._state(name)
        return dataclasses.replace(state.info, count=len(state))

    async def drop(self, name: str) -> None:
        state = await self._writable(name)
        await self.store.drop(state)
        await self._audio.drop(state.info)

    # ---- items ----

    async def upsert(
        self,
        name: str,
        items: Sequence[NewItem],
        *,
        space: SpaceClaim | None = None,
        timeout_s: float | None = None,
    ) -> list[str]:
        """Add or replace items (by id). Audio is embedded first; nothing is written unless every
        item is valid. Returns the ids once the write is durable."""
        state = await self._writable(name)
        if not 1 <= len(items) <= MAX_ITEMS_PER_WRITE:
            raise invalid(f"{len(items)} items", field="items", allowed=f"1 to {MAX_ITEMS_PER_WRITE} items")
        audio_count = sum(item.audio is not None for item in items)
        if audio_count > self._max_recordings:
            raise invalid(f"{audio_count} recordings", field="items",
                          allowed=f"at most {self._max_recordings} recordings per request")
        if space is not None:
            space.check(state.info.space)
        fields = [  # checked before any audio is embedded
            (check_item_id(item.id, f"items[{i}].id"), check_labels(item.labels, f"items[{i}].labels"),
             check_metadata(item.metadata, f"items[{i}].metadata"))
            for i, item in enumerate(items)
        ]
        policy = await self._audio.policy(state.info)
        self._audio.check_sizes(policy, items)
        vectors = await _all_or_none(
            [self._item_vector(state, item, f"items[{i}]", timeout_s) for i, item in enumerate(items)]
        )
        kept = await self._audio.bodies(state.info, policy, items, timeout_s)
        ops = [Op("upsert", item_id, vector, labels, metadata)
               for (item_id, labels, metadata), vector in zip(fields, vectors, strict=True)]
        await self._audio.save(state.info, [op.id for op in ops], kept)  # before the ack: kept once durable
        await self.store.write(state, ops)
        return [op.id for op in ops]

    async def get(self, name: str, item_id: str) -> Item:
        state = await self._state(name)
        item = state.item(item_id)
        if item is None:
            raise not_found(f"no item {item_id!r} in collection {name!r}", field="id")
        return item

    async def delete(self, name: str, item_ids: Sequence[str]) -> int:
        """Delete items by id; returns how many existed."""
        state = await self._writable(name)
        if not 1 <= len(item_ids) <= MAX_ITEMS_PER_WRITE:
            raise invalid(f"{len(item_ids)} ids", field="ids", allowed=f"1 to {MAX_ITEMS_PER_WRITE} ids")
        changed = await self.store.write(state, [Op("delete", check_lookup_id(i)) for i in item_ids])
        await self._audio.forget(state.info, item_ids)
        return sum(changed)

    # ---- kept audio, maps and clusters (the explorer) ----

    async def audio(self, name: str, item_id: str) -> bytes:
        """The item's kept recording as WAV (NOT_FOUND, saying why, when nothing is kept)."""
        state = await self._state(name)
        if item_id not in state.items:
            raise not_found(f"no item {item_id!r} in collection {name!r}", field="id")
        return await self._audio.wav(state.info, item_id)

    async def audio_policy(self, name: str) -> dict[str, Any]:
        """What the collection keeps of each recording (``CreateOptions.keep_audio``)."""
        return await self._audio.policy((await self._state(name)).info)

    async def map(self, name: str, options: MapOptions) -> MapResult:
        """A 2-D map of the items (PCA, then t-SNE or UMAP), cached per collection version."""
        state = await self._state(name)
        return await self._maps.map(state, options, await self._audio.kept(state.info))

    async def clusters(self, name: str, options: ClusterOptions) -> ClusterResult:
        """Clusters of the items' embeddings (k-means or HDBSCAN) with per-cluster label purity."""
        return await self._maps.clusters(await self._state(name), options)

    # ---- search ----

    async def search(
        self, name: str, query: Query, options: SearchOptions = _SEARCH, *, timeout_s: float | None = None
    ) -> SearchResult:
        """The ``k`` most similar items (cosine), best first. By id, the item itself is left out."""
        options.check()
        state = await self._state(name)
        vector, exclude = await self._query_vector(state, query, timeout_s)
        unit = pooling_ops.l2_normalize(vector)
        hits, exact = await state.lock.run_read(
            lambda: state.search(unit, options.k, labels=options.labels, exclude=exclude,
                                 ef_search=options.ef_search, nprobe=options.nprobe)
        )
        return SearchResult(state.name, state.info.space, hits, exact)

    # ---- classification ----

    async def classify(
        self, name: str, query: Query, options: ClassifyOptions = _CLASSIFY, *, timeout_s: float | None = None
    ) -> Classification:
        """Top labels: by a vote of the ``k`` nearest labelled neighbours, or, with ``probe``, the
        class probabilities of that trained probe."""
        options.check()
        state = await self._state(name)
        if options.probe is not None:
            model = await self._probe(state, options.probe, options.version)
            vector, _ = await self._query_vector(state, query, timeout_s)
            return Classification(name, "probe", model.predict(vector)[:options.top], [], options.probe,
                                  model.info.version)
        labelled_only = options.classes if options.classes is not None else tuple(state.postings)
        result = await self.search(name, query, SearchOptions(k=options.k, labels=labelled_only),
                                   timeout_s=timeout_s)
        labelled = [hit for hit in result.hits if hit.labels]
        votes = knn.knn_vote(labelled, options.weighting, options.classes)
        return Classification(name, "knn", votes[:options.top], labelled)

    async def train_probe(self, name: str, probe: str, options: ProbeOptions = _PROBE) -> ProbeInfo:
        """Train a logistic-regression probe on the labels of the collection's items (those with
        exactly one of ``classes``); stores it as the next version of ``probe``."""
        check_name(probe, "probe")
        options.check()
        state = await self._writable(name)
        vectors, targets = await state.lock.run_read(lambda: state.labelled(options.classes))
        async with self._training:
            trained = await asyncio.to_thread(
                knn.train_probe, vectors, targets, collection=name, name=probe,
                weights_fingerprint=state.info.space.weights_fingerprint, c=options.c, folds=options.folds,
            )
        version = await self.store.save_probe(name, trained.to_dict())
        return dataclasses.replace(trained.info, version=version)

    async def probes(self, name: str) -> list[ProbeInfo]:
        """Every stored probe version of the collection."""
        if isinstance(await self._state(name), DiskCollection):
            return []
        bodies = await self.store.load_probes(name)
        infos = [Probe.from_dict(body).info for body in bodies]
        return sorted(infos, key=lambda p: (p.name, p.version))

    async def _probe(self, state: CollectionState, probe: str, version: int | None) -> Probe:
        stored = [] if isinstance(state, DiskCollection) else await self.store.load_probes(state.name)
        bodies = [b for b in stored if b["name"] == probe]
        if version is not None:
            bodies = [b for b in bodies if b["version"] == version]
        if not bodies:
            which = f"version {version} of probe" if version is not None else "probe"
            raise not_found(f"no {which} {probe!r} on collection {state.name!r}", field="probe")
        body = max(bodies, key=lambda b: b["version"])
        key = (state.info.uid, probe, int(body["version"]))
        if key not in self._probes:
            self._probes[key] = Probe.from_dict(body)
        return self._probes[key]

    # ---- vectors from items and queries ----

    async def _item_vector(
        self, state: CollectionState, item: NewItem, where: str, timeout_s: float | None
    ) -> np.ndarray:
        space = state.info.space
        if (item.vector is None) == (item.audio is None):
            raise invalid("give a vector or audio", field=where, allowed="exactly one of vector, audio")
        if item.vector is not None:
            return check_vector(item.vector, space.dim, f"{where}.vector")
        return await self._embed(space, item.audio, f"{where}.audio", timeout_s)

    async def _embed(
        self, space: EmbeddingSpace, source: AudioSource, where: str, timeout_s: float | None
    ) -> np.ndarray:
        try:
            self._embedder.model(space.model)
        except SonovecError as exc:
            raise SonovecError(ErrorKind.CONFLICT, f"the collection's model {space.model} is not loaded",
                               field="model", allowed=exc.allowed) from None
        options = EmbedOptions(model=space.model, pooling=space.pooling, normalize=space.normalize,
                               timeout_s=timeout_s)
        try:
            result = await self._embedder.embed(source, options)
        except SonovecError as exc:
            exc.field = f"{where}{'.' + exc.field if exc.field and exc.field != 'audio' else ''}"
            raise
        produced = dataclasses.replace(space, weights_fingerprint=result.model.weights_fingerprint)
        if produced != space:
            raise space.conflict(produced, "audio embedded by this server")
        return result.vector

    async def _query_vector(
        self, state: CollectionState, query: Query, timeout_s: float | None
    ) -> tuple[np.ndarray, str | None]:
        """The query vector (as stored or embedded: normalised only if the space is), and the id
        to leave out of the results."""
        query.check()
        space = state.info.space
        if query.item_id is not None:
            record = state.items.get(query.item_id)
            if record is None:
                raise not_found(f"no item {query.item_id!r} in collection {state.name!r}", field="id")
            return record.vector, query.item_id
        if query.vector is not None:
            if query.space is not None:
                query.space.check(space)
            return check_vector(query.vector, space.dim), None
        return await self._embed(space, query.audio, "audio", timeout_s), None

    # last in the class: its name would shadow ``list`` in the annotations after it
    async def list(self) -> list[CollectionInfo]:
        """Every collection, by name."""
        await self._ready()
        every: dict[str, Any] = {**self.built.states, **self.store.states}
        return [dataclasses.replace(s.info, count=len(s)) for _, s in sorted(every.items())]
