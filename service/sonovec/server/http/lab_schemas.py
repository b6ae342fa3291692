"""REST bodies of the latent lab (/v1/lab/...). They mirror proto/sonovec/v1/lab.proto one to one."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, Field, model_validator

from sonovec.server import core, lab
from sonovec.server.errors import invalid
from sonovec.server.http.schemas import AudioIn, ModelOut, Strict, _model_name
from sonovec.server.lab_analysis import SensitivityOptions


class LatentsIn(Strict):
    """Latent frames as ``/v1/lab/latents`` or any lab reply returns them (or embed's frames)."""

    frames: list[list[float]] = Field(description="[F, D] latent frames, in window order.")
    scales: list[float] | None = Field(
        None, description="One RMS scale per 1 s segment (48 kHz); 1.0 each when omitted."
    )
    num_samples: int | None = Field(
        None, gt=0, description="Output length; the longest the frames allow if omitted."
    )


def _bare_audio(value: object) -> object:
    """``{"data": ...}`` (an audio object, or a multipart file) is taken as ``{"audio": ...}``."""
    if isinstance(value, dict) and "data" in value:
        return {"audio": value}
    return value


class LabInputIn(Strict):
    """One input: a recording (``audio``) or latents (``latents``), exactly one."""

    audio: AudioIn | None = None
    latents: LatentsIn | None = None

    @model_validator(mode="after")
    def _one(self) -> LabInputIn:
        if (self.audio is None) == (self.latents is None):
            raise ValueError("give exactly one of audio or latents")
        return self


Input = Annotated[LabInputIn, BeforeValidator(_bare_audio)]


def to_input(value: LabInputIn | AudioIn, field: str) -> lab.LabInput:
    """The core's input (multipart files arrive as bare ``AudioIn``)."""
    audio = value if isinstance(value, AudioIn) else value.audio
    if audio is not None:
        return core.AudioSource.from_wire(
            audio.data, audio.encoding, audio.sample_rate, audio.channels, field
        )
    assert isinstance(value, LabInputIn) and value.latents is not None
    return latents_in(value.latents, f"{field}.latents")


def latents_in(given: LatentsIn, field: str) -> lab.LatentsIn:
    """JSON rows -> the core's latents: ``[F, D]`` with rows of one length (values the core checks:
    a number past float32's range becomes inf, which it refuses)."""
    if not given.frames or len({len(row) for row in given.frames}) > 1:
        raise invalid(
            "no frames, or frames of unequal length", field=f"{field}.frames",
            allowed="[F, D]: F >= 1 rows of D numbers",
        )
    with np.errstate(over="ignore"):
        frames = np.asarray(given.frames, np.float32).reshape(len(given.frames), -1)
    return lab.LatentsIn(frames, given.scales, given.num_samples)


# A model name, or the ``model`` object of a lab reply (so /v1/lab/latents' reply decodes as it is).
ModelName = Annotated[str | None, BeforeValidator(_model_name)]


class LabRequest(Strict):
    model: ModelName = Field(None, description="Model name; the server's default when omitted.")
    bandwidth: float | None = Field(
        None, description="Re-quantize at this bandwidth (kbps) before decoding; none: skip the quantizer."
    )
    subtype: Literal["PCM_16", "FLOAT"] = Field("PCM_16", description="WAV sample format of the audio.")
    timeout_s: float | None = Field(None, gt=0)

    def options(self) -> lab.LabOptions:
        return lab.LabOptions(self.model, self.bandwidth, self.timeout_s)


class LatentsRequest(Strict):
    input: Input
    model: str | None = None
    timeout_s: float | None = Field(None, gt=0)


class DecodeLatentsRequest(LabRequest):
    latents: LatentsIn


class InterpolateRequest(LabRequest):
    a: Input
    b: Input
    t: float = Field(lab.DEFAULT_T, description="0: a, 1: b.")


class PathRequest(LabRequest):
    a: Input
    b: Input
    steps: int = Field(
        lab.DEFAULT_STEPS, description=f"Interpolations from t = 0 to t = 1, 2 to {lab.MAX_PATH_STEPS}."
    )


class MixRequest(LabRequest):
    inputs: list[Input]
    weights: list[float] = Field(description="One weight >= 0 per input; normalised to sum 1.")


class OffsetRequest(LabRequest):
    a: Input
    b: Input
    c: Input
    alpha: float = Field(lab.DEFAULT_ALPHA, description="c + alpha (mean a - mean b).")


class StyleRequest(LabRequest):
    content: Input
    style: Input
    amount: float = Field(
        lab.DEFAULT_AMOUNT, description="0: content unchanged, 1: style's frame statistics."
    )


class LatentsOut(BaseModel):
    frames: list[list[float]]
    scales: list[float]
    num_samples: int

    @classmethod
    def of(cls, z: core.LatentFrames) -> LatentsOut:
        return cls(frames=z.frames.tolist(), scales=z.scales.tolist(), num_samples=z.num_samples)


class LatentsResponse(BaseModel):
    model: ModelOut
    latents: LatentsOut


class LabResponse(BaseModel):
    model: ModelOut
    sample_rate: int
    audio: str = Field(description="Base64 of the decoded WAV.")
    latents: LatentsOut = Field(description="What was decoded: pass it on as an input to chain.")

    @classmethod
    def of(cls, result: lab.LabResult, subtype: str) -> LabResponse:
        wav = base64.b64encode(result.audio.wav_bytes(subtype)).decode()
        return cls(
            model=ModelOut.of(result.audio.model),
            sample_rate=result.audio.model.sample_rate,
            audio=wav,
            latents=LatentsOut.of(result.latents),
        )


class PathResponse(BaseModel):
    steps: list[LabResponse]
    t: list[float]


class SensitivityRequest(Strict):
    input: Input
    reference: list[Input] = Field(
        default_factory=list, description="Recordings (or latents) whose frames give each dimension's std."
    )
    dims: list[int] | None = Field(None, description="Dimensions to perturb; all when omitted.")
    k: float = Field(
        SensitivityOptions.k, description="Perturbation, in standard deviations of each dimension."
    )
    listen: int = Field(
        SensitivityOptions.listen,
        ge=0,
        le=16,
        description="Decoded +k WAVs for this many top-ranked dimensions.",
    )
    model: str | None = None
    bandwidth: float | None = None
    timeout_s: float | None = Field(None, gt=0)


class AblationRequest(Strict):
    input: Input
    mode: str = Field("zero", description="zero: set each dimension to 0; mean: to its mean over frames.")
    dims: list[int] | None = None
    model: str | None = None
    bandwidth: float | None = None
    timeout_s: float | None = Field(None, gt=0)


class StatisticsRequest(Strict):
    inputs: list[Input]
    model: str | None = None
    timeout_s: float | None = Field(None, gt=0)


class AnalysisResponse(BaseModel):
    table: dict[str, Any] = Field(description="The measurements (see docs/lab.md for the fields).")
    png: str = Field(description="Base64 PNG: the heat map (sensitivity), or the statistics panels.")
    listen: dict[str, str] = Field(
        default_factory=dict, description="Dimension -> base64 WAV of its +k decode."
    )
