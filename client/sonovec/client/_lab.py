"""The latent lab's ops (REST /v1/lab/<name>, gRPC Lab<Name>) and results, for ``_client``.

Every lab op is one ``LabOp``: a name, its fields in REST's shape and in gRPC's, and how to read
either reply. Inputs are recordings (anything ``to_audio`` takes) or ``Latents`` (any lab reply's
``latents``), so results chain.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import numpy as np

from sonovec.client import _rest as rest
from sonovec.client import _rpc as rpc
from sonovec.client._audio import AudioData, read_wav
from sonovec.client._ops import GrpcSpec, HttpSpec, Op, Wire
from sonovec.client._types import ModelInfo
from sonovec.v1 import common_pb2 as pb
from sonovec.v1 import lab_pb2 as lpb

T = TypeVar("T")
Json = dict[str, Any]


@dataclass
class Latents:
    """Latent frames ``[F, D]`` with one scale per 1 s segment (48 kHz) and the output length."""

    frames: np.ndarray
    scales: np.ndarray
    num_samples: int
    model: str = ""


@dataclass
class LabAudio:
    """Decoded audio ``[C, T]`` (and its WAV) with the latents it was decoded from."""

    audio: np.ndarray
    sample_rate: int
    wav: bytes
    latents: Latents
    model: ModelInfo


@dataclass
class LabAnalysis:
    """A sensitivity, ablation or statistics result: its table, its PNG, per-dimension WAVs."""

    table: dict[str, Any]
    png: bytes
    listen: dict[int, bytes] = field(default_factory=dict)


LabIn = AudioData | Latents


# ---- REST side ----


def _rest_input(value: LabIn) -> Json:
    if isinstance(value, Latents):
        return {"latents": _rest_latents(value)}
    return {"audio": rest.audio(value)}


def _rest_latents(z: Latents) -> Json:
    return {
        "frames": np.asarray(z.frames).tolist(),
        "scales": np.asarray(z.scales).tolist(),
        "num_samples": z.num_samples,
    }


def _latents_json(d: Json, model: str) -> Latents:
    frames = np.asarray(d["frames"], np.float32).reshape(len(d["frames"]), -1)
    return Latents(frames, np.asarray(d["scales"], np.float32), int(d["num_samples"]), model)


def rest_latents(d: Json) -> Latents:
    return _latents_json(d["latents"], d["model"]["name"])


def rest_audio(d: Json) -> LabAudio:
    wav = base64.b64decode(d["audio"])
    samples, rate = read_wav(wav)
    return LabAudio(
        samples, rate, wav, _latents_json(d["latents"], d["model"]["name"]), rest.model_info(d["model"])
    )


def rest_path(d: Json) -> list[LabAudio]:
    return [rest_audio(step) for step in d["steps"]]


def rest_analysis(d: Json) -> LabAnalysis:
    listen = {int(k): base64.b64decode(v) for k, v in d.get("listen", {}).items()}
    return LabAnalysis(d["table"], base64.b64decode(d["png"]) if d["png"] else b"", listen)


# ---- gRPC side ----


def _rpc_input(value: LabIn) -> lpb.LabInput:
    if isinstance(value, Latents):
        return lpb.LabInput(latents=_rpc_latents(value))
    return lpb.LabInput(audio=rpc.audio(value))


def _rpc_latents(z: Latents) -> lpb.Latents:
    frames = np.asarray(z.frames, np.float32)
    matrix = pb.Matrix(rows=frames.shape[0], cols=frames.shape[1], values=frames.ravel().tolist())
    return lpb.Latents(frames=matrix, scales=np.asarray(z.scales).tolist(), num_samples=z.num_samples)


def _latents_message(m: lpb.Latents, model: str) -> Latents:
    return Latents(rpc.matrix(m.frames), np.asarray(m.scales, np.float32), int(m.num_samples), model)


def rpc_latents(m: lpb.LabLatentsResponse) -> Latents:
    return _latents_message(m.latents, m.model.name)


def rpc_audio(m: lpb.LabResponse) -> LabAudio:
    samples, rate = read_wav(m.wav)
    return LabAudio(samples, rate, m.wav, _latents_message(m.latents, m.model.name), rpc.model_info(m.model))


def rpc_path(m: lpb.LabPathResponse) -> list[LabAudio]:
    return [rpc_audio(step) for step in m.steps]


def rpc_analysis(m: lpb.LabAnalysisResponse) -> LabAnalysis:
    return LabAnalysis(json.loads(m.table_json), m.png, {int(k): v for k, v in m.listen.items()})


# ---- the ops ----

_INPUTS = ("input", "a", "b", "c", "content", "style")
_INPUT_LISTS = ("inputs", "reference")


@dataclass(frozen=True)
class LabOp(Op[T]):
    """``POST /v1/lab/<name>`` with ``fields`` / gRPC ``Lab<Name>``; inputs under their field names.

    ``options``: model, bandwidth and subtype (REST: top-level fields; gRPC: a ``LabOptions``),
    None for the ops that decode nothing (latents, statistics: they take ``model`` in ``fields``).
    """

    name: str
    fields: Json
    parse_rest: Callable[[Json], T]
    parse_rpc: Callable[[Any], T]
    options: Json | None = None

    def http(self) -> HttpSpec[T]:
        body: Json = {}
        for key, value in self.fields.items():
            if key in _INPUTS:
                body[key] = _rest_input(value)
            elif key in _INPUT_LISTS:
                body[key] = [_rest_input(v) for v in value]
            elif key == "latents":
                body[key] = _rest_latents(value)
            else:
                body[key] = value
        body.update(self.options or {})
        body = {k: v for k, v in body.items() if v is not None}
        parse = self.parse_rest
        return HttpSpec("POST", f"/v1/lab/{self.name}", lambda r: parse(_json(r)), body, takes_timeout=True)

    def grpc(self, wire: Wire) -> GrpcSpec[T]:
        rpc_name = "Lab" + self.name.capitalize()
        message: Any = getattr(lpb, f"{rpc_name}Request")()
        for key, value in self.fields.items():
            if value is None:
                continue
            if key in _INPUTS:
                getattr(message, key).CopyFrom(_rpc_input(value))
            elif key in _INPUT_LISTS:
                getattr(message, key).extend(_rpc_input(v) for v in value)
            elif key == "latents":
                message.latents.CopyFrom(_rpc_latents(value))
            elif isinstance(value, list):
                getattr(message, key).extend(value)
            else:
                setattr(message, key, value)
        if self.options is not None:
            given = {k: v for k, v in self.options.items() if v is not None}
            message.options.CopyFrom(lpb.LabOptions(**given))
        return GrpcSpec(rpc_name, self.parse_rpc, message)


def _json(response: httpx.Response) -> Json:
    data: Json = response.json()
    return data


def audio_op(
    name: str, fields: Json, model: str | None, bandwidth: float | None, subtype: str
) -> LabOp[LabAudio]:
    options = {"model": model, "bandwidth": bandwidth, "subtype": subtype}
    return LabOp(name, fields, rest_audio, rpc_audio, options)


def analysis_op(name: str, fields: Json, model: str | None, bandwidth: float | None) -> LabOp[LabAnalysis]:
    options = {"model": model, "bandwidth": bandwidth}
    return LabOp(name, fields, rest_analysis, rpc_analysis, options)


def weights(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values]


__all__ = ["LabAnalysis", "LabAudio", "LabOp", "Latents", "analysis_op", "audio_op"]
