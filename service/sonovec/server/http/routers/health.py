from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sonovec.server.http.deps import get_runtime

router = APIRouter(tags=["health"])


@router.get("/v1/health/live")
async def live() -> dict[str, str]:
    """200 while the process serves HTTP. Cheap: touches no model."""
    return {"status": "live"}


@router.get("/v1/health/ready", responses={503: {"description": "Loading, warming up or draining."}})
async def ready(request: Request) -> Response:
    """200 once every model is loaded and warm; 503 while loading or draining."""
    runtime = get_runtime(request)
    if not runtime.ready:
        return JSONResponse({"status": runtime.state.value}, status_code=503)
    return JSONResponse({"status": "ready", "models": list(runtime.settings.models)})


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = get_runtime(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
