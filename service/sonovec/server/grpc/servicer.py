"""The ``sonovec.v1.Sonovec`` servicer: parse, call the core, map errors. Nothing else.

Every method runs through ``_guard``: readiness (UNAVAILABLE while models load or while draining),
the API key (as REST: ``authorization: Bearer KEY`` or ``x-api-key``), the call's deadline passed to
the core as its timeout, and ``SonovecError`` -> gRPC status with the error's kind, field, allowed
and Retry-After as trailing metadata.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from sonovec.server.auth import require_key
from sonovec.server.core import AudioSource, EmbedOptions, Service
from sonovec.server.errors import GRPC_CODE, ErrorKind, SonovecError, invalid, too_large
from sonovec.server.grpc import convert
from sonovec.server.settings import Settings
from sonovec.v1 import collections_pb2 as cpb
from sonovec.v1 import sonovec_pb2 as spb
from sonovec.v1 import sonovec_pb2_grpc as spb_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Sonovec"].full_name
VERSION = "0.1.0"
FEATURES = ("embed", "embed_stream", "embed_many", "codec", "similarity", "models")
_NOT_READY_RETRY_S = 5.0


def deadline(context: grpc.aio.ServicerContext) -> float | None:
    """Seconds left of the call's deadline (None without one), for the core's ``timeout_s``."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise SonovecError(ErrorKind.DEADLINE, "the call's deadline passed before its work started")
    return remaining


def rpc(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """A unary (or client-streaming) method ``(self, service, request, context)`` as a gRPC
    handler ``(self, request, context)`` behind ``_guard``."""
    name = method.__name__

    @functools.wraps(method)
    async def handler(self: SonovecServicer, request: Any, context: grpc.aio.ServicerContext) -> T:
        return await self._guard(name, context, lambda service: method(self, service, request, context))

    return handler


class SonovecServicer(spb_grpc.SonovecServicer):
    def __init__(
        self, settings: Settings, get_service: Callable[[], Service | None], grpc_limits: Any
    ) -> None:
        self.settings = settings
        self.get_service = get_service
        self.grpc_limits = grpc_limits  # sonovec.v1.GrpcLimits, for Info
        self._keys = [key.encode() for key in settings.api_keys]

    # ---- the guard every call goes through ----

    def _admit(self, context: grpc.aio.ServicerContext) -> Service:
        service = self.get_service()
        if service is None or not service.ready:
            reason = "draining" if service is not None and service.draining else "models are loading"
            raise SonovecError(ErrorKind.UNAVAILABLE, f"not ready: {reason}", retry_after=_NOT_READY_RETRY_S)
        self._authorize(context)
        return service

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self._keys:
            return
        metadata = {key.lower(): value for key, value in context.invocation_metadata() or ()}
        require_key(
            self._keys,
            metadata.get("x-api-key", ""),
            metadata.get("authorization", ""),
            allowed="metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'",
        )

    async def _guard(
        self, name: str, context: grpc.aio.ServicerContext, work: Callable[[Service], Awaitable[T]]
    ) -> T:
        started = time.perf_counter()
        try:
            result = await work(self._admit(context))
        except SonovecError as exc:
            error = exc
        except Unimplemented as exc:
            self._observe(name, "UNIMPLEMENTED", started)
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                str(exc),
                trailing_metadata=(("sonovec-error-kind", "unimplemented"),),
            )
            raise
        except asyncio.CancelledError:  # the caller went away, or its deadline passed
            self._observe(name, "CANCELLED", started)
            raise
        except Exception:  # a bug: log it with an id, tell the caller the id only
            request_id = uuid.uuid4().hex
            log.exception("%s failed (request id %s)", name, request_id)
            error = SonovecError(ErrorKind.INTERNAL, f"internal error (request id {request_id})")
            error.request_id = request_id
        else:
            self._observe(name, "OK", started)
            return result
        self._observe(name, GRPC_CODE[error.kind], started)
        await abort(context, error)
        raise AssertionError("unreachable: abort raises")

    def _observe(self, name: str, code: str, started: float) -> None:
        service = self.get_service()
        if service is not None:
            method = f"/{SERVICE_NAME}/{name}"
            service.metrics.requests.labels(method, code).inc()
            service.metrics.latency.labels(method).observe(time.perf_counter() - started)

    # ---- embeddings ----

    @rpc
    async def Embed(self, service: Service, request: spb.EmbedRequest, context: Any) -> spb.EmbedResponse:
        options = _embed_options(request, deadline(context))
        result = await service.embed(convert.audio_source(request.audio), options)
        return convert.embed_response(result)

    @rpc
    async def EmbedStream(
        self, service: Service, requests: AsyncIterator[spb.EmbedStreamRequest], context: Any
    ) -> spb.EmbedResponse:
        start, data = await self._read_stream(requests)
        source = AudioSource.from_wire(
            data,
            start.encoding,
            start.sample_rate if start.HasField("sample_rate") else None,
            start.channels if start.HasField("channels") else None,
        )
        options = _embed_options(start, deadline(context))
        return convert.embed_response(await service.embed(source, options))

    async def _read_stream(self, requests: AsyncIterator[spb.EmbedStreamRequest]) -> tuple[Any, bytes]:
        """The first message's options and the audio bytes of the rest, refused as soon as they
        pass ``max_request_bytes`` (so an oversized stream is never held whole)."""
        limit = self.settings.max_request_bytes
        start = None
        data = bytearray()
        async for message in requests:
            part = message.WhichOneof("part")
            if start is None:
                if part != "start":
                    raise invalid(
                        "the first message must be start", field="start", allowed="start, then chunks"
                    )
                start = message.start
            elif part == "chunk":
                data += message.chunk
                if len(data) > limit:
                    raise too_large(
                        f"audio stream passed {limit} bytes", field="audio", allowed=f"at most {limit} bytes"
                    )
            else:
                raise invalid("start may only come first", field="start", allowed="start, then chunks")
        if start is None:
            raise invalid("empty stream", field="start", allowed="start, then chunks")
        return start, bytes(data)

    async def EmbedMany(
        self, request: spb.EmbedManyRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.EmbedManyResponse]:
        """Every recording embedded at once (their windows batch together); each result is sent
        as soon as it is ready. A bad recording fails only its own item."""
        started = time.perf_counter()
        try:
            service = self._admit(context)
            options = _embed_options(request, deadline(context))
            service.backend(options.model)  # an unknown model fails the call, not every item
            _check_count(len(request.recordings), self.settings.max_recordings)
        except SonovecError as exc:
            self._observe("EmbedMany", GRPC_CODE[exc.kind], started)
            await abort(context, exc)
            return
        tasks = [
            asyncio.ensure_future(_embed_item(service, i, audio, options))
            for i, audio in enumerate(request.recordings)
        ]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                task.cancel()
            self._observe("EmbedMany", "OK", started)

    # ---- codes ----

    @rpc
    async def Encode(self, service: Service, request: spb.EncodeRequest, context: Any) -> spb.EncodeResponse:
        bandwidth = request.bandwidth if request.HasField("bandwidth") else 6.0
        result = await service.encode(
            convert.audio_source(request.audio),
            model=request.model or None,
            bandwidth=bandwidth,
            timeout_s=deadline(context),
        )
        return convert.encode_response(result)

    @rpc
    async def Decode(self, service: Service, request: spb.DecodeRequest, context: Any) -> spb.DecodeResponse:
        wav_subtype = convert.subtype(request.subtype)
        codes, scales = convert.segments(request)
        result = await service.decode(
            codes,
            scales,
            model=request.model or None,
            num_samples=request.num_samples if request.HasField("num_samples") else None,
            timeout_s=deadline(context),
        )
        return convert.decode_response(result, wav_subtype)

    # ---- similarity ----

    @rpc
    async def Similarity(
        self, service: Service, request: spb.SimilarityRequest, context: Any
    ) -> spb.SimilarityResponse:
        options = EmbedOptions(request.model or None, request.pooling or "mean", timeout_s=deadline(context))
        result = await service.similarity(convert.recordings(request.recordings), options)
        return convert.similarity_response(result)

    @rpc
    async def SelfSimilarity(
        self, service: Service, request: spb.SelfSimilarityRequest, context: Any
    ) -> spb.SelfSimilarityResponse:
        segment_seconds = request.segment_seconds if request.HasField("segment_seconds") else 1.0
        result = await service.self_similarity(
            convert.audio_source(request.audio),
            segment_seconds=segment_seconds,
            model=request.model or None,
            timeout_s=deadline(context),
        )
        return convert.self_similarity_response(result)

    # ---- what is served ----

    @rpc
    async def Models(self, service: Service, request: spb.ModelsRequest, context: Any) -> spb.ModelsResponse:
        return convert.models_response(service)

    @rpc
    async def Info(self, service: Service, request: spb.InfoRequest, context: Any) -> spb.InfoResponse:
        return spb.InfoResponse(
            version=VERSION,
            models=list(service.backends),
            default_model=self.settings.models[0],
            limits=convert.limits(self.settings),
            grpc=self.grpc_limits,
            auth_required=bool(self._keys),
            features=[*FEATURES, *(("collections", "classify") if hasattr(service, "collections") else ())],
        )

    # ---- collections and classification (service.collections) ----

    @rpc
    async def Classify(
        self, service: Service, request: cpb.ClassifyRequest, context: Any
    ) -> cpb.ClassifyResponse:
        collections = _collections(service)
        query = convert.query(request)
        top = _bounded(request, "top", 5, 1, 1000)
        if request.HasField("probe"):
            version = _bounded(request, "version", None, 1, 2**31)
            result = await collections.classify_with_probe(
                request.collection,
                request.probe,
                query,
                version=version,
                top=top,
                timeout_s=deadline(context),
            )
        else:
            result = await collections.classify(
                request.collection,
                query,
                k=_bounded(request, "k", 10, 0, 2**31),
                weighting=request.weighting or "distance",
                classes=list(request.classes) or None,
                top=top,
                timeout_s=deadline(context),
            )
        return convert.classify_response(result)

    @rpc
    async def CreateCollection(
        self, service: Service, request: cpb.CreateCollectionRequest, context: Any
    ) -> cpb.Collection:
        if len(request.description) > 1000:
            raise invalid("description too long", field="description", allowed="at most 1000 characters")
        info = await _collections(service).create(
            request.name,
            model=request.model or None,
            pooling=request.pooling or "mean",
            normalize=request.normalize if request.HasField("normalize") else True,
            index=convert.index_spec(request.index),
            description=request.description,
        )
        return convert.collection(info)

    @rpc
    async def GetCollection(
        self, service: Service, request: cpb.GetCollectionRequest, context: Any
    ) -> cpb.Collection:
        return convert.collection(await _collections(service).info(request.name))

    @rpc
    async def ListCollections(
        self, service: Service, request: cpb.ListCollectionsRequest, context: Any
    ) -> cpb.ListCollectionsResponse:
        infos = await _collections(service).list()
        return cpb.ListCollectionsResponse(collections=[convert.collection(i) for i in infos])

    @rpc
    async def DropCollection(
        self, service: Service, request: cpb.DropCollectionRequest, context: Any
    ) -> cpb.DropCollectionResponse:
        await _collections(service).drop(request.name)
        return cpb.DropCollectionResponse(collection=request.name, dropped=True)

    @rpc
    async def AddItems(
        self, service: Service, request: cpb.AddItemsRequest, context: Any
    ) -> cpb.AddItemsResponse:
        collections = _collections(service)
        items = [convert.new_item(m, i) for i, m in enumerate(request.items)]
        space = convert.space_claim(request.space) if request.HasField("space") else None
        ids = await collections.upsert(request.collection, items, space=space, timeout_s=deadline(context))
        count = (await collections.info(request.collection)).count
        return cpb.AddItemsResponse(collection=request.collection, ids=ids, count=count)

    @rpc
    async def GetItem(self, service: Service, request: cpb.GetItemRequest, context: Any) -> cpb.Item:
        return convert.item(await _collections(service).get(request.collection, request.id))

    @rpc
    async def DeleteItems(
        self, service: Service, request: cpb.DeleteItemsRequest, context: Any
    ) -> cpb.DeleteItemsResponse:
        deleted = await _collections(service).delete(request.collection, list(request.ids))
        return cpb.DeleteItemsResponse(collection=request.collection, deleted=deleted)

    @rpc
    async def Search(self, service: Service, request: cpb.SearchRequest, context: Any) -> cpb.SearchResponse:
        result = await _collections(service).search(
            request.collection,
            convert.query(request),
            k=_bounded(request, "k", 10, 0, 2**31),
            labels=list(request.labels) or None,
            ef_search=_bounded(request, "ef_search", None, 1, 4096),
            nprobe=_bounded(request, "nprobe", None, 1, 65536),
            timeout_s=deadline(context),
        )
        return convert.search_response(result)

    @rpc
    async def TrainProbe(self, service: Service, request: cpb.TrainProbeRequest, context: Any) -> cpb.Probe:
        info = await _collections(service).train_probe(
            request.collection,
            request.name,
            classes=list(request.classes) or None,
            c=request.c if request.HasField("c") else 1.0,
            folds=_bounded(request, "folds", 5, 2, 20),
        )
        return convert.probe(info)

    @rpc
    async def ListProbes(
        self, service: Service, request: cpb.ListProbesRequest, context: Any
    ) -> cpb.ListProbesResponse:
        probes = await _collections(service).probes(request.collection)
        return cpb.ListProbesResponse(probes=[convert.probe(p) for p in probes])


async def abort(context: grpc.aio.ServicerContext, error: SonovecError) -> None:
    """End the call with the error's gRPC status: its message as the details (as REST's
    error.message), the rest in trailing metadata. Raises."""
    code = getattr(grpc.StatusCode, GRPC_CODE[error.kind])
    await context.abort(code, error.message, trailing_metadata=convert.trailing_metadata(error))


class Unimplemented(Exception):
    """A method this server's core does not have."""


def _collections(service: Service) -> Any:
    manager = getattr(service, "collections", None)
    if manager is None:
        raise Unimplemented("collections and classification are not in this server's core")
    return manager


def _bounded(message: Any, name: str, default: int | None, low: int, high: int) -> int | None:
    """An optional integer field, checked against REST's bounds for it."""
    if not message.HasField(name):
        return default
    value = int(getattr(message, name))
    if not low <= value <= high:
        raise invalid(f"{name} = {value}", field=name, allowed=f"{low} to {high}")
    return value


def _embed_options(message: Any, timeout_s: float | None) -> EmbedOptions:
    normalize = message.normalize if message.HasField("normalize") else None
    options = convert.embed_options(message.model, message.pooling, normalize, message.frames)
    return EmbedOptions(options.model, options.pooling, options.normalize, options.frames, timeout_s)


def _check_count(count: int, limit: int) -> None:
    if not 1 <= count <= limit:
        raise invalid(f"got {count} recordings", field="recordings", allowed=f"1 to {limit} recordings")


async def _embed_item(
    service: Service, index: int, audio: Any, options: EmbedOptions
) -> spb.EmbedManyResponse:
    try:
        result = await service.embed(convert.audio_source(audio, f"recordings[{index}]"), options)
    except SonovecError as exc:
        return spb.EmbedManyResponse(index=index, error=convert.error(exc))
    except Exception as exc:
        log.exception("EmbedMany item %d failed", index)
        return spb.EmbedManyResponse(
            index=index,
            error=convert.error(SonovecError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}")),
        )
    return spb.EmbedManyResponse(index=index, result=convert.embed_response(result))
