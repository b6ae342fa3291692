"""The latent lab's RPCs (``Lab*`` of ``sonovec.v1.Sonovec``, messages in lab.proto): parse, call
``sonovec.server.lab``, answer. ``SonovecServicer`` inherits them; each runs through its ``_guard``
(readiness, API key, deadline, error mapping) as every other method does."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from sonovec.server import lab
from sonovec.server.core import LatentFrames, Service
from sonovec.server.errors import invalid
from sonovec.server.grpc import convert
from sonovec.server.lab_analysis import Analysis, SensitivityOptions
from sonovec.v1 import lab_pb2 as lpb

T = TypeVar("T")


def lab_rpc(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """``(self, lab, request, deadline_s)`` as a gRPC handler behind the servicer's ``_guard``."""
    name = method.__name__

    @functools.wraps(method)
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> T:
        async def work(service: Service) -> T:
            remaining = context.time_remaining()
            return await method(self, lab.Lab(service), request, remaining)

        result: T = await self._guard(name, context, work, request)
        return result

    return handler


def lab_input(message: lpb.LabInput, field: str) -> lab.LabInput:
    which = message.WhichOneof("source")
    if which == "audio":
        return convert.audio_source(message.audio, field)
    if which == "latents":
        return latents_in(message.latents, field)
    raise invalid("no input given", field=field, allowed="audio or latents")


def latents_in(message: lpb.Latents, field: str) -> lab.LatentsIn:
    m = message.frames
    if m.rows * m.cols != len(m.values):
        raise invalid(f"{len(m.values)} values for {m.rows} x {m.cols}", field=f"{field}.frames")
    frames = np.asarray(m.values, np.float32).reshape(m.rows, m.cols)
    num_samples = message.num_samples if message.HasField("num_samples") else None
    return lab.LatentsIn(frames, list(message.scales) or None, num_samples)


def latents_out(z: LatentFrames) -> lpb.Latents:
    return lpb.Latents(frames=convert.matrix(z.frames), scales=z.scales.tolist(), num_samples=z.num_samples)


def options(message: lpb.LabOptions, timeout_s: float | None) -> lab.LabOptions:
    bandwidth = message.bandwidth if message.HasField("bandwidth") else None
    return lab.LabOptions(message.model or None, bandwidth, timeout_s)


def response(result: lab.LabResult, subtype: str) -> lpb.LabResponse:
    wav = result.audio.wav_bytes(convert.subtype(subtype))
    return lpb.LabResponse(
        model=convert.model_info(result.audio.model),
        sample_rate=result.audio.model.sample_rate,
        wav=wav,
        latents=latents_out(result.latents),
    )


def _inputs(messages: Sequence[lpb.LabInput], name: str) -> list[lab.LabInput]:
    return [lab_input(m, f"{name}[{i}]") for i, m in enumerate(messages)]


def _or(message: Any, name: str, default: T) -> T:
    return getattr(message, name) if message.HasField(name) else default  # type: ignore[no-any-return]


class LabRpcs:
    """The ``Lab*`` methods of the servicer."""

    @lab_rpc
    async def LabLatents(self, lab_: lab.Lab, request: lpb.LabLatentsRequest, timeout: float | None) -> Any:
        z = await lab_.latents(
            lab_input(request.input, "input"), lab.LabOptions(request.model or None, None, timeout)
        )
        return lpb.LabLatentsResponse(model=convert.model_info(z.model), latents=latents_out(z))

    @lab_rpc
    async def LabDecode(self, lab_: lab.Lab, request: lpb.LabDecodeRequest, timeout: float | None) -> Any:
        given = latents_in(request.latents, "latents")
        result = await lab_.decode_input(given, options(request.options, timeout))
        return response(result, request.options.subtype)

    @lab_rpc
    async def LabInterpolate(
        self, lab_: lab.Lab, request: lpb.LabInterpolateRequest, timeout: float | None
    ) -> Any:
        a, b = lab_input(request.a, "a"), lab_input(request.b, "b")
        t = _or(request, "t", lab.DEFAULT_T)
        return response(
            await lab_.interpolate(a, b, t, options(request.options, timeout)), request.options.subtype
        )

    @lab_rpc
    async def LabPath(self, lab_: lab.Lab, request: lpb.LabPathRequest, timeout: float | None) -> Any:
        a, b = lab_input(request.a, "a"), lab_input(request.b, "b")
        steps = _or(request, "steps", lab.DEFAULT_STEPS)
        results = await lab_.path(a, b, steps, options(request.options, timeout))
        return lpb.LabPathResponse(
            steps=[response(r, request.options.subtype) for r in results],
            t=np.linspace(0.0, 1.0, len(results)).tolist(),
        )

    @lab_rpc
    async def LabMix(self, lab_: lab.Lab, request: lpb.LabMixRequest, timeout: float | None) -> Any:
        inputs = _inputs(request.inputs, "inputs")
        result = await lab_.mix(inputs, list(request.weights), options(request.options, timeout))
        return response(result, request.options.subtype)

    @lab_rpc
    async def LabOffset(self, lab_: lab.Lab, request: lpb.LabOffsetRequest, timeout: float | None) -> Any:
        a, b, c = (lab_input(getattr(request, n), n) for n in "abc")
        alpha = _or(request, "alpha", lab.DEFAULT_ALPHA)
        return response(
            await lab_.offset(a, b, c, alpha, options(request.options, timeout)), request.options.subtype
        )

    @lab_rpc
    async def LabStyle(self, lab_: lab.Lab, request: lpb.LabStyleRequest, timeout: float | None) -> Any:
        content, style = lab_input(request.content, "content"), lab_input(request.style, "style")
        amount = _or(request, "amount", lab.DEFAULT_AMOUNT)
        result = await lab_.style(content, style, amount, options(request.options, timeout))
        return response(result, request.options.subtype)

    @lab_rpc
    async def LabSensitivity(
        self, lab_: lab.Lab, request: lpb.LabSensitivityRequest, timeout: float | None
    ) -> Any:
        sens = SensitivityOptions(
            list(request.dims) or None,
            _or(request, "k", SensitivityOptions.k),
            _or(request, "listen", SensitivityOptions.listen),
        )
        source, reference = lab_input(request.input, "input"), _inputs(request.reference, "reference")
        result = await Analysis(lab_).sensitivity(source, reference, sens, options(request.options, timeout))
        png = await asyncio.to_thread(result.heatmap_png)
        return lpb.LabAnalysisResponse(table_json=json.dumps(result.table()), png=png, listen=result.listen)

    @lab_rpc
    async def LabAblation(self, lab_: lab.Lab, request: lpb.LabAblationRequest, timeout: float | None) -> Any:
        source = lab_input(request.input, "input")
        lab_options = options(request.options, timeout)
        result = await Analysis(lab_).ablation(
            source, request.mode or "zero", list(request.dims) or None, lab_options
        )
        return lpb.LabAnalysisResponse(table_json=json.dumps(result.table()))

    @lab_rpc
    async def LabStatistics(
        self, lab_: lab.Lab, request: lpb.LabStatisticsRequest, timeout: float | None
    ) -> Any:
        inputs = _inputs(request.inputs, "inputs")
        stats = await Analysis(lab_).statistics(inputs, lab.LabOptions(request.model or None, None, timeout))
        png = await asyncio.to_thread(stats.png)
        return lpb.LabAnalysisResponse(table_json=json.dumps(stats.table()), png=png)
