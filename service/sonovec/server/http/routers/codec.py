from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Response

from sonovec.server.errors import invalid
from sonovec.server.http.deps import ServiceDep, audio_source, body
from sonovec.server.http.routers._docs import ERRORS, request_body
from sonovec.server.http.schemas import DecodeRequest, EncodeRequest, EncodeResponse, ModelOut

router = APIRouter(tags=["codec"])


@router.post(
    "/encode", response_model=EncodeResponse, responses=ERRORS, openapi_extra=request_body(EncodeRequest)
)
async def encode(
    service: ServiceDep, req: Annotated[EncodeRequest, Depends(body(EncodeRequest, ("audio",)))]
) -> EncodeResponse:
    """EnCodec's discrete RVQ codes at a bandwidth, with each segment's scale."""
    result = await service.encode(
        audio_source(req.audio), model=req.model, bandwidth=req.bandwidth, timeout_s=req.timeout_s
    )
    return EncodeResponse.of(result)


@router.post(
    "/decode",
    response_class=Response,
    responses={**ERRORS, 200: {"content": {"audio/wav": {}}, "description": "WAV at the model's rate."}},
    openapi_extra=request_body(DecodeRequest),
)
async def decode(
    service: ServiceDep, req: Annotated[DecodeRequest, Depends(body(DecodeRequest, ()))]
) -> Response:
    """Audio reconstructed from codes (overlap-add as EnCodec does), as WAV. Model info in headers."""
    codes = [_codes_array(s.codes, f"segments[{i}].codes") for i, s in enumerate(req.segments)]
    result = await service.decode(
        codes,
        [s.scale for s in req.segments],
        model=req.model,
        num_samples=req.num_samples,
        timeout_s=req.timeout_s,
        made_at=(req.sample_rate, req.segment_stride),
    )
    return Response(
        result.wav_bytes(req.subtype),
        media_type="audio/wav",
        headers=model_headers(ModelOut.of(result.model)),
    )


def model_headers(model: ModelOut) -> dict[str, str]:
    headers = {
        "x-sonovec-model": model.name,
        "x-sonovec-weights-fingerprint": model.weights_fingerprint,
        "x-sonovec-pretrained": str(model.pretrained).lower(),
    }
    if model.warning:
        headers["x-sonovec-warning"] = model.warning
    return headers


def _codes_array(rows: list[list[int]], field: str) -> np.ndarray:
    """``[K, F]`` int64 from JSON rows: equal lengths, each code within int64 (range checks follow)."""
    allowed = "a [K, F] array: K rows of F integer codes"
    if len({len(row) for row in rows}) > 1:
        raise invalid("rows of unequal length", field=field, allowed=allowed)
    try:
        return np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)
    except (OverflowError, ValueError):
        raise invalid("codes out of range", field=field, allowed=allowed) from None
