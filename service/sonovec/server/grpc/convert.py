"""Messages <-> core types. Field names, defaults and validation mirror ``http/schemas.py`` and
``http/deps.py``, so the same request means the same thing over both transports."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from sonovec.server import core
from sonovec.server.collections import spec
from sonovec.server.core import AudioSource, Service
from sonovec.server.errors import GRPC_CODE, SonovecError, invalid
from sonovec.server.settings import Settings
from sonovec.v1 import collections_pb2 as cpb
from sonovec.v1 import common_pb2 as pb
from sonovec.v1 import sonovec_pb2 as spb

SUBTYPES = ("PCM_16", "FLOAT")
Opt = TypeVar("Opt")

# --- requests ----------------------------------------------------------------------------------


def given(message: Message, *names: str) -> dict[str, Any]:
    """The optional fields ``names`` that the caller set (the rest take the core's defaults)."""
    return {name: getattr(message, name) for name in names if message.HasField(name)}


def options(message: Message, kind: type[Opt], **given: Any) -> Opt:
    """The core option type ``kind`` from the message fields of the same names: a field the
    caller left out (unset optional, empty string, empty list) takes the core's default. The
    core checks the values (``kind.check``), as for REST."""
    fields = message.DESCRIPTOR.fields_by_name
    values = dict(given)
    for option in dataclasses.fields(kind):  # type: ignore[arg-type]
        descriptor = fields.get(option.name)
        if option.name in values or descriptor is None:
            continue
        value = getattr(message, option.name)
        if descriptor.is_repeated:
            if value:
                values[option.name] = tuple(value)
        elif descriptor.has_presence:
            if message.HasField(option.name):
                values[option.name] = value
        elif value != descriptor.default_value:
            values[option.name] = value
    return kind(**values)


def audio_source(audio: pb.Audio, field: str = "audio") -> AudioSource:
    """As ``http.deps.audio_source``: encoded bytes, or raw PCM with its rate and channels."""
    return AudioSource.from_wire(
        audio.data,
        audio.encoding,
        audio.sample_rate if audio.HasField("sample_rate") else None,
        audio.channels if audio.HasField("channels") else None,
        field,
    )


def segments(request: spb.DecodeRequest) -> tuple[list[np.ndarray], list[float]]:
    """Each segment's codes as a [K, F] int64 array, and its scale (1.0 when absent)."""
    codes, scales = [], []
    for i, segment in enumerate(request.segments):
        k, f = segment.num_codebooks, segment.num_frames
        if len(segment.codes) != k * f:
            raise invalid(
                f"segment {i} has {len(segment.codes)} codes for shape [{k}, {f}]",
                field=f"segments[{i}].codes",
                allowed="num_codebooks * num_frames codes, row-major",
            )
        codes.append(np.asarray(segment.codes, dtype=np.int64).reshape(k, f))
        scales.append(segment.scale if segment.HasField("scale") else 1.0)
    return codes, scales


def subtype(name: str) -> str:
    name = name or "PCM_16"
    if name not in SUBTYPES:
        raise invalid(f"unknown WAV subtype {name!r}", field="subtype", allowed=", ".join(SUBTYPES))
    return name


# --- responses ---------------------------------------------------------------------------------


def model_info(info: core.ModelInfo) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=info.name,
        backend=info.backend,
        device=info.device,
        precision=info.precision,
        sample_rate=info.sample_rate,
        channels=info.channels,
        frame_rate=info.frame_rate,
        latent_dim=info.latent_dim,
        bandwidths=list(info.bandwidths),
        weights_fingerprint=info.weights_fingerprint,
        weights_source=info.weights_source,
        pretrained=info.pretrained,
        warning=info.warning,
    )


def matrix(values: np.ndarray) -> pb.Matrix:
    """Row-major float32. (Repeated fields fill about 3x faster from a list than from an array.)"""
    rows, cols = values.shape
    return pb.Matrix(rows=rows, cols=cols, values=np.asarray(values, np.float32).ravel().tolist())


def embed_response(r: core.EmbedResult) -> spb.EmbedResponse:
    response = spb.EmbedResponse(
        model=model_info(r.model),
        embedding=r.vector.tolist(),
        dim=int(r.vector.shape[0]),
        pooling=r.pooling,
        normalized=r.normalized,
        duration_s=r.duration_s,
        num_windows=r.num_windows,
        cached=r.cached,
        warnings=list(r.warnings),
    )
    if r.frames is not None:
        response.frames.CopyFrom(matrix(r.frames))
        response.frame_times_s.extend(np.asarray(r.frame_times, np.float64).tolist())
    return response


def encode_response(r: core.EncodeResult) -> spb.EncodeResponse:
    return spb.EncodeResponse(
        model=model_info(r.model),
        bandwidth=r.bandwidth,
        num_codebooks=int(r.codes[0].shape[0]),
        num_samples=r.num_samples,
        sample_rate=r.model.sample_rate,
        frame_rate=r.model.frame_rate,
        segment_stride=r.segment_stride,
        duration_s=r.duration_s,
        segments=[
            pb.Segment(
                num_codebooks=c.shape[0],
                num_frames=c.shape[1],
                codes=c.astype(np.int32).ravel().tolist(),
                scale=s,
            )
            for c, s in zip(r.codes, r.scales, strict=True)
        ],
    )


def decode_response(r: core.DecodeResult, wav_subtype: str) -> spb.DecodeResponse:
    channels, samples = r.audio.shape
    return spb.DecodeResponse(
        model=model_info(r.model),
        wav=r.wav_bytes(wav_subtype),
        sample_rate=r.model.sample_rate,
        channels=channels,
        num_samples=samples,
    )


def similarity_response(r: core.SimilarityResult) -> spb.SimilarityResponse:
    return spb.SimilarityResponse(model=model_info(r.model), matrix=matrix(r.matrix))


def self_similarity_response(r: core.SelfSimilarityResult) -> spb.SelfSimilarityResponse:
    return spb.SelfSimilarityResponse(
        model=model_info(r.model),
        matrix=matrix(r.matrix),
        segment_seconds=r.segment_seconds,
        segment_starts_s=np.asarray(r.segment_starts_s, np.float64).tolist(),
    )


def limits(s: Settings) -> pb.Limits:
    """As REST's ``Limits`` in /v1/models."""
    return pb.Limits(**core.published_limits(s))


def models_response(service: Service) -> spb.ModelsResponse:
    infos = list(service.infos.values())
    return spb.ModelsResponse(
        models=[model_info(i) for i in infos],
        default_model=service.settings.models[0],
        limits=limits(service.settings),
        random_weights=any(not i.pretrained for i in infos),
    )


def error(err: SonovecError) -> pb.Error:
    return pb.Error(
        code=GRPC_CODE[err.kind],
        kind=err.kind.value,
        message=err.message,
        field=err.field,
        allowed=err.allowed,
        retry_after_s=err.retry_after,
    )


def trailing_metadata(err: SonovecError) -> tuple[tuple[str, str], ...]:
    """The error's details for the gRPC status: kind, field, allowed, and Retry-After (whole
    seconds, at least 1, as REST's header)."""
    pairs = [("sonovec-error-kind", err.kind.value)]
    if err.field is not None:
        pairs.append(("sonovec-error-field", err.field))
    if err.allowed is not None:
        pairs.append(("sonovec-error-allowed", err.allowed))
    if err.retry_after is not None:
        pairs.append(("retry-after", str(max(1, math.ceil(err.retry_after)))))
    if err.request_id is not None:
        pairs.append(("sonovec-request-id", err.request_id))
    return tuple((key, _ascii(value)) for key, value in pairs)


def _ascii(value: str) -> str:
    """Metadata values must be printable ASCII."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in value)


def recordings(sources: Sequence[pb.Audio]) -> list[AudioSource]:
    return [audio_source(a, f"recordings[{i}]") for i, a in enumerate(sources)]


# --- collections (REST: http/collection_schemas.py) --------------------------------------------


def struct_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as JSON-like Python. Struct numbers are all doubles; whole ones come back as ints,
    so metadata written over gRPC reads back as it would have been written over REST."""
    return _whole_numbers(json_format.MessageToDict(message))


def _whole_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def index_spec(m: cpb.IndexSpec) -> spec.IndexSpec:
    """The fields the caller set, by their wire names; the rest keep the core's defaults."""
    fields = {
        name: getattr(m, name) for name in spec.IndexSpec.WIRE_NAMES if name != "type" and m.HasField(name)
    }
    if m.type:  # a plain string: empty means absent
        fields["type"] = m.type
    return spec.IndexSpec.from_wire(fields)


def space_claim(m: cpb.SpaceClaim) -> spec.SpaceClaim:
    fields = ("model", "weights_fingerprint", "pooling", "normalize")
    return spec.SpaceClaim(*(getattr(m, f) if m.HasField(f) else None for f in fields))


def _vector(m: cpb.Vector) -> np.ndarray:
    return np.asarray(m.values, dtype=np.float32)


def new_item(m: cpb.ItemIn, index: int) -> spec.NewItem:
    return spec.NewItem(
        m.id,
        _vector(m.vector) if m.HasField("vector") else None,
        audio_source(m.audio, f"items[{index}].audio") if m.HasField("audio") else None,
        tuple(m.labels),
        struct_dict(m.metadata),
    )


def query(m: cpb.SearchRequest | cpb.ClassifyRequest) -> spec.Query:
    """Exactly one of audio, id, vector (the core checks), with the vector's claimed space."""
    return spec.Query(
        vector=_vector(m.vector) if m.HasField("vector") else None,
        audio=audio_source(m.audio) if m.HasField("audio") else None,
        item_id=m.id if m.HasField("id") else None,
        space=space_claim(m.space) if m.HasField("space") else None,
    )


def space(s: spec.EmbeddingSpace) -> cpb.Space:
    return cpb.Space(
        model=s.model,
        weights_fingerprint=s.weights_fingerprint,
        pooling=s.pooling,
        normalize=s.normalize,
        dim=s.dim,
    )


def collection(info: spec.CollectionInfo) -> cpb.Collection:
    return cpb.Collection(
        name=info.name,
        space=space(info.space),
        index=cpb.IndexSpec(**info.index.to_wire()),
        count=info.count,
        description=info.description,
        created_at=info.created_at,
    )


def item(i: Any) -> cpb.Item:
    return cpb.Item(
        id=i.id,
        vector=np.asarray(i.vector, np.float32).tolist(),
        labels=list(i.labels),
        metadata=struct(i.metadata),
    )


def hit(h: Any) -> cpb.Hit:
    return cpb.Hit(id=h.id, score=h.score, labels=list(h.labels), metadata=struct(h.metadata))


def search_response(r: Any) -> cpb.SearchResponse:
    return cpb.SearchResponse(
        collection=r.collection, space=space(r.space), exact=r.exact, hits=[hit(h) for h in r.hits]
    )


def classify_response(c: Any) -> cpb.ClassifyResponse:
    return cpb.ClassifyResponse(
        collection=c.collection,
        method=c.method,
        labels=[cpb.LabelScore(label=label, score=score) for label, score in c.labels],
        neighbours=[hit(h) for h in c.neighbours],
        probe=c.probe,
        probe_version=c.probe_version,
    )


def probe(p: Any) -> cpb.Probe:
    return cpb.Probe(
        collection=p.collection,
        name=p.name,
        version=p.version,
        classes=list(p.classes),
        num_items=p.num_items,
        folds=p.folds,
        cv_accuracy=p.cv_accuracy,
        confusion_matrix=[int(x) for row in p.confusion_matrix for x in row],
        c=p.c,
        weights_fingerprint=p.weights_fingerprint,
        trained_at=p.trained_at,
    )
