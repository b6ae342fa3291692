"""The latent lab over REST: /v1/lab/... (see sonovec.server.lab and docs/lab.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends
from pydantic import BaseModel

from sonovec.server.http.deps import ServiceDep, body
from sonovec.server.http.lab_schemas import (
    AblationRequest,
    AnalysisResponse,
    DecodeLatentsRequest,
    InterpolateRequest,
    LabResponse,
    LatentsOut,
    LatentsRequest,
    LatentsResponse,
    MixRequest,
    OffsetRequest,
    PathRequest,
    PathResponse,
    SensitivityRequest,
    StatisticsRequest,
    StyleRequest,
    latents_in,
    to_input,
)
from sonovec.server.http.routers._docs import ERRORS, request_body
from sonovec.server.http.schemas import ModelOut
from sonovec.server.lab import Lab, LabOptions
from sonovec.server.lab_analysis import Analysis, SensitivityOptions, b64

router = APIRouter(prefix="/lab", tags=["lab"])
F = TypeVar("F", bound=Callable[..., Any])


def _post(path: str, model: type[BaseModel], response: type[BaseModel]) -> Callable[[F], F]:
    return router.post(path, response_model=response, responses=ERRORS, openapi_extra=request_body(model))


@_post("/latents", LatentsRequest, LatentsResponse)
async def latents(
    service: ServiceDep, req: Annotated[LatentsRequest, Depends(body(LatentsRequest, ("input",)))]
) -> LatentsResponse:
    """A recording's latent frames with each segment's scale: the start of a chain."""
    z = await Lab(service).latents(to_input(req.input, "input"), LabOptions(req.model, None, req.timeout_s))
    return LatentsResponse(model=ModelOut.of(z.model), latents=LatentsOut.of(z))


@_post("/decode", DecodeLatentsRequest, LabResponse)
async def decode(
    service: ServiceDep, req: Annotated[DecodeLatentsRequest, Depends(body(DecodeLatentsRequest, ()))]
) -> LabResponse:
    """Continuous latents -> audio through the decoder (the quantizer skipped, or re-quantized at
    ``bandwidth`` first)."""
    given = latents_in(req.latents, "latents")
    return LabResponse.of(await Lab(service).decode_input(given, req.options()), req.subtype)


@_post("/interpolate", InterpolateRequest, LabResponse)
async def interpolate(
    service: ServiceDep, req: Annotated[InterpolateRequest, Depends(body(InterpolateRequest, ("a", "b")))]
) -> LabResponse:
    """``(1 - t) a + t b`` frame by frame, over the frames both share."""
    result = await Lab(service).interpolate(to_input(req.a, "a"), to_input(req.b, "b"), req.t, req.options())
    return LabResponse.of(result, req.subtype)


@_post("/path", PathRequest, PathResponse)
async def path(
    service: ServiceDep, req: Annotated[PathRequest, Depends(body(PathRequest, ("a", "b")))]
) -> PathResponse:
    """``steps`` interpolations from a to b, each decoded."""
    results = await Lab(service).path(to_input(req.a, "a"), to_input(req.b, "b"), req.steps, req.options())
    ts = np.linspace(0.0, 1.0, len(results)).tolist()
    return PathResponse(steps=[LabResponse.of(r, req.subtype) for r in results], t=ts)


@_post("/mix", MixRequest, LabResponse)
async def mix(
    service: ServiceDep, req: Annotated[MixRequest, Depends(body(MixRequest, ("inputs",)))]
) -> LabResponse:
    """A weighted mix of several inputs' frames."""
    inputs = [to_input(x, f"inputs[{i}]") for i, x in enumerate(req.inputs)]
    return LabResponse.of(await Lab(service).mix(inputs, req.weights, req.options()), req.subtype)


@_post("/offset", OffsetRequest, LabResponse)
async def offset(
    service: ServiceDep, req: Annotated[OffsetRequest, Depends(body(OffsetRequest, ("a", "b", "c")))]
) -> LabResponse:
    """``c + alpha (mean_t a - mean_t b)``."""
    a, b, c = (to_input(x, name) for x, name in ((req.a, "a"), (req.b, "b"), (req.c, "c")))
    return LabResponse.of(await Lab(service).offset(a, b, c, req.alpha, req.options()), req.subtype)


@_post("/style", StyleRequest, LabResponse)
async def style(
    service: ServiceDep, req: Annotated[StyleRequest, Depends(body(StyleRequest, ("content", "style")))]
) -> LabResponse:
    """Content's frames moved to style's per-dimension frame mean and std."""
    content, style_ = to_input(req.content, "content"), to_input(req.style, "style")
    return LabResponse.of(await Lab(service).style(content, style_, req.amount, req.options()), req.subtype)


@_post("/sensitivity", SensitivityRequest, AnalysisResponse)
async def sensitivity(
    service: ServiceDep,
    req: Annotated[SensitivityRequest, Depends(body(SensitivityRequest, ("input", "reference")))],
) -> AnalysisResponse:
    """Each dimension moved by +-k std, decoded and measured: table, heat map, ranked, listen."""
    reference = [to_input(x, f"reference[{i}]") for i, x in enumerate(req.reference)]
    options = SensitivityOptions(req.dims, req.k, req.listen)
    lab_options = LabOptions(req.model, req.bandwidth, req.timeout_s)
    result = await Analysis(Lab(service)).sensitivity(
        to_input(req.input, "input"), reference, options, lab_options
    )
    png = await asyncio.to_thread(result.heatmap_png)
    listen = {str(d): b64(wav) for d, wav in result.listen.items()}
    return AnalysisResponse(table=result.table(), png=b64(png), listen=listen)


@_post("/ablation", AblationRequest, AnalysisResponse)
async def ablation(
    service: ServiceDep, req: Annotated[AblationRequest, Depends(body(AblationRequest, ("input",)))]
) -> AnalysisResponse:
    """Each dimension zeroed (or set to its mean), decoded, compared with the unablated decode."""
    lab_options = LabOptions(req.model, req.bandwidth, req.timeout_s)
    result = await Analysis(Lab(service)).ablation(
        to_input(req.input, "input"), req.mode, req.dims, lab_options
    )
    return AnalysisResponse(table=result.table(), png="")


@_post("/statistics", StatisticsRequest, AnalysisResponse)
async def statistics(
    service: ServiceDep, req: Annotated[StatisticsRequest, Depends(body(StatisticsRequest, ("inputs",)))]
) -> AnalysisResponse:
    """Per-dimension mean/std/range, correlation and PCA explained variance of a set's frames."""
    inputs = [to_input(x, f"inputs[{i}]") for i, x in enumerate(req.inputs)]
    stats = await Analysis(Lab(service)).statistics(inputs, LabOptions(req.model, None, req.timeout_s))
    return AnalysisResponse(table=stats.table(), png=b64(await asyncio.to_thread(stats.png)))
