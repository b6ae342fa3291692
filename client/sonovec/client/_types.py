"""Typed results. Arrays are numpy; every result names the model and weights that produced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """What produced a result. Compare ``weights_fingerprint`` before mixing vectors."""

    name: str
    backend: str
    device: str
    precision: str
    sample_rate: int
    channels: int
    frame_rate: int
    latent_dim: int
    bandwidths: tuple[float, ...]
    weights_fingerprint: str
    weights_source: str
    pretrained: bool
    warning: str | None = None


@dataclass(frozen=True)
class Limits:
    """The server's limits on input (the same over REST and gRPC)."""

    max_request_bytes: int
    max_audio_seconds: float
    max_channels: int
    max_recordings: int
    max_batch_seconds: float
    max_queue_seconds: float
    request_timeout_s: float
    formats: tuple[str, ...]


@dataclass(frozen=True)
class ModelsInfo:
    models: list[ModelInfo]
    default_model: str
    limits: Limits
    random_weights: bool

    def get(self, name: str | None = None) -> ModelInfo:
        """The model called ``name`` (the default model when None)."""
        wanted = name or self.default_model
        for model in self.models:
            if model.name == wanted:
                return model
        raise KeyError(wanted)


@dataclass(frozen=True)
class ServerInfo:
    """The server as this transport sees it. The gRPC fields are None over REST."""

    transport: str  # "http" or "grpc"
    models: list[str]
    default_model: str
    limits: Limits
    version: str | None = None
    max_receive_message_bytes: int | None = None
    max_send_message_bytes: int | None = None
    max_chunk_bytes: int | None = None
    auth_required: bool | None = None
    features: tuple[str, ...] = ()


@dataclass
class Embedding:
    vector: np.ndarray  # [D] ("mean") or [2D] ("mean_std") float32
    model: ModelInfo
    pooling: str
    normalized: bool
    duration_s: float
    num_windows: int
    cached: bool
    frames: np.ndarray | None = None  # [F, D] float32, when asked for
    frame_times_s: np.ndarray | None = None  # [F] float64
    warnings: list[str] = field(default_factory=list)  # caveats, e.g. a truncated file decoded in part


@dataclass
class Codes:
    """RVQ codes per segment ([K, F] int64 each) with each segment's scale: ``decode`` takes it back."""

    segments: list[np.ndarray]
    scales: list[float]
    model: ModelInfo
    bandwidth: float
    num_codebooks: int
    num_samples: int
    sample_rate: int
    frame_rate: int
    segment_stride: int
    duration_s: float


@dataclass
class DecodedAudio:
    audio: np.ndarray  # [C, T] float32 at ``sample_rate``
    sample_rate: int
    wav: bytes  # the WAV file the server sent
    model_name: str
    weights_fingerprint: str
    pretrained: bool
    warning: str | None = None


@dataclass
class Similarity:
    matrix: np.ndarray  # [N, N] float32 cosine similarities
    model: ModelInfo


@dataclass
class SelfSimilarity:
    matrix: np.ndarray  # [S, S] float32
    segment_seconds: float
    segment_starts_s: np.ndarray  # [S] float64
    model: ModelInfo


@dataclass(frozen=True)
class Space:
    """A collection's embedding space: vectors of two spaces never mix."""

    model: str
    weights_fingerprint: str
    pooling: str
    normalize: bool
    dim: int


@dataclass(frozen=True)
class SpaceClaim:
    """What the caller says about vectors it sends; any part given must match the collection."""

    model: str | None = None
    weights_fingerprint: str | None = None
    pooling: str | None = None
    normalize: bool | None = None

    @classmethod
    def of(cls, embedding: Embedding) -> SpaceClaim:
        """The space an ``embed`` result's vector lives in."""
        return cls(
            embedding.model.name, embedding.model.weights_fingerprint, embedding.pooling, embedding.normalized
        )


@dataclass(frozen=True)
class IndexSpec:
    """``flat`` (exact), ``hnsw`` (m, ef_construction, ef_search) or ``ivf`` (nlist, nprobe)."""

    type: str = "flat"
    m: int = 32
    ef_construction: int = 200
    ef_search: int = 64
    nlist: int = 256
    nprobe: int = 16


@dataclass
class Collection:
    name: str
    space: Space
    index: IndexSpec
    count: int
    description: str = ""
    created_at: float = 0.0


@dataclass
class Item:
    id: str
    vector: np.ndarray  # [dim] float32, as stored
    labels: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewItem:
    """An item to add (or replace, same id): ``audio`` (a path, bytes or array; embedded by the
    server with the collection's model) or a ``vector`` of the collection's space."""

    id: str
    audio: Any = None
    vector: np.ndarray | None = None
    labels: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    sample_rate: int | None = None  # for array audio


@dataclass
class AddResult:
    collection: str
    ids: list[str]
    count: int  # items in the collection after the write


@dataclass
class Hit:
    id: str
    score: float  # cosine similarity
    labels: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    collection: str
    space: Space
    exact: bool  # False when an approximate index answered
    hits: list[Hit]


@dataclass
class LabelScore:
    label: str
    score: float


@dataclass
class Classification:
    collection: str
    method: str  # "knn" or "probe"
    labels: list[LabelScore]  # best first
    neighbours: list[Hit] = field(default_factory=list)
    probe: str | None = None
    probe_version: int | None = None

    @property
    def top(self) -> str | None:
        return self.labels[0].label if self.labels else None


@dataclass
class ProbeInfo:
    collection: str
    name: str
    version: int
    classes: list[str]
    num_items: int
    folds: int
    cv_accuracy: float
    confusion_matrix: np.ndarray  # [classes, classes] int64: rows true, columns predicted
    c: float
    weights_fingerprint: str
    trained_at: float
