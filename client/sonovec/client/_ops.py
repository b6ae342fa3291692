"""Each API method once: its REST request and its gRPC request, and how to read either reply.

A transport picks its side (``http()`` or ``grpc()``); the client's methods (``_client``) only build ops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import numpy as np

from sonovec.client import _rest as rest
from sonovec.client import _rpc as rpc
from sonovec.client._audio import AudioData, to_audio
from sonovec.client._types import (
    AddResult,
    Classification,
    Codes,
    Collection,
    DecodedAudio,
    Embedding,
    IndexSpec,
    Item,
    ModelsInfo,
    NewItem,
    ProbeInfo,
    SearchResult,
    SelfSimilarity,
    ServerInfo,
    Similarity,
    SpaceClaim,
)
from sonovec.v1 import collections_pb2 as cpb
from sonovec.v1 import sonovec_pb2 as spb

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)  # an Op[bool] is an Op[int]: ops only produce results
Json = dict[str, Any]


@dataclass(frozen=True)
class HttpSpec(Generic[T_co]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T_co]
    json: Json | None = None
    params: dict[str, Any] | None = None
    takes_timeout: bool = False  # the body has a ``timeout_s`` field


@dataclass(frozen=True)
class GrpcSpec(Generic[T_co]):
    rpc: str
    parse: Callable[[Any], T_co]
    request: Any = None  # unary
    stream: Callable[[], Iterator[Any]] | None = None  # client-streaming: a fresh iterator per attempt


@dataclass(frozen=True)
class Wire:
    """How the gRPC side sends large audio: EmbedStream above ``stream_bytes``, in ``chunk_bytes``."""

    stream_bytes: int = 4 << 20
    chunk_bytes: int = 1 << 20


class Op(Generic[T_co]):
    def http(self) -> HttpSpec[T_co]:
        raise NotImplementedError

    def grpc(self, wire: Wire) -> GrpcSpec[T_co]:
        raise NotImplementedError


def _json(parse: Callable[[Json], T]) -> Callable[[httpx.Response], T]:
    return lambda response: parse(response.json())


def _drop_none(body: Json) -> Json:
    return {k: v for k, v in body.items() if v is not None}


def _path(*parts: str) -> str:
    return "/v1/" + "/".join(quote(p, safe="") for p in parts)


# --- embeddings, codes, similarity -------------------------------------------------------------


@dataclass(frozen=True)
class Embed(Op[Embedding]):
    audio: AudioData
    model: str | None = None
    pooling: str = "mean"
    normalize: bool = True
    frames: bool = False

    def options(self) -> Json:
        return {
            "model": self.model or "",
            "pooling": self.pooling,
            "normalize": self.normalize,
            "frames": self.frames,
        }

    def http(self) -> HttpSpec[Embedding]:
        body = _drop_none({"audio": rest.audio(self.audio), **self.options(), "model": self.model})
        return HttpSpec("POST", "/v1/embed", _json(rest.embedding), body, takes_timeout=True)

    def grpc(self, wire: Wire) -> GrpcSpec[Embedding]:
        if len(self.audio.data) > wire.stream_bytes:
            return GrpcSpec(
                "EmbedStream",
                rpc.embedding,
                stream=lambda: rpc.embed_stream(self.audio, wire.chunk_bytes, **self.options()),
            )
        return GrpcSpec(
            "Embed", rpc.embedding, spb.EmbedRequest(audio=rpc.audio(self.audio), **self.options())
        )


@dataclass(frozen=True)
class Encode(Op[Codes]):
    audio: AudioData
    model: str | None = None
    bandwidth: float = 6.0

    def http(self) -> HttpSpec[Codes]:
        body = _drop_none({"audio": rest.audio(self.audio), "model": self.model, "bandwidth": self.bandwidth})
        return HttpSpec("POST", "/v1/encode", _json(rest.codes), body, takes_timeout=True)

    def grpc(self, wire: Wire) -> GrpcSpec[Codes]:
        request = spb.EncodeRequest(
            audio=rpc.audio(self.audio), model=self.model or "", bandwidth=self.bandwidth
        )
        return GrpcSpec("Encode", rpc.codes, request)


@dataclass(frozen=True)
class Decode(Op[DecodedAudio]):
    segments: Sequence[np.ndarray]
    scales: Sequence[float]
    model: str | None = None
    num_samples: int | None = None
    subtype: str = "PCM_16"

    def http(self) -> HttpSpec[DecodedAudio]:
        body = _drop_none(
            {
                "segments": rest.segments(list(self.segments), list(self.scales)),
                "model": self.model,
                "num_samples": self.num_samples,
                "subtype": self.subtype,
            }
        )
        return HttpSpec("POST", "/v1/decode", rest.decoded, body, takes_timeout=True)

    def grpc(self, wire: Wire) -> GrpcSpec[DecodedAudio]:
        request = spb.DecodeRequest(
            segments=rpc.segments(self.segments, self.scales),
            model=self.model or "",
            num_samples=self.num_samples,
            subtype=self.subtype,
        )
        return GrpcSpec("Decode", rpc.decoded, request)


@dataclass(frozen=True)
class SimilarityOp(Op[Similarity]):
    recordings: Sequence[AudioData]
    model: str | None = None
    pooling: str = "mean"

    def http(self) -> HttpSpec[Similarity]:
        body = _drop_none(
            {
                "recordings": [rest.audio(a) for a in self.recordings],
                "model": self.model,
                "pooling": self.pooling,
            }
        )
        return HttpSpec("POST", "/v1/similarity", _json(rest.similarity), body, takes_timeout=True)

    def grpc(self, wire: Wire) -> GrpcSpec[Similarity]:
        request = spb.SimilarityRequest(
            recordings=[rpc.audio(a) for a in self.recordings], model=self.model or "", pooling=self.pooling
        )
        return GrpcSpec("Similarity", rpc.similarity, request)


@dataclass(frozen=True)
class SelfSimilarityOp(Op[SelfSimilarity]):
    audio: AudioData
    segment_seconds: float = 1.0
    model: str | None = None

    def http(self) -> HttpSpec[SelfSimilarity]:
        body = _drop_none(
            {"audio": rest.audio(self.audio), "segment_seconds": self.segment_seconds, "model": self.model}
        )
        return HttpSpec("POST", "/v1/similarity/self", _json(rest.self_similarity), body, takes_timeout=True)

    def grpc(self, wire: Wire) -> GrpcSpec[SelfSimilarity]:
        request = spb.SelfSimilarityRequest(
            audio=rpc.audio(self.audio), segment_seconds=self.segment_seconds, model=self.model or ""
        )
        return GrpcSpec("SelfSimilarity", rpc.self_similarity, request)


class Models(Op[ModelsInfo]):
    def http(self) -> HttpSpec[ModelsInfo]:
        return HttpSpec("GET", "/v1/models", _json(rest.models))

    def grpc(self, wire: Wire) -> GrpcSpec[ModelsInfo]:
        return GrpcSpec("Models", rpc.models, spb.ModelsRequest())


class Info(Op[ServerInfo]):
    def http(self) -> HttpSpec[ServerInfo]:
        return HttpSpec("GET", "/v1/models", _json(rest.server_info))

    def grpc(self, wire: Wire) -> GrpcSpec[ServerInfo]:
        return GrpcSpec("Info", rpc.server_info, spb.InfoRequest())


# --- collections and classification ------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """Exactly one of a recording, a stored item's id, or a vector (with what it claims to be)."""

    audio: AudioData | None = None
    id: str | None = None
    vector: np.ndarray | None = None
    space: SpaceClaim | None = None

    def json(self) -> Json:
        return _drop_none(
            {
                "audio": None if self.audio is None else rest.audio(self.audio),
                "id": self.id,
                "vector": None
                if self.vector is None
                else np.asarray(self.vector, np.float32).ravel().tolist(),
                "space": rest.space_claim(self.space),
            }
        )

    def fields(self) -> Json:
        return {
            "audio": None if self.audio is None else rpc.audio(self.audio),
            "id": self.id,
            "vector": rpc.vector(self.vector),
            "space": rpc.space_claim(self.space),
        }


@dataclass(frozen=True)
class Classify(Op[Classification]):
    collection: str
    query: Query
    k: int = 10
    weighting: str = "distance"
    classes: Sequence[str] | None = None
    probe: str | None = None
    version: int | None = None
    top: int = 5

    def http(self) -> HttpSpec[Classification]:
        body = _drop_none(
            {
                "collection": self.collection,
                **self.query.json(),
                "k": self.k,
                "weighting": self.weighting,
                "classes": None if self.classes is None else list(self.classes),
                "probe": self.probe,
                "version": self.version,
                "top": self.top,
            }
        )
        return HttpSpec("POST", "/v1/classify", _json(rest.classification), body, takes_timeout=True)

    def grpc(self, wire: Wire) -> GrpcSpec[Classification]:
        request = cpb.ClassifyRequest(
            collection=self.collection,
            **self.query.fields(),
            k=self.k,
            weighting=self.weighting,
            classes=list(self.classes or ()),
            probe=self.probe,
            version=self.version,
            top=self.top,
        )
        return GrpcSpec("Classify", rpc.classification, request)


@dataclass(frozen=True)
class CreateCollection(Op[Collection]):
    name: str
    model: str | None = None
    pooling: str = "mean"
    normalize: bool = True
    index: IndexSpec = IndexSpec()
    description: str = ""

    def http(self) -> HttpSpec[Collection]:
        body = _drop_none(
            {
                "name": self.name,
                "model": self.model,
                "pooling": self.pooling,
                "normalize": self.normalize,
                "index": dataclasses.asdict(self.index),
                "description": self.description,
            }
        )
        return HttpSpec("POST", "/v1/collections", _json(rest.collection), body)

    def grpc(self, wire: Wire) -> GrpcSpec[Collection]:
        request = cpb.CreateCollectionRequest(
            name=self.name,
            model=self.model or "",
            pooling=self.pooling,
            normalize=self.normalize,
            index=rpc.index_spec_message(self.index),
            description=self.description,
        )
        return GrpcSpec("CreateCollection", rpc.collection, request)


@dataclass(frozen=True)
class GetCollection(Op[Collection]):
    name: str

    def http(self) -> HttpSpec[Collection]:
        return HttpSpec("GET", _path("collections", self.name), _json(rest.collection))

    def grpc(self, wire: Wire) -> GrpcSpec[Collection]:
        return GrpcSpec("GetCollection", rpc.collection, cpb.GetCollectionRequest(name=self.name))


class ListCollections(Op[list[Collection]]):
    def http(self) -> HttpSpec[list[Collection]]:
        return HttpSpec(
            "GET", "/v1/collections", _json(lambda d: [rest.collection(c) for c in d["collections"]])
        )

    def grpc(self, wire: Wire) -> GrpcSpec[list[Collection]]:
        return GrpcSpec(
            "ListCollections",
            lambda m: [rpc.collection(c) for c in m.collections],
            cpb.ListCollectionsRequest(),
        )


@dataclass(frozen=True)
class DropCollection(Op[bool]):
    name: str

    def http(self) -> HttpSpec[bool]:
        return HttpSpec("DELETE", _path("collections", self.name), _json(lambda d: bool(d["dropped"])))

    def grpc(self, wire: Wire) -> GrpcSpec[bool]:
        return GrpcSpec(
            "DropCollection", lambda m: bool(m.dropped), cpb.DropCollectionRequest(name=self.name)
        )


@dataclass(frozen=True)
class AddItems(Op[AddResult]):
    collection: str
    items: Sequence[NewItem]
    space: SpaceClaim | None = None

    def _audio(self, i: int, item: NewItem) -> AudioData | None:
        return None if item.audio is None else to_audio(item.audio, item.sample_rate, f"items[{i}].audio")

    def http(self) -> HttpSpec[AddResult]:
        items = []
        for i, item in enumerate(self.items):
            audio = self._audio(i, item)
            items.append(
                _drop_none(
                    {
                        "id": item.id,
                        "labels": list(item.labels),
                        "metadata": item.metadata or {},
                        "audio": None if audio is None else rest.audio(audio),
                        "vector": None
                        if item.vector is None
                        else np.asarray(item.vector, np.float32).ravel().tolist(),
                    }
                )
            )
        body = _drop_none({"items": items, "space": rest.space_claim(self.space)})
        return HttpSpec(
            "POST",
            _path("collections", self.collection, "items"),
            _json(rest.add_result),
            body,
            takes_timeout=True,
        )

    def grpc(self, wire: Wire) -> GrpcSpec[AddResult]:
        items = []
        for i, item in enumerate(self.items):
            audio = self._audio(i, item)
            items.append(
                cpb.ItemIn(
                    id=item.id,
                    labels=list(item.labels),
                    metadata=rpc.struct(item.metadata or {}),
                    audio=None if audio is None else rpc.audio(audio),
                    vector=rpc.vector(item.vector),
                )
            )
        request = cpb.AddItemsRequest(
            collection=self.collection, items=items, space=rpc.space_claim(self.space)
        )
        return GrpcSpec("AddItems", rpc.add_result, request)


@dataclass(frozen=True)
class GetItem(Op[Item]):
    collection: str
    id: str

    def http(self) -> HttpSpec[Item]:
        return HttpSpec("GET", _path("collections", self.collection, "items", self.id), _json(rest.item))

    def grpc(self, wire: Wire) -> GrpcSpec[Item]:
        return GrpcSpec("GetItem", rpc.item, cpb.GetItemRequest(collection=self.collection, id=self.id))


@dataclass(frozen=True)
class DeleteItem(Op[bool]):
    """One id (REST deletes one item per call); True when it existed."""

    collection: str
    id: str

    def http(self) -> HttpSpec[bool]:
        return HttpSpec(
            "DELETE",
            _path("collections", self.collection, "items", self.id),
            _json(lambda d: bool(d["deleted"])),
        )

    def grpc(self, wire: Wire) -> GrpcSpec[bool]:
        request = cpb.DeleteItemsRequest(collection=self.collection, ids=[self.id])
        return GrpcSpec("DeleteItems", lambda m: m.deleted > 0, request)


@dataclass(frozen=True)
class DeleteItems(Op[int]):
    """Many ids in one gRPC call; how many existed."""

    collection: str
    ids: Sequence[str]

    def http(self) -> HttpSpec[int]:
        raise NotImplementedError("REST deletes one item per call: use DeleteItem")

    def grpc(self, wire: Wire) -> GrpcSpec[int]:
        request = cpb.DeleteItemsRequest(collection=self.collection, ids=list(self.ids))
        return GrpcSpec("DeleteItems", lambda m: int(m.deleted), request)


@dataclass(frozen=True)
class Search(Op[SearchResult]):
    collection: str
    query: Query
    k: int = 10
    labels: Sequence[str] | None = None
    ef_search: int | None = None
    nprobe: int | None = None

    def http(self) -> HttpSpec[SearchResult]:
        body = _drop_none(
            {
                **self.query.json(),
                "k": self.k,
                "labels": None if self.labels is None else list(self.labels),
                "ef_search": self.ef_search,
                "nprobe": self.nprobe,
            }
        )
        return HttpSpec(
            "POST",
            _path("collections", self.collection, "search"),
            _json(rest.search_result),
            body,
            takes_timeout=True,
        )

    def grpc(self, wire: Wire) -> GrpcSpec[SearchResult]:
        request = cpb.SearchRequest(
            collection=self.collection,
            **self.query.fields(),
            k=self.k,
            labels=list(self.labels or ()),
            ef_search=self.ef_search,
            nprobe=self.nprobe,
        )
        return GrpcSpec("Search", rpc.search_result, request)


@dataclass(frozen=True)
class TrainProbe(Op[ProbeInfo]):
    collection: str
    name: str
    classes: Sequence[str] | None = None
    c: float = 1.0
    folds: int = 5

    def http(self) -> HttpSpec[ProbeInfo]:
        body = _drop_none(
            {
                "name": self.name,
                "classes": None if self.classes is None else list(self.classes),
                "c": self.c,
                "folds": self.folds,
            }
        )
        return HttpSpec("POST", _path("collections", self.collection, "probes"), _json(rest.probe_info), body)

    def grpc(self, wire: Wire) -> GrpcSpec[ProbeInfo]:
        request = cpb.TrainProbeRequest(
            collection=self.collection,
            name=self.name,
            classes=list(self.classes or ()),
            c=self.c,
            folds=self.folds,
        )
        return GrpcSpec("TrainProbe", rpc.probe_info, request)


@dataclass(frozen=True)
class ListProbes(Op[list[ProbeInfo]]):
    collection: str

    def http(self) -> HttpSpec[list[ProbeInfo]]:
        return HttpSpec(
            "GET",
            _path("collections", self.collection, "probes"),
            _json(lambda d: [rest.probe_info(p) for p in d["probes"]]),
        )

    def grpc(self, wire: Wire) -> GrpcSpec[list[ProbeInfo]]:
        return GrpcSpec(
            "ListProbes",
            lambda m: [rpc.probe_info(p) for p in m.probes],
            cpb.ListProbesRequest(collection=self.collection),
        )
