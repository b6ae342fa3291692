"""The embedding cache in Redis (``--redis-url``), shared by every replica.

Values are the raw float32 bytes of the ``[2D]`` mean+std statistics (see ``cache.py``), under
``{prefix}:cache:{key}`` with a TTL (``--cache-ttl-s``). The memory bound is Redis' own:
``maxmemory`` with ``maxmemory-policy volatile-lru``, so only keys with a TTL (the cache) are ever
evicted and collections kept in the same Redis are not (see docs/collections.md).

Redis is never on the critical path of a request:

* every call is bounded (``--redis-timeout-ms``, 50 ms by default: socket, connect, and an outer
  ``wait_for``), with no retries;
* a failure is counted (``sonovec_cache_errors``), logged (at most one line per ``LOG_EVERY_S``),
  and opens a circuit: for ``retry_s`` seconds lookups are skipped (``result="bypass"``); then one
  call probes Redis again and, if it answers, the cache is back;
* writes are fire-and-forget tasks, at most ``max_pending_writes`` in flight (more are dropped),
  so a slow Redis never holds up the model.

::

    closed --error--> open --retry_s passes--> half-open --ok--> closed
                       ^                          |
                       +----------error-----------+
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sonovec.server.cache import EmbeddingCache, LruCache
from sonovec.server.metrics import Metrics
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

LOG_EVERY_S = 10.0


def default_cache(settings: Settings, metrics: Metrics) -> EmbeddingCache:
    """Redis with ``--redis-url``, else the in-process LRU."""
    if not settings.redis_url:
        return LruCache(settings.cache_entries, metrics)
    return RedisCache(
        settings.redis_url, metrics, ttl_s=settings.cache_ttl_s, prefix=settings.redis_prefix,
        timeout_s=settings.redis_timeout_ms / 1000.0,
    )


def redis_client(url: str, timeout_s: float, **kwargs: Any) -> aioredis.Redis:
    """An asyncio Redis client (hiredis parser when installed) with bounded calls and no retries."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        **kwargs,
    )


class RateLimitedLog:
    """At most one warning per ``every_s`` seconds; says how many were held back."""

    def __init__(self, logger: logging.Logger, every_s: float = LOG_EVERY_S) -> None:
        self._log = logger
        self._every_s = every_s
        self._last = -float("inf")
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s:
            self._held += 1
            return
        suffix = f" ({self._held} similar messages held back)" if self._held else ""
        self._last, self._held = now, 0
        self._log.warning(message + suffix, *args)


class CircuitBreaker:
    """Open after a failure; once ``retry_s`` has passed, let one call through to probe (and
    then one more every ``retry_s`` while the probes fail)."""

    def __init__(self, retry_s: float) -> None:
        self.retry_s = retry_s
        self._next_probe = 0.0
        self.is_open = False

    def allow(self) -> bool:
        if not self.is_open:
            return True
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self.retry_s
        return True

    def succeeded(self) -> bool:
        """Record a success; True when this closed an open circuit."""
        was_open, self.is_open = self.is_open, False
        return was_open

    def failed(self) -> None:
        self.is_open = True
        self._next_probe = time.monotonic() + self.retry_s


class RedisCache:
    """``EmbeddingCache`` over Redis; see the module docstring for the failure behaviour."""

    name = "redis"

    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        ttl_s: float = 7 * 24 * 3600,
        prefix: str = "sonovec",
        timeout_s: float = 0.05,
        retry_s: float = 1.0,
        max_pending_writes: int = 256,
    ) -> None:
        self._redis = redis_client(url, timeout_s)
        self._metrics = metrics
        self._ttl_ms = int(ttl_s * 1000) or None
        self._prefix = f"{prefix}:cache:"
        self._timeout_s = timeout_s
        self._max_pending = max_pending_writes
        self._pending: set[asyncio.Task[None]] = set()
        self.breaker = CircuitBreaker(retry_s)
        self._warn = RateLimitedLog(log)

    async def get(self, key: str) -> np.ndarray | None:
        if not self.breaker.allow():
            self._metrics.cache.labels(self.name, "bypass").inc()
            return None
        try:
            payload = await asyncio.wait_for(self._redis.get(self._prefix + key), self._timeout_s * 2)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("get", exc)
            self._metrics.cache.labels(self.name, "bypass").inc()
            return None
        self._ok()
        if payload is None:
            self._metrics.cache.labels(self.name, "miss").inc()
            return None
        if not isinstance(payload, bytes) or len(payload) % 4:
            self._failed("get", ValueError(f"payload of {len(payload)} bytes is not float32"))
            self._metrics.cache.labels(self.name, "miss").inc()
            return None
        self._metrics.cache.labels(self.name, "hit").inc()
        self._metrics.cache_bytes.labels(self.name, "read").inc(len(payload))
        return np.frombuffer(payload, dtype="<f4").astype(np.float32)

    async def put(self, key: str, value: np.ndarray) -> None:
        """Schedule the write and return at once; never raises."""
        if len(self._pending) >= self._max_pending:
            self._warn.warning("redis cache: %d writes in flight, dropping one", len(self._pending))
            return
        if not self.breaker.allow():
            return
        payload = np.ascontiguousarray(value, dtype="<f4").tobytes()
        task = asyncio.get_running_loop().create_task(self._write(key, payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, key: str, payload: bytes) -> None:
        try:
            write = self._redis.set(self._prefix + key, payload, px=self._ttl_ms)
            await asyncio.wait_for(write, self._timeout_s * 2)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("set", exc)
            return
        self._ok()
        self._metrics.cache_bytes.labels(self.name, "write").inc(len(payload))

    async def flush(self, timeout_s: float = 1.0) -> None:
        """Wait (bounded) for the writes in flight; for tests and shutdown."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)

    async def close(self) -> None:
        await self.flush()
        for task in self._pending:
            task.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    def _ok(self) -> None:
        if self.breaker.succeeded():
            log.warning("redis cache: back (%s)", self._redis.connection_pool.connection_kwargs.get("host"))

    def _failed(self, op: str, exc: BaseException) -> None:
        self.breaker.failed()
        self._metrics.cache_errors.labels(self.name).inc()
        self._warn.warning(
            "redis cache: %s failed (%s: %s); bypassing the cache, retrying in %.1f s",
            op, type(exc).__name__, exc or "timeout", self.breaker.retry_s,
        )
