from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from sonovec.server.core import EmbedOptions
from sonovec.server.http.deps import ServiceDep, audio_source, body
from sonovec.server.http.routers._docs import ERRORS, request_body
from sonovec.server.http.schemas import EmbedRequest, EmbedResponse

router = APIRouter(tags=["embed"])


@router.post(
    "/embed", response_model=EmbedResponse, responses=ERRORS, openapi_extra=request_body(EmbedRequest)
)
async def embed(
    service: ServiceDep, req: Annotated[EmbedRequest, Depends(body(EmbedRequest, ("audio",)))]
) -> EmbedResponse:
    """Continuous EnCodec encoder latents, pooled to one vector (frames on request)."""
    options = EmbedOptions(req.model, req.pooling, req.normalize, req.frames, req.timeout_s)
    return EmbedResponse.of(await service.embed(audio_source(req.audio), options))
