"""Classification of a recording, a stored item or a vector: kNN vote over a labelled
collection, or a trained linear probe (``probe``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from sonovec.server.http.collection_schemas import ClassifyRequest, ClassifyResponse
from sonovec.server.http.deps import CollectionsDep, audio_source, body
from sonovec.server.http.routers._docs import request_body
from sonovec.server.http.routers.collections import RESPONSES

router = APIRouter(tags=["classify"])


@router.post("/classify", response_model=ClassifyResponse, responses=RESPONSES,
             openapi_extra=request_body(ClassifyRequest))
async def classify(
    collections: CollectionsDep, req: Annotated[ClassifyRequest, Depends(body(ClassifyRequest, ("audio",)))]
) -> ClassifyResponse:
    """Top labels with scores: by a vote of the k nearest labelled items (``uniform`` or
    ``distance`` weighting), or the probabilities of a named probe."""
    query = req.query(None if req.audio is None else audio_source(req.audio))
    return ClassifyResponse.of(
        await collections.classify(req.collection, query, req.options(), timeout_s=req.timeout_s)
    )
