from __future__ import annotations

from fastapi import APIRouter

from sonovec.server.core import published_limits
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
        limits=Limits(**published_limits(s)),
    )
