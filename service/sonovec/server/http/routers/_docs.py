"""OpenAPI for bodies parsed by ``deps.body`` (JSON, or multipart for curl)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from sonovec.server.http.schemas import ErrorResponse


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "description": "Audio files under the audio field names; "
                        "other fields as form values, or one JSON object under 'options'.",
                    }
                },
            },
        }
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or unknown API key.",
        404: "Unknown model.",
        413: "Over a stated limit (bytes, seconds, channels).",
        415: "Audio that cannot be decoded.",
        422: "Invalid input: what was wrong and what is allowed.",
        429: "Queue full: retry after the Retry-After header.",
        503: "Not ready or draining.",
        504: "Deadline passed.",
    }.items()
}


def install_openapi(app: FastAPI) -> None:
    """The document FastAPI makes, with the models that ``request_body`` schemas nest (their
    ``$defs``: AudioIn, ItemIn, ...) moved into ``components.schemas``, where their references point."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    content = operation.get("requestBody", {}).get("content", {})
                    for media in content.values():
                        schemas.update(media.get("schema", {}).pop("$defs", {}))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
