"""API keys: one check for REST headers and gRPC metadata."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from sonovec.server.errors import ErrorKind, SonovecError


def require_key(
    keys: Sequence[bytes], x_api_key: str | bytes, authorization: str | bytes, allowed: str
) -> None:
    """Refuse (UNAUTHENTICATED, saying ``allowed``) a caller that does not present one of ``keys`` as
    ``authorization: Bearer KEY`` or, without that, ``x-api-key: KEY``. No keys: every caller passes."""
    if not keys:
        return
    given = x_api_key
    if isinstance(authorization, str) and authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
    token = given.encode() if isinstance(given, str) else bytes(given)
    matched = False
    for key in keys:  # every key, always, each in constant time
        matched |= hmac.compare_digest(token, key)
    if not matched:
        raise SonovecError(ErrorKind.UNAUTHENTICATED, "missing or unknown API key", allowed=allowed)


def require_metadata_key(keys: Sequence[bytes], metadata: Iterable[tuple[str, Any]] | None) -> None:
    """``require_key`` over a gRPC call's invocation metadata (every gRPC service of the server)."""
    if not keys:
        return
    given = {key.lower(): value for key, value in metadata or ()}
    require_key(
        keys,
        given.get("x-api-key", ""),
        given.get("authorization", ""),
        allowed="metadata 'authorization: Bearer KEY' or 'x-api-key: KEY'",
    )
