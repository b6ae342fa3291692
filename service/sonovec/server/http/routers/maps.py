"""The explorer's API over collections: a 2-D map, clusters, and an item's kept recording as WAV.
Each route parses, calls ``runtime.collections``, maps back (computations are cached there)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel

from sonovec.server.collections.maps import ClusterOptions, ClusterResult, MapOptions, MapResult
from sonovec.server.http.deps import CollectionsDep
from sonovec.server.http.routers.collections import RESPONSES

router = APIRouter(tags=["explorer"])


class PointOut(BaseModel):
    id: str
    x: float
    y: float
    labels: list[str]
    metadata: dict[str, Any]
    has_audio: bool


class MapResponse(BaseModel):
    collection: str
    method: str
    params: dict[str, Any]
    total: int  # items in the collection; more than len(points) when subsampled
    version: int  # the collection's version (seq) the map was computed at
    keep_audio: str
    cached: bool
    seconds: float
    points: list[PointOut]

    @classmethod
    def of(cls, result: MapResult, keep_audio: str) -> MapResponse:
        p = result.points
        points = [
            PointOut(id=i, x=float(xy[0]), y=float(xy[1]), labels=list(lab), metadata=meta, has_audio=audio)
            for i, xy, lab, meta, audio in zip(p.ids, result.coords.tolist(), p.labels, p.metadata,
                                               result.has_audio, strict=True)
        ]
        return cls(collection=result.collection, method=result.method, params=result.params, total=p.total,
                   version=p.seq, keep_audio=keep_audio, cached=result.cached, seconds=result.seconds,
                   points=points)


class ClusterOut(BaseModel):
    id: int  # -1: HDBSCAN's noise
    size: int
    label: str | None
    purity: float | None


class ClustersResponse(BaseModel):
    collection: str
    method: str
    params: dict[str, Any]
    total: int
    version: int
    cached: bool
    seconds: float
    purity: float | None
    clusters: list[ClusterOut]
    ids: list[str]
    assignments: list[int]

    @classmethod
    def of(cls, result: ClusterResult) -> ClustersResponse:
        clusters = [ClusterOut(id=c.id, size=c.size, label=c.label, purity=c.purity) for c in result.clusters]
        return cls(collection=result.collection, method=result.method, params=result.params,
                   total=result.points.total, version=result.points.seq, cached=result.cached,
                   seconds=result.seconds, purity=result.purity, clusters=clusters, ids=result.points.ids,
                   assignments=result.assignments.tolist())


_MAP, _CLUSTERS = MapOptions(), ClusterOptions()


@router.get("/collections/{name}/map", response_model=MapResponse, responses=RESPONSES)
async def collection_map(
    collections: CollectionsDep, name: str, method: str = _MAP.method, perplexity: float = _MAP.perplexity,
    n_neighbors: int = _MAP.n_neighbors, seed: int = _MAP.seed, max_points: int = _MAP.max_points,
) -> MapResponse:
    """A 2-D map of the items: PCA to 50 dims, then t-SNE (``perplexity``), UMAP (``n_neighbors``)
    or the first two principal components; a subsample of ``max_points`` (by ``seed``) beyond."""
    result = await collections.map(name, MapOptions(method, perplexity, n_neighbors, seed, max_points))
    policy = await collections.audio_policy(name)
    return MapResponse.of(result, policy["keep_audio"])


@router.get("/collections/{name}/clusters", response_model=ClustersResponse, responses=RESPONSES)
async def collection_clusters(
    collections: CollectionsDep, name: str, method: str = _CLUSTERS.method, k: int = _CLUSTERS.k,
    min_cluster_size: int = _CLUSTERS.min_cluster_size, seed: int = _CLUSTERS.seed,
    max_points: int = _CLUSTERS.max_points,
) -> ClustersResponse:
    """Clusters of the embeddings (k-means or HDBSCAN; not of the 2-D map), with label purity."""
    options = ClusterOptions(method, k, min_cluster_size, seed, max_points)
    return ClustersResponse.of(await collections.clusters(name, options))


@router.get("/collections/{name}/items/{item_id:path}/audio", responses={
    **RESPONSES, 200: {"content": {"audio/wav": {}}, "description": "The item's recording as WAV."}})
async def item_audio(collections: CollectionsDep, name: str, item_id: str) -> Response:
    """The item's kept recording (the original as WAV, or its codes decoded); 404 saying why when
    nothing is kept (the collection keeps no audio, or the item was added by vector)."""
    return Response(await collections.audio(name, item_id), media_type="audio/wav")
