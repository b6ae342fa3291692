"""The Open Inference Protocol (KServe v2) over REST, under ``/v2``: parse, call ``sonovec.server.v2``,
write. The semantics (models, tensors, parameters) live there, shared with gRPC.

Binary tensor data extension: a request body may be a JSON header of ``Inference-Header-Content-Length``
bytes followed by the inputs whose ``parameters.binary_data_size`` say how many bytes each takes, in
order. Outputs come back binary the same way when the request asks (``binary_data`` on an output, or
``binary_data_output`` on the request), else as JSON lists. Errors: ``{"error": "message"}`` with the
status of ``v2.HTTP_STATUS``. Health is open; every other route needs the API key, as /v1 does.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from sonovec.server import v2
from sonovec.server.core import Service
from sonovec.server.errors import ErrorKind, SonovecError, invalid, not_found
from sonovec.server.http.deps import get_runtime, require_api_key

log = logging.getLogger(__name__)

HEADER_LENGTH = "inference-header-content-length"
BODY_OVERHEAD = 4 / 3  # as /v1: base64 (or a JSON tensor header) around the audio


def error_response(error: SonovecError) -> JSONResponse:
    """The protocol's error shape: ``{"error": "message"}`` (field and allowed in the text)."""
    headers = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return JSONResponse({"error": str(error)}, status_code=v2.HTTP_STATUS[error.kind], headers=headers)


class V2Route(APIRoute):
    """Every /v2 route answers errors (from dependencies too) in the protocol's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SonovecError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                return error_response(invalid(str(exc.errors()[0].get("msg", "invalid request"))))
            except Exception as exc:
                log.exception("v2 request failed")
                return error_response(
                    SonovecError(ErrorKind.INTERNAL, f"internal error: {type(exc).__name__}")
                )

        return guarded


class V2Error(BaseModel):
    """The protocol's error body."""

    error: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": V2Error, "description": what}
    for code, what in {
        400: "Malformed request or tensors.",
        401: "Missing or wrong API key.",
        404: "Unknown model or version.",
        413: "Body or audio over the limits.",
        415: "Audio that cannot be decoded.",
        429: "Overloaded (Retry-After).",
        503: "Not ready (loading or draining).",
    }.items()
}

router = APIRouter(
    prefix="/v2", tags=["v2 (Open Inference Protocol)"], route_class=V2Route, responses=_ERRORS
)


def _service(request: Request, *, key: bool = True) -> Service:
    if key:
        require_api_key(request)
    return get_runtime(request).require_ready()


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    require_api_key(request)
    return {"name": v2.SERVER_NAME, "version": v2.SERVER_VERSION, "extensions": list(v2.EXTENSIONS)}


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    runtime = get_runtime(request)
    return JSONResponse({"ready": runtime.ready}, status_code=200 if runtime.ready else 503)


@router.get("/models/{model_name}")
@router.get("/models/{model_name}/versions/{version}")
async def model_metadata(request: Request, model_name: str, version: str = "") -> dict[str, Any]:
    return v2.find_model(_service(request), model_name, version).metadata()


@router.get("/models/{model_name}/ready")
@router.get("/models/{model_name}/versions/{version}/ready")
async def model_ready(request: Request, model_name: str, version: str = "") -> dict[str, Any]:
    v2.find_model(_service(request), model_name, version)
    return {"name": model_name, "ready": True}


@router.get("/models/{model_name}/config")
@router.get("/models/{model_name}/versions/{version}/config")
async def model_config(request: Request, model_name: str, version: str = "") -> dict[str, Any]:
    return v2.find_model(_service(request), model_name, version).config()


@router.post("/models/{model_name}/infer")
@router.post("/models/{model_name}/versions/{version}/infer")
async def infer(request: Request, model_name: str, version: str = "") -> Response:
    service = _service(request)
    body = await _read_body(request, service.settings.max_request_bytes)
    header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
    parsed = v2.Request(
        model=model_name,
        version=version,
        inputs=_inputs(header, binary),
        parameters=header.get("parameters") or {},
        outputs=[str(o.get("name")) for o in header.get("outputs") or []],
    )
    outputs = await v2.infer(service, parsed)
    return _response(model_name, header, outputs)


async def _read_body(request: Request, max_audio_bytes: int) -> bytes:
    """The body, refused (413) once it passes the limit while it streams (chunked bodies too):
    the audio limit plus room for the JSON header, as /v1 allows."""
    limit = int(max_audio_bytes * BODY_OVERHEAD) + 64 * 1024
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise SonovecError(
                ErrorKind.TOO_LARGE,
                f"body over {limit} bytes",
                field="body",
                allowed=f"at most {max_audio_bytes} bytes of audio ({limit} bytes of body)",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary data after it (none without the extension's header)."""
    length = len(body)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise invalid(
                f"Inference-Header-Content-Length {header_length!r} for a body of {len(body)} bytes",
                field="Inference-Header-Content-Length",
            )
        length = int(header_length)
    try:
        header = json.loads(body[:length])
    except json.JSONDecodeError as exc:
        raise invalid(
            f"the inference header is not JSON ({exc.msg} at byte {exc.pos})", field="body"
        ) from None
    except UnicodeDecodeError:
        raise invalid("the inference header is not UTF-8 JSON", field="body") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise invalid("the inference header needs an inputs list", field="inputs")
    return header, body[length:]


def _inputs(header: dict[str, Any], binary: bytes) -> list[v2.Tensor]:
    tensors, offset = [], 0
    for item in header["inputs"]:
        if not isinstance(item, dict) or not {"name", "datatype", "shape"} <= item.keys():
            raise invalid("each input needs name, datatype and shape", field="inputs")
        name, datatype, shape = str(item["name"]), str(item["datatype"]), item["shape"]
        if not isinstance(shape, list):
            raise invalid(f"input {name}: shape must be a list", field=name)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is None:
            if "data" not in item:
                raise invalid(f"input {name} has neither data nor binary_data_size", field=name)
            tensors.append(v2.tensor_from_list(name, datatype, shape, item["data"]))
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise invalid(f"input {name}: binary_data_size {size} runs past the body", field=name)
        tensors.append(v2.tensor_from_raw(name, datatype, shape, binary[offset : offset + size]))
        offset += size
    if offset != len(binary):
        raise invalid(f"{len(binary) - offset} bytes of binary data belong to no input", field="body")
    return tensors


def _wants_binary(header: dict[str, Any]) -> dict[str, bool]:
    default = bool((header.get("parameters") or {}).get("binary_data_output", False))
    wanted = {
        str(o.get("name")): bool((o.get("parameters") or {}).get("binary_data", default))
        for o in header.get("outputs") or []
    }
    return {"": default, **wanted}


def _response(model_name: str, header: dict[str, Any], outputs: list[v2.Tensor]) -> Response:
    binary_for = _wants_binary(header)
    described, blobs = [], []
    for tensor in outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary_for.get(tensor.name, binary_for[""]):
            blob = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.json_data()
        described.append(entry)
    reply: dict[str, Any] = {"model_name": model_name, "model_version": v2.VERSION, "outputs": described}
    if header.get("id"):
        reply["id"] = header["id"]
    text = json.dumps(reply, separators=(",", ":")).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )


# Last: whatever else is asked under /v2 (statistics, repository, shared memory) is not served,
# said in the protocol's shape.
@router.api_route("/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
async def not_served(rest: str) -> Response:
    raise not_found(f"/v2/{rest} is not served", allowed="see docs/protocols.md")
