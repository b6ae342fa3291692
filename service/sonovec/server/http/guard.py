"""Two pure ASGI middlewares at the edge of the REST app.

``CatchAll`` turns any exception that escapes the app into the one error shape (500 ``internal``,
a request id in the body and the log, no exception text) and *answers* it, so the exception never
reaches the server: uvicorn closes a keep-alive connection after an unhandled exception, and
Starlette's ``ServerErrorMiddleware`` re-raises after answering, so an ``exception_handler(Exception)``
is not enough.

``BodyLimit`` enforces the body size while the body streams in (Content-Length and chunked
alike) and holds the request's bytes against the process-wide ``MemoryBudget``, returned when the
response is done.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sonovec.server.budget import MemoryBudget, Reservation
from sonovec.server.errors import HTTP_STATUS, ErrorKind, SonovecError

log = logging.getLogger(__name__)

# A JSON body is held about three times while it is handled: the bytes, the parsed base64 text,
# and the decoded audio bytes. The budget counts it so.
BODY_HOLD_FACTOR = 3


def error_message(error: SonovecError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body of ``error`` in the one error shape."""
    headers = [(b"content-type", b"application/json")]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after))).encode()))
    return HTTP_STATUS[error.kind], headers, json.dumps(error.to_dict()).encode()


async def send_error(send: Send, error: SonovecError) -> None:
    status, headers, body = error_message(error)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CatchAll:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except SonovecError as exc:  # raised below the routers' handlers (e.g. by BodyLimit)
            if not started:
                await send_error(send, exc)
        except Exception:
            request_id = uuid.uuid4().hex
            where = f"{scope['method']} {scope['path']}"
            log.exception("unhandled error in %s (request id %s)", where, request_id)
            if started:  # part of a response went out: nothing better to do than end it
                return
            bug = SonovecError(ErrorKind.INTERNAL, f"internal error (request id {request_id})")
            bug.request_id = request_id
            await send_error(send, bug)


class BodyLimit:
    """``max_body`` bytes per request, counted as they arrive; each request's bytes held against
    the budget ``get_budget`` returns (None: while the service loads, nothing to hold against)."""

    def __init__(
        self, app: ASGIApp, *, max_body: int, max_audio: int, get_budget: Callable[[], MemoryBudget | None]
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_audio = max_audio
        self.get_budget = get_budget

    def _too_large(self, size: int, *, streamed: bool) -> SonovecError:
        what = f"more than {self.max_body} bytes" if streamed else f"{size} bytes"
        return SonovecError(
            ErrorKind.TOO_LARGE,
            f"body of {what}",
            field="body",
            allowed=f"at most {self.max_audio} bytes of audio ({self.max_body} bytes of body)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await send_error(send, self._too_large(length, streamed=False))
            return
        budget = self.get_budget()
        reservation: Reservation | None = None if budget is None else budget.reservation("body")
        if reservation is not None and length:
            try:  # a stated length is held whole at once: admitted requests can then finish
                reservation.grow_to(length * BODY_HOLD_FACTOR)
            except SonovecError as error:
                await send_error(send, error)
                return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise self._too_large(received, streamed=True)
                if reservation is not None:
                    reservation.grow_to(received * BODY_HOLD_FACTOR)
            return message

        try:
            await self.app(scope, counted_receive, send)
        finally:
            if reservation is not None:
                reservation.release()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None
