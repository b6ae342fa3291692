"""REST bodies of collections, search, classification and probes (mirroring the core types in
``sonovec.server.collections.spec``). Form fields (multipart, for curl) may give lists as
comma-separated text and ``metadata`` as JSON text."""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from sonovec.server.collections import spec as core
from sonovec.server.collections.options import (
    KEEP_AUDIO,
    ClassifyOptions,
    CreateOptions,
    ProbeOptions,
    SearchOptions,
)
from sonovec.server.http.schemas import AudioIn, Strict
from sonovec.server.pooling import POOLINGS

_Labels = list[str] | None


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class IndexIn(Strict):
    """``flat`` (exact) by default; ``hnsw`` or ``ivf`` for large collections."""

    type: Literal["flat", "hnsw", "ivf"] = core.IndexSpec.kind  # wire names: IndexSpec.WIRE_NAMES
    m: int = Field(core.IndexSpec.hnsw_m, description="HNSW: links per node.")
    ef_construction: int = Field(
        core.IndexSpec.ef_construction, description="HNSW: candidate list size while building."
    )
    ef_search: int = Field(core.IndexSpec.ef_search, description="HNSW: default candidates of a search.")
    nlist: int = Field(
        core.IndexSpec.nlist, description="IVF: lists; trains once the collection holds 39 x nlist items."
    )
    nprobe: int = Field(core.IndexSpec.nprobe, description="IVF: default lists visited by a search.")

    def spec(self) -> core.IndexSpec:
        return core.IndexSpec.from_wire(self.model_dump())

    @classmethod
    def of(cls, index: core.IndexSpec) -> IndexIn:
        return cls(**index.to_wire())


class CreateCollectionRequest(Strict):
    name: str = Field(description="1-64 characters: letters, digits, '_', '.', '-'.")
    model: str | None = Field(None, description="Model of its embeddings; the server's default when omitted.")
    pooling: str = Field(CreateOptions.pooling, json_schema_extra={"enum": list(POOLINGS)})
    normalize: bool = Field(
        CreateOptions.normalize, description="Store L2-normalised embeddings (search is cosine anyway)."
    )
    index: IndexIn = Field(default_factory=IndexIn)
    description: str = Field(
        CreateOptions.description, description=f"At most {core.MAX_DESCRIPTION_CHARS} characters."
    )
    keep_audio: str = Field(
        CreateOptions.keep_audio, json_schema_extra={"enum": list(KEEP_AUDIO)},
        description="Keep each recording to play it: its original bytes, or its EnCodec codes.",
    )
    keep_audio_max_bytes: int = Field(
        CreateOptions.keep_audio_max_bytes, description="original: the largest recording kept (bytes)."
    )
    keep_audio_bandwidth: float = Field(CreateOptions.keep_audio_bandwidth, description="codes: kbps.")

    def options(self) -> CreateOptions:
        return CreateOptions(self.model, self.pooling, self.normalize, self.index.spec(), self.description,
                             self.keep_audio, self.keep_audio_max_bytes, self.keep_audio_bandwidth)


class SpaceIO(BaseModel):
    """An embedding space: the model, its weights, and the pooling."""

    model: str
    weights_fingerprint: str
    pooling: str
    normalize: bool
    dim: int

    @classmethod
    def of(cls, space: core.EmbeddingSpace) -> SpaceIO:
        return cls(**space.__dict__)


class SpaceClaimIn(Strict):
    """What the caller says about the vectors it sends (e.g. copied from an embed response's
    ``model``); any part given must match the collection, else 409."""

    model: str | None = None
    weights_fingerprint: str | None = None
    pooling: Literal["mean", "mean_std"] | None = None
    normalize: bool | None = None

    def claim(self) -> core.SpaceClaim:
        return core.SpaceClaim(self.model, self.weights_fingerprint, self.pooling, self.normalize)


class CollectionOut(BaseModel):
    name: str
    space: SpaceIO
    index: IndexIn
    count: int
    description: str
    created_at: float

    @classmethod
    def of(cls, info: core.CollectionInfo) -> CollectionOut:
        return cls(name=info.name, space=SpaceIO.of(info.space), index=IndexIn.of(info.index),
                   count=info.count, description=info.description, created_at=info.created_at)


class CollectionsResponse(BaseModel):
    collections: list[CollectionOut]


class DroppedResponse(BaseModel):
    collection: str
    dropped: bool


# ---- items ----


class ItemIn(Strict):
    id: str = Field(description="The caller's id; adding an existing id replaces that item.")
    vector: list[float] | None = Field(None, description="A vector of the collection's space; or give audio.")
    audio: AudioIn | None = None
    labels: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form JSON object (<= 16 KiB).")

    def new_item(self, source: Any) -> core.NewItem:
        vector = None if self.vector is None else np.asarray(self.vector, np.float32)
        return core.NewItem(self.id, vector, source, tuple(self.labels), self.metadata)


class AddItemsRequest(Strict):
    items: list[ItemIn] = Field(min_length=1, description="Up to 1024 items; audio is embedded first.")
    space: SpaceClaimIn | None = Field(None, description="What the vectors are (checked, 409 if another).")
    timeout_s: float | None = Field(None, gt=0)


class ItemForm(Strict):
    """One item as multipart form fields: ``-F id=x -F labels=a,b -F metadata='{...}' -F audio=@f.wav``."""

    id: str
    audio: AudioIn
    labels: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0)

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        return _csv(value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value

    def request(self) -> AddItemsRequest:
        item = ItemIn(id=self.id, audio=self.audio, labels=self.labels, metadata=self.metadata)
        return AddItemsRequest(items=[item], timeout_s=self.timeout_s)


class AddItemsResponse(BaseModel):
    collection: str
    ids: list[str]
    count: int = Field(description="Items in the collection after this write.")


class ItemOut(BaseModel):
    id: str
    vector: list[float]
    labels: list[str]
    metadata: dict[str, Any]

    @classmethod
    def of(cls, item: core.Item) -> ItemOut:
        return cls(id=item.id, vector=item.vector.tolist(), labels=list(item.labels), metadata=item.metadata)


class DeletedItemResponse(BaseModel):
    collection: str
    id: str
    deleted: bool = Field(description="False when there was no such item.")


# ---- search and classification ----


class QueryIn(Strict):
    """Exactly one of ``audio``, ``id`` (a stored item, left out of the results) or ``vector``."""

    audio: AudioIn | None = None
    id: str | None = None
    vector: list[float] | None = None
    space: SpaceClaimIn | None = None
    timeout_s: float | None = Field(None, gt=0)

    def query(self, source: Any) -> core.Query:
        vector = None if self.vector is None else np.asarray(self.vector, np.float32)
        claim = None if self.space is None else self.space.claim()
        return core.Query(vector=vector, audio=source, item_id=self.id, space=claim)


class SearchRequest(QueryIn):
    k: int = Field(SearchOptions.k, description=f"Results wanted (1 to {core.MAX_K}).")
    labels: _Labels = Field(None, description="Only items carrying any of these labels.")
    ef_search: int | None = Field(None, description="HNSW: candidate list size, this search (1 to 4096).")
    nprobe: int | None = Field(None, description="IVF: lists visited by this search (1 to 65536).")

    def options(self) -> SearchOptions:
        labels = tuple(self.labels) if self.labels else None
        return SearchOptions(self.k, labels, self.ef_search, self.nprobe)

    @field_validator("labels", mode="before")
    @classmethod
    def _split_labels(cls, value: object) -> object:
        return _csv(value)


class HitOut(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity.")
    labels: list[str]
    metadata: dict[str, Any]

    @classmethod
    def of(cls, hit: core.Hit) -> HitOut:
        return cls(id=hit.id, score=hit.score, labels=list(hit.labels), metadata=hit.metadata)


class SearchResponse(BaseModel):
    collection: str
    space: SpaceIO
    exact: bool = Field(description="False when an approximate index (HNSW, trained IVF) answered.")
    hits: list[HitOut]

    @classmethod
    def of(cls, result: core.SearchResult) -> SearchResponse:
        return cls(collection=result.collection, space=SpaceIO.of(result.space), exact=result.exact,
                   hits=[HitOut.of(h) for h in result.hits])


class ClassifyRequest(QueryIn):
    collection: str
    k: int = Field(ClassifyOptions.k, description=f"kNN: neighbours that vote (1 to {core.MAX_K}).")
    weighting: str = Field(
        ClassifyOptions.weighting,
        description="kNN: 1 vote each (uniform), or 1/dist (distance).",
        json_schema_extra={"enum": list(core.WEIGHTINGS)},
    )
    classes: _Labels = Field(None, description="Only these labels count (default: every label).")
    probe: str | None = Field(None, description="Classify with this trained probe instead of kNN.")
    version: int | None = Field(None, description="Probe version (default: the latest).")
    top: int = Field(ClassifyOptions.top, description=f"Labels returned (1 to {core.MAX_K}).")

    def options(self) -> ClassifyOptions:
        classes = tuple(self.classes) if self.classes else None
        return ClassifyOptions(self.k, self.weighting, classes, self.top, self.probe, self.version)

    @field_validator("classes", mode="before")
    @classmethod
    def _split_classes(cls, value: object) -> object:
        return _csv(value)


class LabelScore(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    collection: str
    method: Literal["knn", "probe"]
    labels: list[LabelScore] = Field(description="Best first; scores are vote shares or probabilities.")
    neighbours: list[HitOut] = Field(default_factory=list)
    probe: str | None = None
    probe_version: int | None = None

    @classmethod
    def of(cls, c: core.Classification) -> ClassifyResponse:
        return cls(collection=c.collection, method=c.method,  # type: ignore[arg-type]
                   labels=[LabelScore(label=label, score=score) for label, score in c.labels],
                   neighbours=[HitOut.of(h) for h in c.neighbours], probe=c.probe,
                   probe_version=c.probe_version)


class TrainProbeRequest(Strict):
    name: str = Field(description="Probe name; training again stores the next version.")
    classes: list[str] | None = Field(None, description="Labels to learn (default: all); 1 per item used.")
    c: float = Field(ProbeOptions.c, description="Inverse regularisation strength (> 0) of the regression.")
    folds: int = Field(
        ProbeOptions.folds, description="Cross-validation folds, 2 to 20 (fewer when a class is small)."
    )

    def options(self) -> ProbeOptions:
        classes = tuple(self.classes) if self.classes else None
        return ProbeOptions(classes, self.c, self.folds)


class ProbeOut(BaseModel):
    collection: str
    name: str
    version: int
    classes: list[str]
    num_items: int
    folds: int
    cv_accuracy: float
    confusion_matrix: list[list[int]] = Field(description="Rows: true class; columns: predicted.")
    c: float
    weights_fingerprint: str
    trained_at: float

    @classmethod
    def of(cls, info: core.ProbeInfo) -> ProbeOut:
        return cls(**info.__dict__)


class ProbesResponse(BaseModel):
    probes: list[ProbeOut]
