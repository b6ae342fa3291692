"""REST request and response bodies. They mirror proto/sonovec/v1 one to one."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from sonovec.server import core
from sonovec.server.core import EmbedOptions
from sonovec.server.pooling import POOLINGS


def _strict_base64(value: object) -> bytes:
    if isinstance(value, bytes):  # already decoded (multipart uploads)
        return value
    if not isinstance(value, str):
        raise ValueError("must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"is not valid base64 ({exc})") from None


Base64Bytes = Annotated[
    bytes, BeforeValidator(_strict_base64), WithJsonSchema({"type": "string", "format": "base64"})
]


# The pooling field of every request: the core's default and choices (checked by the core).
Pooling = Field(
    EmbedOptions.pooling,
    description="mean: [D]; mean_std: [2D], the mean then the standard deviation over frames.",
    json_schema_extra={"enum": list(POOLINGS)},
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AudioIn(Strict):
    """A recording: base64 of an encoded file (WAV, FLAC, OGG, MP3, ...), or of raw PCM when
    ``encoding`` is ``pcm_f32le`` / ``pcm_s16le`` (then ``sample_rate`` and ``channels`` are needed)."""

    data: Base64Bytes = Field(description="Base64 of the audio bytes.")
    encoding: Literal["auto", "pcm_f32le", "pcm_s16le"] = "auto"
    sample_rate: int | None = Field(None, description="Raw PCM only: samples per second.")
    channels: int | None = Field(None, ge=1, description="Raw PCM only: interleaved channels.")


class EmbedRequest(Strict):
    audio: AudioIn
    model: str | None = Field(None, description="Model name; the server's default when omitted.")
    pooling: str = Pooling
    normalize: bool = Field(EmbedOptions.normalize, description="L2-normalise the pooled vector.")
    frames: bool = Field(EmbedOptions.frames, description="Also return every latent frame ([F, D]).")
    timeout_s: float | None = Field(None, gt=0, description="Deadline for this request, seconds.")


class EncodeRequest(Strict):
    audio: AudioIn
    model: str | None = None
    bandwidth: float = Field(
        core.DEFAULT_BANDWIDTH, description="Target bandwidth in kbps; one of the model's bandwidths."
    )
    timeout_s: float | None = Field(None, gt=0)


class Segment(Strict):
    codes: list[list[int]] = Field(description="[K, F] RVQ codes.")
    scale: float = Field(1.0, description="The segment's RMS scale (48 kHz); 1.0 otherwise.")


def _model_name(value: object) -> object:
    """A model name, or the ``model`` object of an encode reply (so that reply decodes as it is)."""
    return value.get("name") if isinstance(value, dict) else value


class DecodeRequest(Strict):
    """Codes to decode. An ``/v1/encode`` reply is a valid body as it is: its informational fields
    are accepted, and ``sample_rate`` / ``segment_stride`` must agree with the model."""

    segments: list[Segment]
    model: Annotated[str | None, BeforeValidator(_model_name)] = None
    num_samples: int | None = Field(
        None, gt=0, description="Output length (from encode); derived when omitted."
    )
    subtype: Literal["PCM_16", "FLOAT"] = Field("PCM_16", description="WAV sample format of the reply.")
    timeout_s: float | None = Field(None, gt=0)
    sample_rate: int | None = Field(None, description="From an encode reply: must be the model's.")
    segment_stride: int | None = Field(None, description="From an encode reply: must be the model's.")
    bandwidth: float | None = Field(None, description="From an encode reply; implied by the codes.")
    num_codebooks: int | None = None
    frame_rate: int | None = None
    duration_s: float | None = None


class SimilarityRequest(Strict):
    recordings: list[AudioIn]
    model: str | None = None
    pooling: str = Pooling
    timeout_s: float | None = Field(None, gt=0)


class SelfSimilarityRequest(Strict):
    audio: AudioIn
    segment_seconds: float = Field(
        core.DEFAULT_SEGMENT_SECONDS, description="Segment length for the matrix, seconds."
    )
    model: str | None = None
    timeout_s: float | None = Field(None, gt=0)


class ModelOut(BaseModel):
    name: str
    backend: str
    device: str
    precision: str
    sample_rate: int
    channels: int
    frame_rate: int
    latent_dim: int
    bandwidths: list[float]
    weights_fingerprint: str
    weights_source: str
    pretrained: bool
    warning: str | None

    @classmethod
    def of(cls, info: core.ModelInfo) -> ModelOut:
        return cls(**{**info.__dict__, "bandwidths": list(info.bandwidths)})


class EmbedResponse(BaseModel):
    model: ModelOut
    embedding: list[float]
    dim: int
    pooling: str
    normalized: bool
    duration_s: float
    num_windows: int
    cached: bool
    frames: list[list[float]] | None = Field(
        None, description="[F, D] latent frames as the model makes them (with frames=true)."
    )
    frame_times_s: list[float] | None = Field(
        None,
        description="Each frame's start, seconds. 48 kHz: 1 s segments overlap by 1.5 frames, so the "
        "times step back at each segment boundary (see docs/architecture.md); 24 kHz: increasing.",
    )
    warnings: list[str] = Field(
        default_factory=list, description="Caveats of an accepted request (e.g. truncated audio)."
    )

    @classmethod
    def of(cls, r: core.EmbedResult) -> EmbedResponse:
        return cls(
            model=ModelOut.of(r.model),
            embedding=r.vector.tolist(),
            dim=int(r.vector.shape[0]),
            pooling=r.pooling,
            normalized=r.normalized,
            duration_s=r.duration_s,
            num_windows=r.num_windows,
            cached=r.cached,
            frames=None if r.frames is None else r.frames.tolist(),
            frame_times_s=None if r.frame_times is None else r.frame_times.tolist(),
            warnings=r.warnings,
        )


class EncodeResponse(BaseModel):
    model: ModelOut
    bandwidth: float
    num_codebooks: int
    num_samples: int
    sample_rate: int
    frame_rate: int
    segment_stride: int
    duration_s: float
    segments: list[Segment]

    @classmethod
    def of(cls, r: core.EncodeResult) -> EncodeResponse:
        return cls(
            model=ModelOut.of(r.model),
            bandwidth=r.bandwidth,
            num_codebooks=int(r.codes[0].shape[0]),
            num_samples=r.num_samples,
            sample_rate=r.model.sample_rate,
            frame_rate=r.model.frame_rate,
            segment_stride=r.segment_stride,
            duration_s=r.duration_s,
            segments=[Segment(codes=c.tolist(), scale=s) for c, s in zip(r.codes, r.scales, strict=True)],
        )


class SimilarityResponse(BaseModel):
    model: ModelOut
    matrix: list[list[float]]


class SelfSimilarityResponse(BaseModel):
    model: ModelOut
    matrix: list[list[float]]
    segment_seconds: float
    segment_starts_s: list[float]


class Limits(BaseModel):
    max_request_bytes: int
    max_audio_seconds: float
    max_channels: int
    max_recordings: int
    max_batch_seconds: float
    max_queue_seconds: float
    request_timeout_s: float
    formats: list[str]


class ModelsResponse(BaseModel):
    models: list[ModelOut]
    default_model: str
    limits: Limits
    random_weights: bool = Field(description="True when any loaded model runs random-init weights.")


class ErrorBody(BaseModel):
    kind: str
    message: str
    field: str | None = None
    allowed: str | None = None
    retry_after_s: float | None = None
    request_id: str | None = None  # 500 only: the id the server's log names


class ErrorResponse(BaseModel):
    error: ErrorBody
