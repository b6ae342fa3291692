"""Two ``sonovec serve`` processes sharing one redis-server: what one is told, the other finds
within a second; a replica that was down catches up when it comes back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis_server import RedisServer
from servers import ServerProcess

pytestmark = pytest.mark.integration

DIM = 128


def vector(i: int) -> list[float]:
    v = np.random.default_rng(i).standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist()  # type: ignore[no-any-return]


def top_id(client: httpx.Client, i: int) -> str | None:
    response = client.post("/v1/collections/c/search", json={"vector": vector(i), "k": 1})
    if response.status_code != 200:
        return None
    hits = response.json()["hits"]
    return hits[0]["id"] if hits else None


def wait_for(check, timeout: float = 1.0) -> float:  # type: ignore[no-untyped-def]
    """Poll ``check()`` until true; the seconds it took (fails past ``timeout``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"not seen within {timeout} s"
        time.sleep(0.005)
    return time.monotonic() - started


def replica(tmp: Path, name: str, redis: RedisServer) -> ServerProcess:
    (tmp / name).mkdir(exist_ok=True)
    return ServerProcess(tmp / name, redis_url=redis.url)


def test_add_through_one_replica_search_through_the_other(tmp_path: Path, redis_server: RedisServer) -> None:
    a = replica(tmp_path, "a", redis_server).start()
    b = replica(tmp_path, "b", redis_server).start()
    try:
        ca, cb = httpx.Client(base_url=a.url, timeout=10.0), httpx.Client(base_url=b.url, timeout=10.0)
        assert ca.post("/v1/collections", json={"name": "c", "index": {"type": "hnsw"}}).status_code == 201
        wait_for(lambda: cb.get("/v1/collections/c").status_code == 200)
        assert cb.post("/v1/collections", json={"name": "c"}).status_code == 409  # one registry

        lags = []
        for i in range(20):
            added = ca.post("/v1/collections/c/items", json={"items": [{"id": f"v{i}", "vector": vector(i)}]})
            assert added.status_code == 200, added.text
            assert top_id(ca, i) == f"v{i}"  # the writer reads its own write at once
            lags.append(wait_for(lambda i=i: top_id(cb, i) == f"v{i}"))
        median, worst = 1000 * np.median(lags), 1000 * max(lags)
        print(f"\nreplica lag over 20 adds: median {median:.1f} ms, max {worst:.1f} ms")

        # deletes and replacements travel the other way too, and both replicas agree on the result
        assert cb.delete("/v1/collections/c/items/v3").json()["deleted"] is True
        cb.post(
            "/v1/collections/c/items", json={"items": [{"id": "v4", "vector": vector(99), "labels": ["x"]}]}
        )
        wait_for(lambda: ca.get("/v1/collections/c/items/v3").status_code == 404)
        wait_for(lambda: ca.get("/v1/collections/c/items/v4").json()["labels"] == ["x"])
        assert (
            ca.get("/v1/collections/c").json()["count"] == cb.get("/v1/collections/c").json()["count"] == 19
        )

        # a replica that was down rebuilds from Redis and follows again
        b.stop()
        ca.post(
            "/v1/collections/c/items",
            json={"items": [{"id": f"v{i}", "vector": vector(i)} for i in range(20, 40)]},
        )
        b = replica(tmp_path, "b", redis_server).start()
        cb = httpx.Client(base_url=b.url, timeout=10.0)
        assert cb.get("/v1/collections/c").json()["count"] == 39
        assert top_id(cb, 33) == "v33"
        ca.post("/v1/collections/c/items", json={"items": [{"id": "late", "vector": vector(1000)}]})
        wait_for(lambda: top_id(cb, 1000) == "late")

        # probes trained through one replica classify through the other
        items = [
            {"id": f"p{i}", "vector": vector(2000 + i), "labels": ["even" if i % 2 else "odd"]}
            for i in range(12)
        ]
        ca.post("/v1/collections/c/items", json={"items": items})
        assert (
            ca.post(
                "/v1/collections/c/probes", json={"name": "parity", "folds": 2, "classes": ["even", "odd"]}
            ).status_code
            == 201
        )
        probed = cb.post("/v1/classify", json={"collection": "c", "probe": "parity", "id": "p3"})
        assert probed.status_code == 200 and probed.json()["probe_version"] == 1

        # dropping through one replica drops it everywhere
        assert cb.delete("/v1/collections/c").status_code == 200
        wait_for(lambda: ca.get("/v1/collections/c").status_code == 404)
    finally:
        a.stop()
        b.stop()


def test_redis_restart_reads_go_on_writes_wait(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendonly=True) as redis:
        a = replica(tmp_path, "a", redis).start()
        try:
            client = httpx.Client(base_url=a.url, timeout=10.0)
            client.post("/v1/collections", json={"name": "c"})
            client.post("/v1/collections/c/items", json={"items": [{"id": "v1", "vector": vector(1)}]})
            redis.stop()
            assert top_id(client, 1) == "v1"  # searches answer from memory
            item = {"items": [{"id": "v2", "vector": vector(2)}]}
            refused = client.post("/v1/collections/c/items", json=item)
            assert refused.status_code == 503 and refused.headers["retry-after"]
            redis.start()  # same port, data from its append-only file

            def writes_again() -> bool:
                item = {"items": [{"id": "v2", "vector": vector(2)}]}
                return client.post("/v1/collections/c/items", json=item).status_code == 200

            wait_for(writes_again, timeout=10.0)
            assert top_id(client, 2) == "v2" and top_id(client, 1) == "v1"
            assert client.get("/v1/collections/c").json()["count"] == 2
        finally:
            a.stop()
