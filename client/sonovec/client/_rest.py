"""REST wire format: JSON bodies in, typed results out (the shapes of the server's schemas.py)."""

from __future__ import annotations

import base64
import dataclasses
import math
from typing import Any

import httpx
import numpy as np

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

Json = dict[str, Any]

# HTTP status -> error kind, for error bodies that are not the server's own (proxies, old servers).
_STATUS_KINDS = {
    401: kinds.UNAUTHENTICATED,
    404: kinds.NOT_FOUND,
    405: kinds.UNIMPLEMENTED,
    409: kinds.CONFLICT,
    413: kinds.TOO_LARGE,
    415: kinds.UNSUPPORTED,
    422: kinds.INVALID,
    429: kinds.OVERLOADED,
    499: kinds.CANCELLED,
    501: kinds.UNIMPLEMENTED,
    502: kinds.UNAVAILABLE,
    503: kinds.UNAVAILABLE,
    504: kinds.DEADLINE,
}


def audio(a: AudioData) -> Json:
    body: Json = {"data": base64.b64encode(a.data).decode("ascii"), "encoding": a.encoding}
    if a.sample_rate is not None:
        body["sample_rate"] = a.sample_rate
    if a.channels is not None:
        body["channels"] = a.channels
    return body


def error(response: httpx.Response) -> SonovecClientError:
    """The server's ``{"error": {kind, message, field, allowed, retry_after_s}}``, or a fallback."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    body = payload.get("error") if isinstance(payload, dict) else None
    retry_after = _retry_after(response.headers.get("retry-after"))
    if isinstance(body, dict) and "kind" in body:
        return SonovecClientError(
            body["kind"],
            body.get("message", ""),
            status=response.status_code,
            field=body.get("field"),
            allowed=body.get("allowed"),
            retry_after=body.get("retry_after_s", retry_after),
        )
    kind = _STATUS_KINDS.get(response.status_code, kinds.INTERNAL)
    if response.status_code == 404:  # a route this server does not have, not a missing resource
        kind = kinds.UNIMPLEMENTED
    text = response.text[:200] if payload is None else str(payload)[:200]
    return SonovecClientError(
        kind, f"HTTP {response.status_code}: {text}", status=response.status_code, retry_after=retry_after
    )


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def model_info(d: Json) -> ModelInfo:
    return ModelInfo(
        name=d["name"],
        backend=d["backend"],
        device=d["device"],
        precision=d["precision"],
        sample_rate=int(d["sample_rate"]),
        channels=int(d["channels"]),
        frame_rate=int(d["frame_rate"]),
        latent_dim=int(d["latent_dim"]),
        bandwidths=tuple(float(b) for b in d["bandwidths"]),
        weights_fingerprint=d["weights_fingerprint"],
        weights_source=d["weights_source"],
        pretrained=bool(d["pretrained"]),
        warning=d.get("warning"),
    )


def limits(d: Json) -> Limits:
    return Limits(
        max_request_bytes=int(d["max_request_bytes"]),
        max_audio_seconds=float(d["max_audio_seconds"]),
        max_channels=int(d["max_channels"]),
        max_recordings=int(d["max_recordings"]),
        max_batch_seconds=float(d["max_batch_seconds"]),
        max_queue_seconds=float(d["max_queue_seconds"]),
        request_timeout_s=float(d["request_timeout_s"]),
        formats=tuple(d["formats"]),
    )


def models(d: Json) -> ModelsInfo:
    return ModelsInfo(
        models=[model_info(m) for m in d["models"]],
        default_model=d["default_model"],
        limits=limits(d["limits"]),
        random_weights=bool(d["random_weights"]),
    )


def server_info(d: Json) -> ServerInfo:
    """REST has no info route: what /v1/models says, without the gRPC message limits."""
    m = models(d)
    return ServerInfo(
        transport="http", models=[x.name for x in m.models], default_model=m.default_model, limits=m.limits
    )


def embedding(d: Json) -> Embedding:
    frames = d.get("frames")
    times = d.get("frame_times_s")
    return Embedding(
        vector=np.asarray(d["embedding"], dtype=np.float32),
        model=model_info(d["model"]),
        pooling=d["pooling"],
        normalized=bool(d["normalized"]),
        duration_s=float(d["duration_s"]),
        num_windows=int(d["num_windows"]),
        cached=bool(d["cached"]),
        frames=None if frames is None else np.asarray(frames, dtype=np.float32).reshape(len(frames), -1),
        frame_times_s=None if times is None else np.asarray(times, dtype=np.float64),
        warnings=[str(w) for w in d.get("warnings", [])],
    )


def codes(d: Json) -> Codes:
    k = int(d["num_codebooks"])
    return Codes(
        segments=[np.asarray(s["codes"], dtype=np.int64).reshape(k, -1) for s in d["segments"]],
        scales=[float(s.get("scale", 1.0)) for s in d["segments"]],
        model=model_info(d["model"]),
        bandwidth=float(d["bandwidth"]),
        num_codebooks=k,
        num_samples=int(d["num_samples"]),
        sample_rate=int(d["sample_rate"]),
        frame_rate=int(d["frame_rate"]),
        segment_stride=int(d["segment_stride"]),
        duration_s=float(d["duration_s"]),
    )


def segments(arrays: list[np.ndarray], scales: list[float]) -> list[Json]:
    return [{"codes": np.asarray(a).tolist(), "scale": float(s)} for a, s in zip(arrays, scales, strict=True)]


def decoded(response: httpx.Response) -> DecodedAudio:
    samples, rate = read_wav(response.content)
    headers = response.headers
    return DecodedAudio(
        audio=samples,
        sample_rate=rate,
        wav=response.content,
        model_name=headers.get("x-sonovec-model", ""),
        weights_fingerprint=headers.get("x-sonovec-weights-fingerprint", ""),
        pretrained=headers.get("x-sonovec-pretrained") == "true",
        warning=headers.get("x-sonovec-warning"),
    )


def _matrix(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(rows[0]) if rows else 0)


def similarity(d: Json) -> Similarity:
    return Similarity(matrix=_matrix(d["matrix"]), model=model_info(d["model"]))


def self_similarity(d: Json) -> SelfSimilarity:
    return SelfSimilarity(
        matrix=_matrix(d["matrix"]),
        segment_seconds=float(d["segment_seconds"]),
        segment_starts_s=np.asarray(d["segment_starts_s"], dtype=np.float64),
        model=model_info(d["model"]),
    )


# --- collections -------------------------------------------------------------------------------


def space_claim(claim: SpaceClaim | None) -> Json | None:
    return None if claim is None else {k: v for k, v in dataclasses.asdict(claim).items() if v is not None}


def space(d: Json) -> Space:
    return Space(
        model=d["model"],
        weights_fingerprint=d["weights_fingerprint"],
        pooling=d["pooling"],
        normalize=bool(d["normalize"]),
        dim=int(d["dim"]),
    )


def index_spec(d: Json) -> IndexSpec:
    return IndexSpec(
        type=d["type"],
        m=int(d["m"]),
        ef_construction=int(d["ef_construction"]),
        ef_search=int(d["ef_search"]),
        nlist=int(d["nlist"]),
        nprobe=int(d["nprobe"]),
    )


def collection(d: Json) -> Collection:
    return Collection(
        name=d["name"],
        space=space(d["space"]),
        index=index_spec(d["index"]),
        count=int(d["count"]),
        description=d.get("description", ""),
        created_at=float(d.get("created_at", 0.0)),
    )


def item(d: Json) -> Item:
    return Item(
        id=d["id"],
        vector=np.asarray(d["vector"], dtype=np.float32),
        labels=list(d["labels"]),
        metadata=dict(d["metadata"]),
    )


def add_result(d: Json) -> AddResult:
    return AddResult(collection=d["collection"], ids=list(d["ids"]), count=int(d["count"]))


def hit(d: Json) -> Hit:
    return Hit(id=d["id"], score=float(d["score"]), labels=list(d["labels"]), metadata=dict(d["metadata"]))


def search_result(d: Json) -> SearchResult:
    return SearchResult(
        collection=d["collection"],
        space=space(d["space"]),
        exact=bool(d["exact"]),
        hits=[hit(h) for h in d["hits"]],
    )


def classification(d: Json) -> Classification:
    return Classification(
        collection=d["collection"],
        method=d["method"],
        labels=[LabelScore(label=x["label"], score=float(x["score"])) for x in d["labels"]],
        neighbours=[hit(h) for h in d.get("neighbours", [])],
        probe=d.get("probe"),
        probe_version=d.get("probe_version"),
    )


def probe_info(d: Json) -> ProbeInfo:
    classes = list(d["classes"])
    return ProbeInfo(
        collection=d["collection"],
        name=d["name"],
        version=int(d["version"]),
        classes=classes,
        num_items=int(d["num_items"]),
        folds=int(d["folds"]),
        cv_accuracy=float(d["cv_accuracy"]),
        confusion_matrix=np.asarray(d["confusion_matrix"], dtype=np.int64).reshape(
            len(classes), len(classes)
        ),
        c=float(d["c"]),
        weights_fingerprint=d["weights_fingerprint"],
        trained_at=float(d["trained_at"]),
    )
