"""Collections: create, list, drop; add (upsert), get and delete items; search by audio, id or
vector; train and list linear probes. Each route parses, calls ``runtime.collections``, maps back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from sonovec.server.http.collection_schemas import (
    AddItemsRequest,
    AddItemsResponse,
    CollectionOut,
    CollectionsResponse,
    CreateCollectionRequest,
    DeletedItemResponse,
    DroppedResponse,
    ItemForm,
    ItemOut,
    ProbeOut,
    ProbesResponse,
    SearchRequest,
    SearchResponse,
    TrainProbeRequest,
)
from sonovec.server.http.deps import CollectionsDep, audio_source, body
from sonovec.server.http.routers._docs import ERRORS, request_body
from sonovec.server.http.schemas import ErrorResponse

router = APIRouter(tags=["collections"])

RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": ErrorResponse, "description": "Unknown collection, item, probe or model."},
    409: {"model": ErrorResponse, "description": "Name taken, or a vector of another embedding space."},
}

_parse_items_json = body(AddItemsRequest, ())
_parse_item_form = body(ItemForm, ("audio",))


async def items_body(request: Request) -> AddItemsRequest:
    """JSON ``{"items": [...]}``, or one item as multipart form fields with an audio file."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return (await _parse_item_form(request)).request()
    return await _parse_items_json(request)


@router.post("/collections", status_code=201, response_model=CollectionOut, responses=RESPONSES,
             openapi_extra=request_body(CreateCollectionRequest))
async def create_collection(
    collections: CollectionsDep,
    req: Annotated[CreateCollectionRequest, Depends(body(CreateCollectionRequest, ()))]
) -> CollectionOut:
    """A new collection, bound to a model's current weights and a pooling."""
    info = await collections.create(req.name, req.options())
    return CollectionOut.of(info)


@router.get("/collections", response_model=CollectionsResponse)
async def list_collections(collections: CollectionsDep) -> CollectionsResponse:
    return CollectionsResponse(collections=[CollectionOut.of(i) for i in await collections.list()])


@router.get("/collections/{name}", response_model=CollectionOut, responses=RESPONSES)
async def get_collection(collections: CollectionsDep, name: str) -> CollectionOut:
    return CollectionOut.of(await collections.info(name))


@router.delete("/collections/{name}", response_model=DroppedResponse, responses=RESPONSES)
async def drop_collection(collections: CollectionsDep, name: str) -> DroppedResponse:
    """Drop the collection, its items and its probes."""
    await collections.drop(name)
    return DroppedResponse(collection=name, dropped=True)


@router.post("/collections/{name}/items", response_model=AddItemsResponse, responses=RESPONSES,
             openapi_extra=request_body(AddItemsRequest))
async def add_items(
    collections: CollectionsDep, name: str, req: Annotated[AddItemsRequest, Depends(items_body)]
) -> AddItemsResponse:
    """Add or replace items by id, from vectors or audio. Answers once the write is durable."""
    items = [
        item.new_item(None if item.audio is None else audio_source(item.audio, f"items[{i}].audio"))
        for i, item in enumerate(req.items)
    ]
    space = None if req.space is None else req.space.claim()
    ids = await collections.upsert(name, items, space=space, timeout_s=req.timeout_s)
    return AddItemsResponse(collection=name, ids=ids, count=(await collections.info(name)).count)


@router.get("/collections/{name}/items/{item_id:path}", response_model=ItemOut, responses=RESPONSES)
async def get_item(collections: CollectionsDep, name: str, item_id: str) -> ItemOut:
    return ItemOut.of(await collections.get(name, item_id))


@router.delete("/collections/{name}/items/{item_id:path}", response_model=DeletedItemResponse,
               responses=RESPONSES)
async def delete_item(collections: CollectionsDep, name: str, item_id: str) -> DeletedItemResponse:
    deleted = await collections.delete(name, [item_id])
    return DeletedItemResponse(collection=name, id=item_id, deleted=deleted > 0)


@router.post("/collections/{name}/search", response_model=SearchResponse, responses=RESPONSES,
             openapi_extra=request_body(SearchRequest))
async def search(
    collections: CollectionsDep,
    name: str, req: Annotated[SearchRequest, Depends(body(SearchRequest, ("audio",)))]
) -> SearchResponse:
    """The k most similar items (cosine) to a recording, a stored item or a vector."""
    query = req.query(None if req.audio is None else audio_source(req.audio))
    result = await collections.search(name, query, req.options(), timeout_s=req.timeout_s)
    return SearchResponse.of(result)


@router.post("/collections/{name}/probes", status_code=201, response_model=ProbeOut, responses=RESPONSES,
             openapi_extra=request_body(TrainProbeRequest))
async def train_probe(
    collections: CollectionsDep,
    name: str, req: Annotated[TrainProbeRequest, Depends(body(TrainProbeRequest, ()))]
) -> ProbeOut:
    """Train a logistic-regression probe on the collection's labels: the next version of ``name``,
    with its cross-validated accuracy and confusion matrix."""
    info = await collections.train_probe(name, req.name, req.options())
    return ProbeOut.of(info)


@router.get("/collections/{name}/probes", response_model=ProbesResponse, responses=RESPONSES)
async def list_probes(collections: CollectionsDep, name: str) -> ProbesResponse:
    return ProbesResponse(probes=[ProbeOut.of(p) for p in await collections.probes(name)])
