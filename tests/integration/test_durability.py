"""kill -9 in the middle of a stream of acknowledged adds: after a restart every acknowledged item
is there, once, and the collection answers as before."""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from audiofiles import encode, tone
from servers import ServerProcess

pytestmark = pytest.mark.integration

DIM = 128


def vector(i: int) -> list[float]:
    v = np.random.default_rng(i).standard_normal(DIM)
    return (v / np.linalg.norm(v)).tolist()  # type: ignore[no-any-return]


def item(i: int) -> dict:  # type: ignore[type-arg]
    body = {"id": f"item-{i}", "labels": [f"l{i % 3}"], "metadata": {"i": i}}
    if i % 25 == 0:  # some through the batcher as audio
        body["audio"] = {
            "data": base64.b64encode(encode(tone(0.5, 48_000, 2, seed=i), 48_000, "wav")).decode()
        }
    else:
        body["vector"] = vector(i)
    return body


class Writer(threading.Thread):
    """Adds items one at a time, remembering those the server acknowledged, until it fails."""

    def __init__(self, url: str, start_at: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.next = start_at
        self.acked: list[int] = []
        self.in_flight: int | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0) as client:
            while True:
                self.in_flight = self.next
                try:
                    response = client.post("/v1/collections/c/items", json={"items": [item(self.next)]})
                except httpx.HTTPError:
                    return
                if response.status_code != 200:
                    return
                self.acked.append(self.next)
                self.next += 1


def test_kill_9_loses_no_acknowledged_item_and_duplicates_none(tmp_path: Path) -> None:
    settings = {"snapshot_interval_s": 0.3}  # snapshots happen during the run: replay = snapshot + log
    server = ServerProcess(tmp_path, **settings).start()
    try:
        client = httpx.Client(base_url=server.url, timeout=10.0)
        assert client.post("/v1/collections", json={"name": "c"}).status_code == 201
        writer = Writer(server.url, 0)
        writer.start()
        while len(writer.acked) < 200:
            time.sleep(0.01)
            assert writer.is_alive()
        server.kill()  # SIGKILL while the writer is mid-stream
        writer.join(10)
    finally:
        server.stop()
    acked, maybe = writer.acked, writer.in_flight
    assert len(acked) >= 200 and (tmp_path / "data" / "collections" / "c" / "snapshot.npz").exists()

    restarted = ServerProcess(tmp_path, **settings).start()
    try:
        with httpx.Client(base_url=restarted.url, timeout=10.0) as client:
            count = client.get("/v1/collections/c").json()["count"]
            assert count in (len(acked), len(acked) + 1)  # + the one in flight, if it made it to the log
            for i in acked:
                got = client.get(f"/v1/collections/c/items/item-{i}")
                assert got.status_code == 200, (i, got.text)
                assert got.json()["metadata"] == {"i": i}
                if i % 25:
                    np.testing.assert_allclose(got.json()["vector"], vector(i), rtol=1e-6)
            everything = client.post("/v1/collections/c/search", json={"vector": vector(1), "k": 1000}).json()
            ids = [hit["id"] for hit in everything["hits"]]
            assert len(ids) == len(set(ids)) == count  # no duplicates
            assert set(ids) - {f"item-{i}" for i in acked} <= {f"item-{maybe}"}
            for i in acked[::37]:
                if i % 25:
                    top = client.post("/v1/collections/c/search", json={"vector": vector(i), "k": 1}).json()
                    assert top["hits"][0]["id"] == f"item-{i}"
            # and it keeps taking writes after the replay
            assert client.post("/v1/collections/c/items", json={"items": [item(10_000)]}).status_code == 200
    finally:
        restarted.stop()
    print(
        f"\nkill -9 after {len(acked)} acknowledged adds: all {len(acked)} found after restart, "
        f"{count} items in all, no duplicates"
    )
