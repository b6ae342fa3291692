"""Cancel a request's handler when its client goes away, so its queued windows are dropped.

Starlette keeps running an endpoint after the client disconnects. This ASGI middleware watches
the connection once the request body is read; on ``http.disconnect`` it cancels the handler,
whose ticket then drops every window still queued (see ``Service.request``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        disconnected = asyncio.Event()

        async def receive_body() -> Message:
            if body_read.is_set():  # the app asks again only to learn of a disconnect
                await disconnected.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        handler = asyncio.ensure_future(self.app(scope, receive_body, send))
        watcher = asyncio.ensure_future(_watch(receive, body_read, disconnected, handler))
        try:
            await handler
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise  # cancelled from outside (shutdown), not by a gone client
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher


async def _watch(
    receive: Receive, body_read: asyncio.Event, disconnected: asyncio.Event, handler: Any
) -> None:
    await body_read.wait()
    message = await receive()  # after the body, the only message left is the disconnect
    if message["type"] == "http.disconnect":
        disconnected.set()
        handler.cancel()
