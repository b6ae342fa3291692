"""The client's one error type, whichever transport failed."""

from __future__ import annotations

# Error kinds, as the server names them (REST error.kind, gRPC metadata sonovec-error-kind), plus
# "unimplemented" for methods the server does not have.
INVALID = "invalid_argument"
TOO_LARGE = "payload_too_large"
UNSUPPORTED = "unsupported_media_type"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
UNAUTHENTICATED = "unauthenticated"
OVERLOADED = "overloaded"
UNAVAILABLE = "unavailable"
DEADLINE = "deadline_exceeded"
CANCELLED = "cancelled"
INTERNAL = "internal"
UNIMPLEMENTED = "unimplemented"

RETRYABLE = frozenset({OVERLOADED, UNAVAILABLE})


class SonovecClientError(Exception):
    """A call failed. ``kind`` is the server's error kind (the same over REST and gRPC);
    ``status`` the transport's own code (an HTTP status int, or a gRPC status code name, or None
    when the client refused the call itself); ``field`` and ``allowed`` say what was wrong and
    what would be accepted; ``retry_after`` is in seconds, for overloaded or unavailable servers."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | str | None = None,
        field: str | None = None,
        allowed: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.field = field
        self.allowed = allowed
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """True for overload (429 / RESOURCE_EXHAUSTED) and unavailability (503 / UNAVAILABLE)."""
        return self.kind in RETRYABLE

    def __str__(self) -> str:
        text = f"[{self.kind}"
        text += f" {self.status}]" if self.status is not None else "]"
        if self.field:
            text += f" {self.field}:"
        text += f" {self.message}"
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        if self.retry_after is not None:
            text += f" (retry after {self.retry_after:g} s)"
        return text

    def __repr__(self) -> str:
        return (
            f"SonovecClientError({self.kind!r}, {self.message!r}, status={self.status!r}, "
            f"field={self.field!r})"
        )
