"""What was accepted must still be served after a crash and a restart, and the restart compacts
the write-ahead log it replayed (so the same ops are not replayed at every start)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from servers import ServerProcess

pytestmark = pytest.mark.integration

IDS = ["a/b/c", "é ü 音", "with space", "q?x#y", "%2F", "emoji-🎵"]
VECTOR = [((i * 31) % 17) / 17 - 0.4 for i in range(128)]


def test_odd_items_survive_a_crash_and_the_log_is_compacted(tmp_path: Path) -> None:
    settings = {"models": "encodec_48khz", "snapshot_interval_s": 3600}
    server = ServerProcess(tmp_path, **settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/v1/collections", json={"name": "keep"}).status_code == 201
            items = [{"id": i, "vector": VECTOR, "labels": ["音", "b"], "metadata": {"n": {"m": [1, "é"]}}}
                     for i in IDS]
            assert http.post("/v1/collections/keep/items", json={"items": items}).status_code == 200
    finally:
        server.kill()  # no final snapshot: the start must replay the log
    wal = tmp_path / "data" / "collections" / "keep" / "wal.log"
    assert wal.stat().st_size > 0
    server = ServerProcess(tmp_path, **settings).start()  # a fresh port, the same data dir
    try:
        assert wal.stat().st_size == 0, "the replayed log was not compacted"
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for item_id in IDS:
                got = http.get(f"/v1/collections/keep/items/{quote(item_id, safe='/')}")
                assert got.status_code == 200, (item_id, got.text)
                assert got.json()["metadata"] == {"n": {"m": [1, "é"]}}
            search = http.post("/v1/collections/keep/search", json={"vector": VECTOR, "k": 10})
            assert search.status_code == 200 and len(search.json()["hits"]) == len(IDS)
            classify = http.post("/v1/classify", json={"collection": "keep", "vector": VECTOR})
            assert classify.status_code == 200, classify.text
            json.dumps(classify.json())
    finally:
        server.stop()
