from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from sonovec.server import plots
from sonovec.server.core import EmbedOptions
from sonovec.server.http.deps import ServiceDep, audio_source, body
from sonovec.server.http.routers._docs import ERRORS, request_body
from sonovec.server.http.routers.codec import model_headers
from sonovec.server.http.schemas import (
    ModelOut,
    SelfSimilarityRequest,
    SelfSimilarityResponse,
    SimilarityRequest,
    SimilarityResponse,
)

router = APIRouter(tags=["similarity"])


@router.post(
    "/similarity",
    response_model=SimilarityResponse,
    responses=ERRORS,
    openapi_extra=request_body(SimilarityRequest),
)
async def similarity(
    service: ServiceDep, req: Annotated[SimilarityRequest, Depends(body(SimilarityRequest, ("recordings",)))]
) -> SimilarityResponse:
    """Cosine similarity between every pair of recordings (pooled, L2-normalised embeddings)."""
    sources = [audio_source(a, f"recordings[{i}]") for i, a in enumerate(req.recordings)]
    result = await service.similarity(sources, EmbedOptions(req.model, req.pooling, timeout_s=req.timeout_s))
    return SimilarityResponse(model=ModelOut.of(result.model), matrix=result.matrix.tolist())


@router.post(
    "/similarity/self",
    response_model=SelfSimilarityResponse,
    responses={
        **ERRORS,
        200: {
            "content": {"application/json": {}, "image/png": {}},
            "description": "The matrix as JSON, or as a picture with 'Accept: image/png'.",
        },
    },
    openapi_extra=request_body(SelfSimilarityRequest),
)
async def self_similarity(
    service: ServiceDep,
    req: Annotated[SelfSimilarityRequest, Depends(body(SelfSimilarityRequest, ("audio",)))],
    request: Request,
) -> SelfSimilarityResponse | Response:
    """A recording's segment-by-segment self-similarity matrix (segments of ``segment_seconds``);
    as a PNG heat map when the request says ``Accept: image/png``."""
    result = await service.self_similarity(
        audio_source(req.audio), segment_seconds=req.segment_seconds, model=req.model, timeout_s=req.timeout_s
    )
    if "image/png" in request.headers.get("accept", ""):
        title = f"self-similarity, {result.segment_seconds:g} s segments ({result.model.name})"
        if not result.model.pretrained:
            title += "\nRANDOM-INIT WEIGHTS"
        png = await asyncio.to_thread(plots.similarity_png, result.matrix, result.segment_starts_s, title)
        return Response(png, media_type="image/png", headers=model_headers(ModelOut.of(result.model)))
    return SelfSimilarityResponse(
        model=ModelOut.of(result.model),
        matrix=result.matrix.tolist(),
        segment_seconds=result.segment_seconds,
        segment_starts_s=result.segment_starts_s.tolist(),
    )
