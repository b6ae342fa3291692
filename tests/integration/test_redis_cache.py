"""The Redis embedding cache against a real redis-server, through a real ``sonovec serve``:
hits return the identical vector; Redis stopped, paused or restarted never fails a request; the
cache comes back by itself."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from audiofiles import encode, tone
from redis_server import RedisServer
from servers import ServerProcess

pytestmark = pytest.mark.integration


def clip(seed: int) -> bytes:
    return encode(tone(1.5, 44_100, 2, seed=seed), 44_100, "wav")


def embed(client: httpx.Client, seed: int) -> dict:  # type: ignore[type-arg]
    response = client.post("/v1/embed", files={"audio": ("a.wav", clip(seed))})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def cache_metric(client: httpx.Client, name: str, **labels: str) -> float:
    """A counter from /metrics, e.g. ``cache_metric(c, "sonovec_cache_requests_total", result="hit")``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def embed_until_cached(client: httpx.Client, seed: int, timeout: float = 5.0) -> dict:  # type: ignore[type-arg]
    """Cache writes are fire-and-forget: ask again until the answer comes from the cache."""
    deadline = time.monotonic() + timeout
    while True:
        body = embed(client, seed)
        if body["cached"] or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_hits_outages_and_recovery(tmp_path: Path, redis_server: RedisServer) -> None:
    with (
        ServerProcess(tmp_path, redis_url=redis_server.url) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        # a hit returns exactly the vector computed the first time, stored as float32 bytes in Redis
        first = embed(client, seed=1)
        assert first["cached"] is False
        again = embed_until_cached(client, seed=1)
        assert again["cached"] is True and again["embedding"] == first["embedding"]
        keys = redis_server.client().keys("sonovec:cache:*")
        assert len(keys) == 1 and redis_server.client().strlen(keys[0]) == 4 * 2 * 128  # [2D] float32
        assert 0 < redis_server.client().ttl(keys[0]) <= 7 * 24 * 3600
        assert cache_metric(client, "sonovec_cache_requests_total", backend="redis", result="hit") >= 1

        # Redis stops mid-run: every request still answers, from the model
        redis_server.stop()
        started = time.monotonic()
        bodies = [embed(client, seed=s) for s in (1, 2, 3, 1, 2, 3, 4, 5)]
        assert all(not b["cached"] for b in bodies)
        assert bodies[0]["embedding"] == first["embedding"]
        assert time.monotonic() - started < 10.0
        errors = cache_metric(client, "sonovec_cache_errors_total", backend="redis")
        bypassed = cache_metric(client, "sonovec_cache_requests_total", backend="redis", result="bypass")
        assert errors >= 1 and bypassed >= 8

        # Redis back (empty): the cache is used again within the retry interval, without a restart
        redis_server.start()
        hits_before = cache_metric(client, "sonovec_cache_requests_total", backend="redis", result="hit")
        deadline = time.monotonic() + 10.0
        while embed(client, seed=6)["cached"] is False and time.monotonic() < deadline:
            time.sleep(0.2)
        assert embed(client, seed=6)["cached"] is True
        assert (
            cache_metric(client, "sonovec_cache_requests_total", backend="redis", result="hit") > hits_before
        )


def test_a_stalled_redis_costs_a_bounded_delay(tmp_path: Path, redis_server: RedisServer) -> None:
    with (
        ServerProcess(tmp_path, redis_url=redis_server.url, redis_timeout_ms=50) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        embed(client, seed=1)
        quick = []
        for seed in (2, 3, 4):
            started = time.monotonic()
            embed(client, seed)
            quick.append(time.monotonic() - started)
        redis_server.pause()  # connections stay open, nothing answers
        try:
            stalled = []
            for seed in (1, 5, 6, 7, 8):
                started = time.monotonic()
                body = embed(client, seed)
                stalled.append(time.monotonic() - started)
                assert body["cached"] is False
        finally:
            redis_server.resume()
        # the first call waits out its 50 ms timeout and opens the circuit; the rest skip Redis
        assert max(stalled) < max(quick) + 0.5, (quick, stalled)
        assert cache_metric(client, "sonovec_cache_errors_total", backend="redis") >= 1
