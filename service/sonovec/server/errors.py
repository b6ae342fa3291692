"""The project's one error type, and how each transport spells it.

Everything below the transports raises ``SonovecError``; the FastAPI and gRPC edges map its kind
to a status (``HTTP_STATUS``, ``GRPC_CODE``) and a structured body (``to_dict``).
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorKind(str, Enum):
    INVALID = "invalid_argument"  # malformed or unusable input
    TOO_LARGE = "payload_too_large"  # over a stated limit (bytes, seconds, channels)
    UNSUPPORTED = "unsupported_media_type"  # audio we cannot decode
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"  # REST only: a known path, another method
    CONFLICT = "conflict"  # e.g. a collection that already exists, or another embedding space
    UNAUTHENTICATED = "unauthenticated"
    OVERLOADED = "overloaded"  # queue full: retry after ``retry_after`` seconds
    UNAVAILABLE = "unavailable"  # not ready, draining, or a dependency down
    DEADLINE = "deadline_exceeded"
    CANCELLED = "cancelled"
    INTERNAL = "internal"  # a bug or a backend failure; never for bad input


HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 422,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNSUPPORTED: 415,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.DEADLINE: 504,
    ErrorKind.CANCELLED: 499,
    ErrorKind.INTERNAL: 500,
}

# grpc.StatusCode member names, so this module does not import grpc.
GRPC_CODE: dict[ErrorKind, str] = {
    ErrorKind.INVALID: "INVALID_ARGUMENT",
    ErrorKind.TOO_LARGE: "INVALID_ARGUMENT",
    ErrorKind.UNSUPPORTED: "INVALID_ARGUMENT",
    ErrorKind.NOT_FOUND: "NOT_FOUND",
    ErrorKind.METHOD_NOT_ALLOWED: "UNIMPLEMENTED",
    ErrorKind.CONFLICT: "FAILED_PRECONDITION",
    ErrorKind.UNAUTHENTICATED: "UNAUTHENTICATED",
    ErrorKind.OVERLOADED: "RESOURCE_EXHAUSTED",
    ErrorKind.UNAVAILABLE: "UNAVAILABLE",
    ErrorKind.DEADLINE: "DEADLINE_EXCEEDED",
    ErrorKind.CANCELLED: "CANCELLED",
    ErrorKind.INTERNAL: "INTERNAL",
}


class SonovecError(Exception):
    """An error a caller can act on: what was wrong (``message``), where (``field``), and what
    is allowed instead (``allowed``)."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        field: str | None = None,
        allowed: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.allowed = allowed
        self.retry_after = retry_after
        self.request_id: str | None = None  # set on INTERNAL errors: the id in the server's log

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind.value, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.allowed is not None:
            body["allowed"] = self.allowed
        if self.retry_after is not None:
            body["retry_after_s"] = self.retry_after
        if self.request_id is not None:
            body["request_id"] = self.request_id
        return {"error": body}

    def __str__(self) -> str:
        text = self.message
        if self.field:
            text = f"{self.field}: {text}"
        if self.allowed:
            text = f"{text} (allowed: {self.allowed})"
        return text


def invalid(message: str, *, field: str | None = None, allowed: str | None = None) -> SonovecError:
    return SonovecError(ErrorKind.INVALID, message, field=field, allowed=allowed)


def too_large(message: str, *, field: str | None = None, allowed: str | None = None) -> SonovecError:
    return SonovecError(ErrorKind.TOO_LARGE, message, field=field, allowed=allowed)


def not_found(message: str, *, field: str | None = None, allowed: str | None = None) -> SonovecError:
    return SonovecError(ErrorKind.NOT_FOUND, message, field=field, allowed=allowed)
