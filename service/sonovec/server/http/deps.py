"""FastAPI dependencies: the core service and collections (from the runtime), API-key auth, and
request bodies (JSON or multipart)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from sonovec.server.auth import require_key
from sonovec.server.collections import Collections
from sonovec.server.core import AudioSource, Service
from sonovec.server.errors import invalid
from sonovec.server.http.schemas import AudioIn
from sonovec.server.runtime import Runtime

M = TypeVar("M", bound=BaseModel)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_service(request: Request) -> Service:
    return get_runtime(request).require_ready()


def get_collections(request: Request) -> Collections:
    runtime = get_runtime(request)
    runtime.require_ready()
    return runtime.collections


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ServiceDep = Annotated[Service, Depends(get_service)]
CollectionsDep = Annotated[Collections, Depends(get_collections)]


def require_api_key(request: Request) -> None:
    keys: list[str] = get_runtime(request).settings.api_keys
    require_key(
        [key.encode() for key in keys],
        request.headers.get("x-api-key", ""),
        request.headers.get("authorization", ""),
        allowed="'Authorization: Bearer KEY' or 'x-api-key: KEY'",
    )


def audio_source(audio: AudioIn, field: str = "audio") -> AudioSource:
    return AudioSource.from_wire(audio.data, audio.encoding, audio.sample_rate, audio.channels, field)


def body(model: type[M], audio_fields: tuple[str, ...]) -> Callable[[Request], Awaitable[M]]:
    """Parse a request body as JSON (the API's own shape), or as multipart form data for curl:
    files under the audio field names (``-F audio=@a.wav``), other fields as form values
    (``-F pooling=mean_std``) or one JSON object under ``options``."""

    async def parse(request: Request) -> M:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            return await _from_form(request, model, audio_fields)
        return _validate(model, _json_body(await request.body()))

    return parse


_JSON_RULE = "application/json (UTF-8), or multipart/form-data with audio files"


def _json_body(raw: bytes) -> Any:
    """Parse a JSON body; malformed, non-UTF-8 or too deeply nested bodies (the parser's
    recursion limit) are INVALID. Stored parts have their own, lower bounds (``spec.py``)."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        reason = {UnicodeDecodeError: "is not UTF-8", RecursionError: "is nested too deeply"}.get(
            type(exc), "is not JSON"
        )
        raise invalid(f"body {reason}", field="body", allowed=_JSON_RULE) from None


async def _read_form(request: Request) -> FormData:
    try:
        return await request.form()
    except (MultiPartException, ValueError, UnicodeDecodeError) as exc:
        raise invalid(
            f"multipart body is malformed: {type(exc).__name__}", field="body", allowed=_JSON_RULE
        ) from None


async def _from_form(request: Request, model: type[M], audio_fields: tuple[str, ...]) -> M:
    form = await _read_form(request)
    values: dict[str, Any] = {}
    files: dict[str, list[bytes]] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files.setdefault(key, []).append(await value.read())
        elif key == "options":
            try:
                values.update(json.loads(value))
            except (json.JSONDecodeError, RecursionError, TypeError, ValueError):
                raise invalid("options is not a JSON object", field="options") from None
        else:
            values[key] = value
    unknown = set(files) - set(audio_fields)
    if unknown:
        raise invalid(
            f"unexpected file fields {sorted(unknown)}", field="body", allowed=", ".join(audio_fields)
        )
    extra = [name for name, blobs in files.items() if name != "recordings" and len(blobs) > 1]
    if extra:
        raise invalid(f"{len(files[extra[0]])} files under {extra[0]!r}", field=extra[0], allowed="one file")
    placeholder = {"data": ""}
    for name in audio_fields:
        count = len(files.get(name, []))
        if count:
            values[name] = [placeholder] * count if name == "recordings" else placeholder
    parsed = _validate(model, values)
    updates: dict[str, Any] = {}
    for name, blobs in files.items():
        audios = [
            AudioIn.model_construct(data=b, encoding="auto", sample_rate=None, channels=None) for b in blobs
        ]
        updates[name] = audios if name == "recordings" else audios[0]
    return parsed.model_copy(update=updates)


def _validate(model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except RecursionError:
        raise invalid("body is nested too deeply", field="body", allowed=_JSON_RULE) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise invalid(
            f"{first['msg']} ({len(exc.errors())} problem(s))",
            field=where,
            allowed=f"see the {model.__name__} schema at /docs",
        ) from None
