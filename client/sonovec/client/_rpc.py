"""gRPC wire format: ``sonovec.v1`` messages in, typed results out, and status -> client error."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2

from sonovec.client import _errors as kinds
from sonovec.client._audio import AudioData, read_wav
from sonovec.client._errors import SonovecClientError
from sonovec.client._types import (
    AddResult,
    Classification,
    Codes,
    Collection,
    DecodedAudio,
    Embedding,
    Hit,
    IndexSpec,
    Item,
    LabelScore,
    Limits,
    ModelInfo,
    ModelsInfo,
    ProbeInfo,
    SearchResult,
    SelfSimilarity,
    ServerInfo,
    Similarity,
    Space,
    SpaceClaim,
)
from sonovec.v1 import collections_pb2 as cpb
from sonovec.v1 import common_pb2 as pb
from sonovec.v1 import sonovec_pb2 as spb

# gRPC status -> error kind, when the trailing metadata does not name one (a status made by the
# gRPC library itself: deadlines, message sizes, connection failures).
_CODE_KINDS = {
    grpc.StatusCode.INVALID_ARGUMENT: kinds.INVALID,
    grpc.StatusCode.NOT_FOUND: kinds.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: kinds.CONFLICT,
    grpc.StatusCode.FAILED_PRECONDITION: kinds.CONFLICT,
    grpc.StatusCode.UNAUTHENTICATED: kinds.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED: kinds.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: kinds.OVERLOADED,
    grpc.StatusCode.UNAVAILABLE: kinds.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: kinds.DEADLINE,
    grpc.StatusCode.CANCELLED: kinds.CANCELLED,
    grpc.StatusCode.UNIMPLEMENTED: kinds.UNIMPLEMENTED,
}


def error(exc: grpc.RpcError) -> SonovecClientError:
    """A failed call as a client error: kind, field and allowed from the trailing metadata."""
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    trailing = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
    kind = trailing.get("sonovec-error-kind")
    if kind is None:
        kind = _CODE_KINDS.get(code, kinds.INTERNAL)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "message larger than max" in details.lower():
            kind = kinds.TOO_LARGE  # gRPC's own message size limit, not an overloaded queue
    retry_after = trailing.get("retry-after")
    return SonovecClientError(
        str(kind),
        details,
        status=code.name,
        field=trailing.get("sonovec-error-field"),
        allowed=trailing.get("sonovec-error-allowed"),
        retry_after=float(retry_after) if retry_after is not None else None,
    )


def item_error(e: pb.Error) -> SonovecClientError:
    return SonovecClientError(
        e.kind,
        e.message,
        status=e.code,
        field=e.field if e.HasField("field") else None,
        allowed=e.allowed if e.HasField("allowed") else None,
        retry_after=e.retry_after_s if e.HasField("retry_after_s") else None,
    )


# --- requests ----------------------------------------------------------------------------------


def audio(a: AudioData) -> pb.Audio:
    return pb.Audio(data=a.data, encoding=a.encoding, sample_rate=a.sample_rate, channels=a.channels)


def embed_stream(a: AudioData, chunk_bytes: int, **options: Any) -> Iterator[spb.EmbedStreamRequest]:
    """EmbedStream's messages: the options first, then the audio in chunks."""
    start = spb.EmbedStreamStart(
        encoding=a.encoding, sample_rate=a.sample_rate, channels=a.channels, **options
    )
    yield spb.EmbedStreamRequest(start=start)
    view = memoryview(a.data)
    for offset in range(0, len(view), chunk_bytes):
        yield spb.EmbedStreamRequest(chunk=bytes(view[offset : offset + chunk_bytes]))


def segments(arrays: Sequence[np.ndarray], scales: Sequence[float]) -> list[pb.Segment]:
    out = []
    for array, scale in zip(arrays, scales, strict=True):
        a = np.asarray(array)
        if a.ndim != 2:
            raise SonovecClientError(
                kinds.INVALID,
                f"codes of shape {a.shape}",
                field="codes",
                allowed="one [K, F] array per segment",
            )
        out.append(
            pb.Segment(
                num_codebooks=a.shape[0],
                num_frames=a.shape[1],
                codes=a.astype(np.int32).ravel().tolist(),
                scale=float(scale),
            )
        )
    return out


def struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


# --- results -----------------------------------------------------------------------------------


def model_info(m: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=m.name,
        backend=m.backend,
        device=m.device,
        precision=m.precision,
        sample_rate=m.sample_rate,
        channels=m.channels,
        frame_rate=m.frame_rate,
        latent_dim=m.latent_dim,
        bandwidths=tuple(m.bandwidths),
        weights_fingerprint=m.weights_fingerprint,
        weights_source=m.weights_source,
        pretrained=m.pretrained,
        warning=m.warning if m.HasField("warning") else None,
    )


def limits(m: pb.Limits) -> Limits:
    return Limits(
        max_request_bytes=m.max_request_bytes,
        max_audio_seconds=m.max_audio_seconds,
        max_channels=m.max_channels,
        max_recordings=m.max_recordings,
        max_batch_seconds=m.max_batch_seconds,
        max_queue_seconds=m.max_queue_seconds,
        request_timeout_s=m.request_timeout_s,
        formats=tuple(m.formats),
    )


def models(m: spb.ModelsResponse) -> ModelsInfo:
    return ModelsInfo(
        models=[model_info(x) for x in m.models],
        default_model=m.default_model,
        limits=limits(m.limits),
        random_weights=m.random_weights,
    )


def server_info(m: spb.InfoResponse) -> ServerInfo:
    return ServerInfo(
        transport="grpc",
        models=list(m.models),
        default_model=m.default_model,
        limits=limits(m.limits),
        version=m.version,
        max_receive_message_bytes=m.grpc.max_receive_message_bytes,
        max_send_message_bytes=m.grpc.max_send_message_bytes,
        max_chunk_bytes=m.grpc.max_chunk_bytes,
        auth_required=m.auth_required,
        features=tuple(m.features),
    )


def matrix(m: pb.Matrix) -> np.ndarray:
    return np.asarray(m.values, dtype=np.float32).reshape(m.rows, m.cols)


def embedding(m: spb.EmbedResponse) -> Embedding:
    return Embedding(
        vector=np.asarray(m.embedding, dtype=np.float32),
        model=model_info(m.model),
        pooling=m.pooling,
        normalized=m.normalized,
        duration_s=m.duration_s,
        num_windows=m.num_windows,
        cached=m.cached,
        frames=matrix(m.frames) if m.HasField("frames") else None,
        frame_times_s=np.asarray(m.frame_times_s, dtype=np.float64) if m.HasField("frames") else None,
        warnings=list(m.warnings),
    )


def codes(m: spb.EncodeResponse) -> Codes:
    return Codes(
        segments=[
            np.asarray(s.codes, dtype=np.int64).reshape(s.num_codebooks, s.num_frames) for s in m.segments
        ],
        scales=[s.scale if s.HasField("scale") else 1.0 for s in m.segments],
        model=model_info(m.model),
        bandwidth=m.bandwidth,
        num_codebooks=m.num_codebooks,
        num_samples=m.num_samples,
        sample_rate=m.sample_rate,
        frame_rate=m.frame_rate,
        segment_stride=m.segment_stride,
        duration_s=m.duration_s,
    )


def decoded(m: spb.DecodeResponse) -> DecodedAudio:
    samples, rate = read_wav(m.wav)
    return DecodedAudio(
        audio=samples,
        sample_rate=rate,
        wav=m.wav,
        model_name=m.model.name,
        weights_fingerprint=m.model.weights_fingerprint,
        pretrained=m.model.pretrained,
        warning=m.model.warning if m.model.HasField("warning") else None,
    )


def similarity(m: spb.SimilarityResponse) -> Similarity:
    return Similarity(matrix=matrix(m.matrix), model=model_info(m.model))


def self_similarity(m: spb.SelfSimilarityResponse) -> SelfSimilarity:
    return SelfSimilarity(
        matrix=matrix(m.matrix),
        segment_seconds=m.segment_seconds,
        segment_starts_s=np.asarray(m.segment_starts_s, dtype=np.float64),
        model=model_info(m.model),
    )


# --- collections -------------------------------------------------------------------------------


def _dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def space_claim(claim: SpaceClaim | None) -> cpb.SpaceClaim | None:
    return None if claim is None else cpb.SpaceClaim(**dataclasses.asdict(claim))


def index_spec_message(index: IndexSpec) -> cpb.IndexSpec:
    return cpb.IndexSpec(**dataclasses.asdict(index))


def vector(values: np.ndarray | None) -> cpb.Vector | None:
    return None if values is None else cpb.Vector(values=np.asarray(values, np.float32).ravel().tolist())


def space(m: cpb.Space) -> Space:
    return Space(
        model=m.model,
        weights_fingerprint=m.weights_fingerprint,
        pooling=m.pooling,
        normalize=m.normalize,
        dim=m.dim,
    )


def index_spec(m: cpb.IndexSpec) -> IndexSpec:
    return IndexSpec(
        type=m.type,
        m=m.m,
        ef_construction=m.ef_construction,
        ef_search=m.ef_search,
        nlist=m.nlist,
        nprobe=m.nprobe,
    )


def collection(m: cpb.Collection) -> Collection:
    return Collection(
        name=m.name,
        space=space(m.space),
        index=index_spec(m.index),
        count=m.count,
        description=m.description,
        created_at=m.created_at,
    )


def item(m: cpb.Item) -> Item:
    return Item(
        id=m.id,
        vector=np.asarray(m.vector, dtype=np.float32),
        labels=list(m.labels),
        metadata=_dict(m.metadata),
    )


def add_result(m: cpb.AddItemsResponse) -> AddResult:
    return AddResult(collection=m.collection, ids=list(m.ids), count=m.count)


def hit(m: cpb.Hit) -> Hit:
    return Hit(id=m.id, score=m.score, labels=list(m.labels), metadata=_dict(m.metadata))


def search_result(m: cpb.SearchResponse) -> SearchResult:
    return SearchResult(
        collection=m.collection, space=space(m.space), exact=m.exact, hits=[hit(h) for h in m.hits]
    )


def classification(m: cpb.ClassifyResponse) -> Classification:
    return Classification(
        collection=m.collection,
        method=m.method,
        labels=[LabelScore(x.label, x.score) for x in m.labels],
        neighbours=[hit(h) for h in m.neighbours],
        probe=m.probe if m.HasField("probe") else None,
        probe_version=m.probe_version if m.HasField("probe_version") else None,
    )


def probe_info(m: cpb.Probe) -> ProbeInfo:
    n = len(m.classes)
    return ProbeInfo(
        collection=m.collection,
        name=m.name,
        version=m.version,
        classes=list(m.classes),
        num_items=m.num_items,
        folds=m.folds,
        cv_accuracy=m.cv_accuracy,
        confusion_matrix=np.asarray(m.confusion_matrix, dtype=np.int64).reshape(n, n),
        c=m.c,
        weights_fingerprint=m.weights_fingerprint,
        trained_at=m.trained_at,
    )
