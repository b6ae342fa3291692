from __future__ import annotations

from fastapi import APIRouter

from sonovec.server.audio import SUPPORTED_FORMATS
from sonovec.server.http.deps import ServiceDep
from sonovec.server.http.schemas import Limits, ModelOut, ModelsResponse

router = APIRouter(tags=["models"])


@router.get("/models", response_model=ModelsResponse)
async def models(service: ServiceDep) -> ModelsResponse:
    """What is loaded, its weights (fingerprint, pretrained or not), and the limits on input."""
    s = service.settings
    infos = [ModelOut.of(info) for info in service.infos.values()]
    return ModelsResponse(
        models=infos,
        default_model=s.models[0],
        random_weights=any(not info.pretrained for info in infos),
        limits=Limits(
            max_request_bytes=s.max_request_bytes,
            max_audio_seconds=s.max_audio_seconds,
            max_channels=s.max_channels,
            max_recordings=s.max_recordings,
            max_batch_seconds=s.max_batch_seconds,
            max_queue_seconds=s.max_queue_seconds,
            request_timeout_s=s.request_timeout_s,
            formats=list(SUPPORTED_FORMATS),
        ),
    )
