"""Kept audio with ``--redis-url``: an item added through one replica plays through another, and its
audio goes with the item and the collection (real redis-server, two real servers on loopback)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from redis_server import RedisServer
from servers import ServerProcess

pytestmark = pytest.mark.integration


def recording(seconds: float, seed: int) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    pcm = (rng.uniform(-0.3, 0.3, round(seconds * 16_000)) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, 16_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), pcm


def audio_keys(redis_server: RedisServer) -> list[bytes]:
    return sorted(redis_server.client().scan_iter(match="sonovec:audio:*"))


def test_kept_audio_is_shared_by_replicas(tmp_path: Path, redis_server: RedisServer) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    one = ServerProcess(tmp_path / "a", redis_url=redis_server.url).start()
    two = ServerProcess(tmp_path / "b", redis_url=redis_server.url).start()
    try:
        body, pcm = recording(0.8, 1)
        r = httpx.post(f"{one.url}/v1/collections", json={"name": "shared", "keep_audio": "original"})
        assert r.status_code == 201, r.text
        for item_id in ("x", "same"):
            r = httpx.post(f"{one.url}/v1/collections/shared/items", files={"audio": ("a.wav", body)},
                           data={"id": item_id}, timeout=60)
            assert r.status_code == 200, r.text
        played = httpx.get(f"{two.url}/v1/collections/shared/items/x/audio", timeout=60)
        assert played.status_code == 200
        assert np.array_equal(sf.read(io.BytesIO(played.content), dtype="int16")[0], pcm)
        blobs = [k for k in audio_keys(redis_server) if b":blob:" in k]
        assert len(blobs) == 1  # equal recordings, one blob
        assert httpx.delete(f"{two.url}/v1/collections/shared/items/x").status_code == 200
        assert [k for k in audio_keys(redis_server) if b":blob:" in k] == blobs  # "same" still uses it
        assert httpx.get(f"{one.url}/v1/collections/shared/items/x/audio").status_code == 404
        assert httpx.delete(f"{one.url}/v1/collections/shared").status_code == 200
        assert audio_keys(redis_server) == []
    finally:
        one.stop()
        two.stop()
