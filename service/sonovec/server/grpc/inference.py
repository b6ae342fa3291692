"""``inference.GRPCInferenceService`` (the Open Inference Protocol over gRPC): parse, call
``sonovec.server.v2``, write. Served by the same grpc.aio server as ``sonovec.v1.Sonovec``.

Liveness and readiness are open; the other calls need the API key (metadata, as sonovec.v1) and a
ready runtime. Outputs always travel as ``raw_output_contents``; inputs as raw contents or as the
typed ``contents`` fields. Errors: the gRPC status of ``GRPC_CODE``, the message as details.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from sonovec.inference import grpc_service_pb2 as ipb
from sonovec.inference import grpc_service_pb2_grpc as ipb_grpc
from sonovec.server import v2
from sonovec.server.auth import require_metadata_key
from sonovec.server.core import Service
from sonovec.server.errors import invalid
from sonovec.server.grpc.servicer import deadline, guarded
from sonovec.server.runtime import Runtime

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICE_NAME = ipb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def parameters(params: Mapping[str, ipb.InferParameter]) -> dict[str, Any]:
    """An ``InferParameter`` map as plain values."""
    out: dict[str, Any] = {}
    for name, param in params.items():
        which = param.WhichOneof("parameter_choice")
        if which is not None:
            out[name] = getattr(param, which)
    return out


def inputs(request: ipb.ModelInferRequest) -> list[v2.Tensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise invalid(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs",
            field="raw_input_contents",
            allowed="one per input, in order, or none",
        )
    tensors = []
    for i, item in enumerate(request.inputs):
        if raw:
            tensors.append(v2.tensor_from_raw(item.name, item.datatype, item.shape, raw[i]))
        else:
            tensors.append(v2.tensor_from_contents(item.name, item.datatype, item.shape, item.contents))
    return tensors


class InferenceServicer(ipb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._keys = [key.encode() for key in runtime.settings.api_keys]

    # ---- open ----

    async def ServerLive(self, request: ipb.ServerLiveRequest, context: Any) -> ipb.ServerLiveResponse:
        return ipb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: ipb.ServerReadyRequest, context: Any) -> ipb.ServerReadyResponse:
        return ipb.ServerReadyResponse(ready=self.runtime.ready)

    # ---- keyed ----

    async def ModelReady(self, request: ipb.ModelReadyRequest, context: Any) -> ipb.ModelReadyResponse:
        async def work(service: Service) -> ipb.ModelReadyResponse:
            v2.find_model(service, request.name, request.version)
            return ipb.ModelReadyResponse(ready=True)

        return await self._guard("ModelReady", context, work)

    async def ServerMetadata(
        self, request: ipb.ServerMetadataRequest, context: Any
    ) -> ipb.ServerMetadataResponse:
        async def work(service: Service) -> ipb.ServerMetadataResponse:
            return ipb.ServerMetadataResponse(
                name=v2.SERVER_NAME, version=v2.SERVER_VERSION, extensions=list(v2.EXTENSIONS)
            )

        return await self._guard("ServerMetadata", context, work)

    async def ModelMetadata(
        self, request: ipb.ModelMetadataRequest, context: Any
    ) -> ipb.ModelMetadataResponse:
        async def work(service: Service) -> ipb.ModelMetadataResponse:
            metadata = v2.find_model(service, request.name, request.version).metadata()
            return json_format.ParseDict(metadata, ipb.ModelMetadataResponse())

        return await self._guard("ModelMetadata", context, work)

    async def ModelConfig(self, request: ipb.ModelConfigRequest, context: Any) -> ipb.ModelConfigResponse:
        async def work(service: Service) -> ipb.ModelConfigResponse:
            config = v2.find_model(service, request.name, request.version).config()
            return ipb.ModelConfigResponse(config=json_format.ParseDict(config, ipb.ModelConfig()))

        return await self._guard("ModelConfig", context, work)

    async def ModelInfer(self, request: ipb.ModelInferRequest, context: Any) -> ipb.ModelInferResponse:
        async def work(service: Service) -> ipb.ModelInferResponse:
            parsed = v2.Request(
                model=request.model_name,
                version=request.model_version,
                inputs=inputs(request),
                parameters=parameters(request.parameters),
                outputs=[o.name for o in request.outputs],
                timeout_s=deadline(context),
            )
            outputs = await v2.infer(service, parsed)
            reply = ipb.ModelInferResponse(
                model_name=request.model_name, model_version=v2.VERSION, id=request.id
            )
            for tensor in outputs:
                reply.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
                reply.raw_output_contents.append(tensor.raw())
            return reply

        return await self._guard("ModelInfer", context, work, request)

    # ---- the guard ----

    async def _guard(
        self, name: str, context: grpc.aio.ServicerContext, work: Callable[[Service], Awaitable[T]],
        request: object = None,
    ) -> T:
        return await guarded(f"/{SERVICE_NAME}/{name}", context, lambda: self._admit(context), work,
                             self.runtime.metrics, request)

    def _admit(self, context: grpc.aio.ServicerContext) -> Service:
        require_metadata_key(self._keys, context.invocation_metadata())  # the key first, as REST /v2
        return self.runtime.require_ready()
