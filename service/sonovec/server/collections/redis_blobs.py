"""Kept audio in Redis (``--redis-url``): every replica can play every item.

Keys (``P`` is ``--redis-prefix``, ``U`` a collection's uid)::

    P:audio:U:policy        JSON policy
    P:audio:U:refs          hash: item id -> JSON reference (kind, format, blob digest)
    P:audio:U:blob:SHA      the bytes (content-addressed: equal recordings share one)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import RedisError

from sonovec.server.collections.blobs import Kept, digest
from sonovec.server.errors import ErrorKind, SonovecError
from sonovec.server.redis_cache import redis_client

_TIMEOUT_S = 5.0


@asynccontextmanager
async def _errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (RedisError, OSError, TimeoutError) as exc:
        message = f"kept audio: {what} failed in Redis ({type(exc).__name__})"
        raise SonovecError(ErrorKind.UNAVAILABLE, message, retry_after=1.0) from exc


class RedisBlobStore:
    def __init__(self, url: str, prefix: str = "sonovec") -> None:
        self._redis = redis_client(url, _TIMEOUT_S)
        self._prefix = prefix

    def _key(self, uid: str, *parts: str) -> str:
        return ":".join((self._prefix, "audio", uid, *parts))

    async def set_policy(self, uid: str, policy: dict[str, Any]) -> None:
        async with _errors("policy"):
            await self._redis.set(self._key(uid, "policy"), json.dumps(policy))

    async def policy(self, uid: str) -> dict[str, Any] | None:
        async with _errors("policy"):
            text = await self._redis.get(self._key(uid, "policy"))
        return None if text is None else dict(json.loads(text))

    async def put(self, uid: str, item_id: str, ref: dict[str, Any], body: bytes) -> None:
        ref = {**ref, "id": item_id, "blob": digest(body), "bytes": len(body)}
        async with _errors("put"):
            old = await self._redis.hget(self._key(uid, "refs"), item_id)
            await self._redis.set(self._key(uid, "blob", ref["blob"]), body)
            await self._redis.hset(self._key(uid, "refs"), item_id, json.dumps(ref))
        if old is not None and json.loads(old)["blob"] != ref["blob"]:
            await self._collect(uid, [json.loads(old)["blob"]])

    async def get(self, uid: str, item_id: str) -> Kept | None:
        async with _errors("get"):
            text = await self._redis.hget(self._key(uid, "refs"), item_id)
            if text is None:
                return None
            ref = json.loads(text)
            body = await self._redis.get(self._key(uid, "blob", ref["blob"]))
        return None if body is None else Kept(ref, body if isinstance(body, bytes) else body.encode())

    async def kept(self, uid: str) -> set[str]:
        async with _errors("list"):
            keys = await self._redis.hkeys(self._key(uid, "refs"))
        return {k.decode() if isinstance(k, bytes) else str(k) for k in keys}

    async def forget(self, uid: str, item_ids: list[str]) -> None:
        async with _errors("forget"):
            texts = await self._redis.hmget(self._key(uid, "refs"), item_ids)
            gone = [json.loads(t)["blob"] for t in texts if t is not None]
            if gone:
                await self._redis.hdel(self._key(uid, "refs"), *item_ids)
        await self._collect(uid, gone)

    async def _collect(self, uid: str, blobs: list[str]) -> None:
        if not blobs:
            return
        async with _errors("collect"):
            refs = await self._redis.hgetall(self._key(uid, "refs"))
            used = {json.loads(text)["blob"] for text in refs.values()}
            unused = [self._key(uid, "blob", b) for b in set(blobs) - used]
            if unused:
                await self._redis.delete(*unused)

    async def drop(self, uid: str) -> None:
        async with _errors("drop"):
            keys = [key async for key in self._redis.scan_iter(match=self._key(uid, "*"), count=1000)]
            if keys:
                await self._redis.delete(*keys)
