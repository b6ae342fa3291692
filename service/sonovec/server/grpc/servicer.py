"""The ``sonovec.v1.Sonovec`` servicer: parse, call the core, map errors. Nothing else.

Every method runs through ``_guard``: readiness (UNAVAILABLE while models load or while draining),
the API key (as REST: ``authorization: Bearer KEY`` or ``x-api-key``), the call's deadline passed to
the core as its timeout, and ``SonovecError`` -> gRPC status with the error's kind, field, allowed
and Retry-After as trailing metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from sonovec.server.auth import require_metadata_key
from sonovec.server.budget import Reservation
from sonovec.server.collections.options import ClassifyOptions, CreateOptions, ProbeOptions, SearchOptions
from sonovec.server.core import AudioSource, EmbedOptions, Service
from sonovec.server.errors import GRPC_CODE, ErrorKind, SonovecError, invalid, too_large
from sonovec.server.grpc import convert
from sonovec.server.grpc.lab import LabRpcs
from sonovec.server.metrics import Metrics
from sonovec.server.runtime import Runtime
from sonovec.v1 import collections_pb2 as cpb
from sonovec.v1 import sonovec_pb2 as spb
from sonovec.v1 import sonovec_pb2_grpc as spb_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICE_NAME = spb.DESCRIPTOR.services_by_name["Sonovec"].full_name
VERSION = "0.1.0"
FEATURES = (
    "embed", "embed_stream", "embed_many", "codec", "similarity", "models", "collections", "classify", "lab",
)


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
        return await self._guard(
            name, context, lambda service: method(self, service, request, context), request
        )

    return handler


class SonovecServicer(LabRpcs, spb_grpc.SonovecServicer):
    def __init__(self, runtime: Runtime, grpc_limits: spb.GrpcLimits) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.grpc_limits = grpc_limits  # for Info
        self._keys = [key.encode() for key in self.settings.api_keys]

    # ---- the guard every call goes through ----

    def _admit(self, context: grpc.aio.ServicerContext) -> Service:
        service = self.runtime.require_ready()
        self._authorize(context)
        return service

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        require_metadata_key(self._keys, context.invocation_metadata())

    async def _guard(
        self, name: str, context: grpc.aio.ServicerContext, work: Callable[[Service], Awaitable[T]],
        request: object = None,
    ) -> T:
        return await guarded(
            f"/{SERVICE_NAME}/{name}", context, lambda: self._admit(context), work, self.runtime.metrics,
            request,
        )

    def _observe(self, name: str, code: str, started: float) -> None:
        observe(self.runtime.metrics, f"/{SERVICE_NAME}/{name}", code, started)

    # ---- embeddings ----

    @rpc
    async def Embed(self, service: Service, request: spb.EmbedRequest, context: Any) -> spb.EmbedResponse:
        options = convert.options(request, EmbedOptions, timeout_s=deadline(context))
        result = await service.embed(convert.audio_source(request.audio), options)
        return convert.embed_response(result)

    @rpc
    async def EmbedStream(
        self, service: Service, requests: AsyncIterator[spb.EmbedStreamRequest], context: Any
    ) -> spb.EmbedResponse:
        with service.memory.holding("body") as held:
            start, data = await self._read_stream(requests, held)
            source = AudioSource.from_wire(
                data,
                start.encoding,
                start.sample_rate if start.HasField("sample_rate") else None,
                start.channels if start.HasField("channels") else None,
            )
            options = convert.options(start, EmbedOptions, timeout_s=deadline(context))
            return convert.embed_response(await service.embed(source, options))

    async def _read_stream(
        self, requests: AsyncIterator[spb.EmbedStreamRequest], held: Reservation
    ) -> tuple[Any, bytes]:
        """The first message's options and the audio bytes of the rest, refused as soon as they
        pass ``max_request_bytes`` (so an oversized stream is never held whole); ``held`` grows
        with them (twice: the buffer, then its copy)."""
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
                held.grow_to(2 * len(data))
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
        """The core's ``embed_many``: each result is sent as soon as it is ready."""
        started = time.perf_counter()
        with contextlib.ExitStack() as held:  # the request's bytes, for the stream's lifetime (as guarded)
            try:
                service = self._admit(context)
                held.enter_context(service.memory.holding("body", request.ByteSize()))
                recordings = enumerate(request.recordings)
                sources = [convert.audio_source(a, f"recordings[{i}]") for i, a in recordings]
                options = convert.options(request, EmbedOptions, timeout_s=deadline(context))
                results = service.embed_many(sources, options)
            except SonovecError as exc:
                self._observe("EmbedMany", GRPC_CODE[exc.kind], started)
                await abort(context, exc)
                return
            try:
                async for index, result in results:
                    if isinstance(result, SonovecError):
                        yield spb.EmbedManyResponse(index=index, error=convert.error(result))
                    else:
                        yield spb.EmbedManyResponse(index=index, result=convert.embed_response(result))
            finally:
                self._observe("EmbedMany", "OK", started)

    # ---- codes ----

    @rpc
    async def Encode(self, service: Service, request: spb.EncodeRequest, context: Any) -> spb.EncodeResponse:
        result = await service.encode(
            convert.audio_source(request.audio),
            model=request.model or None,
            timeout_s=deadline(context),
            **convert.given(request, "bandwidth"),
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
        options = convert.options(request, EmbedOptions, timeout_s=deadline(context))
        result = await service.similarity(convert.recordings(request.recordings), options)
        return convert.similarity_response(result)

    @rpc
    async def SelfSimilarity(
        self, service: Service, request: spb.SelfSimilarityRequest, context: Any
    ) -> spb.SelfSimilarityResponse:
        result = await service.self_similarity(
            convert.audio_source(request.audio),
            model=request.model or None,
            timeout_s=deadline(context),
            **convert.given(request, "segment_seconds"),
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
            features=list(FEATURES),
        )

    # ---- collections and classification (runtime.collections) ----

    @rpc
    async def Classify(
        self, service: Service, request: cpb.ClassifyRequest, context: Any
    ) -> cpb.ClassifyResponse:
        result = await self.runtime.collections.classify(
            request.collection,
            convert.query(request),
            convert.options(request, ClassifyOptions),
            timeout_s=deadline(context),
        )
        return convert.classify_response(result)

    @rpc
    async def CreateCollection(
        self, service: Service, request: cpb.CreateCollectionRequest, context: Any
    ) -> cpb.Collection:
        options = convert.options(request, CreateOptions, index=convert.index_spec(request.index))
        info = await self.runtime.collections.create(request.name, options)
        return convert.collection(info)

    @rpc
    async def GetCollection(
        self, service: Service, request: cpb.GetCollectionRequest, context: Any
    ) -> cpb.Collection:
        return convert.collection(await self.runtime.collections.info(request.name))

    @rpc
    async def ListCollections(
        self, service: Service, request: cpb.ListCollectionsRequest, context: Any
    ) -> cpb.ListCollectionsResponse:
        infos = await self.runtime.collections.list()
        return cpb.ListCollectionsResponse(collections=[convert.collection(i) for i in infos])

    @rpc
    async def DropCollection(
        self, service: Service, request: cpb.DropCollectionRequest, context: Any
    ) -> cpb.DropCollectionResponse:
        await self.runtime.collections.drop(request.name)
        return cpb.DropCollectionResponse(collection=request.name, dropped=True)

    @rpc
    async def AddItems(
        self, service: Service, request: cpb.AddItemsRequest, context: Any
    ) -> cpb.AddItemsResponse:
        collections = self.runtime.collections
        items = [convert.new_item(m, i) for i, m in enumerate(request.items)]
        space = convert.space_claim(request.space) if request.HasField("space") else None
        ids = await collections.upsert(request.collection, items, space=space, timeout_s=deadline(context))
        count = (await collections.info(request.collection)).count
        return cpb.AddItemsResponse(collection=request.collection, ids=ids, count=count)

    @rpc
    async def GetItem(self, service: Service, request: cpb.GetItemRequest, context: Any) -> cpb.Item:
        return convert.item(await self.runtime.collections.get(request.collection, request.id))

    @rpc
    async def DeleteItems(
        self, service: Service, request: cpb.DeleteItemsRequest, context: Any
    ) -> cpb.DeleteItemsResponse:
        deleted = await self.runtime.collections.delete(request.collection, list(request.ids))
        return cpb.DeleteItemsResponse(collection=request.collection, deleted=deleted)

    @rpc
    async def Search(self, service: Service, request: cpb.SearchRequest, context: Any) -> cpb.SearchResponse:
        result = await self.runtime.collections.search(
            request.collection,
            convert.query(request),
            convert.options(request, SearchOptions),
            timeout_s=deadline(context),
        )
        return convert.search_response(result)

    @rpc
    async def TrainProbe(self, service: Service, request: cpb.TrainProbeRequest, context: Any) -> cpb.Probe:
        info = await self.runtime.collections.train_probe(
            request.collection,
            request.name,
            convert.options(request, ProbeOptions),
        )
        return convert.probe(info)

    @rpc
    async def ListProbes(
        self, service: Service, request: cpb.ListProbesRequest, context: Any
    ) -> cpb.ListProbesResponse:
        probes = await self.runtime.collections.probes(request.collection)
        return cpb.ListProbesResponse(probes=[convert.probe(p) for p in probes])


async def guarded(
    method: str,
    context: grpc.aio.ServicerContext,
    admit: Callable[[], Service],
    work: Callable[[Service], Awaitable[T]],
    metrics: Metrics,
    request: object = None,
) -> T:
    """Every unary call of every gRPC service: ``admit`` (readiness, key), then ``work``; a
    ``SonovecError`` ends the call with its status, a bug with INTERNAL and a request id (logged,
    no exception text), a cancelled call is counted as such.

    A unary ``request`` message holds its size of the process's memory budget while the call runs
    (gRPC has received it whole before any handler runs), as REST bodies do: past the budget the
    call gets RESOURCE_EXHAUSTED with Retry-After, and decodes of other requests see it taken."""
    started = time.perf_counter()
    size = request.ByteSize() if isinstance(request, Message) else 0
    try:
        service = admit()
        with service.memory.holding("body", size):
            result = await work(service)
    except SonovecError as exc:
        error = exc
    except asyncio.CancelledError:  # the caller went away, or its deadline passed
        observe(metrics, method, "CANCELLED", started)
        raise
    except Exception:  # a bug: log it with an id, tell the caller the id only
        request_id = uuid.uuid4().hex
        log.exception("%s failed (request id %s)", method, request_id)
        error = SonovecError(ErrorKind.INTERNAL, f"internal error (request id {request_id})")
        error.request_id = request_id
    else:
        observe(metrics, method, "OK", started)
        return result
    observe(metrics, method, GRPC_CODE[error.kind], started)
    await abort(context, error)
    raise AssertionError("unreachable: abort raises")


def observe(metrics: Metrics, method: str, code: str, started: float) -> None:
    metrics.requests.labels(method, code).inc()
    metrics.latency.labels(method).observe(time.perf_counter() - started)


async def abort(context: grpc.aio.ServicerContext, error: SonovecError) -> None:
    """End the call with the error's gRPC status: its message as the details (as REST's
    error.message), the rest in trailing metadata. Raises."""
    code = getattr(grpc.StatusCode, GRPC_CODE[error.kind])
    await context.abort(code, error.message, trailing_metadata=convert.trailing_metadata(error))
