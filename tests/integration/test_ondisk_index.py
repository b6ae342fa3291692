"""``sonovec index build`` -> an on-disk IVF-PQ collection that a live ``sonovec serve`` searches over
REST without loading it into RAM: recall@10 at the default nprobe, and the server's own (anonymous)
memory against the flat vectors' size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from servers import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DIM = 128
COUNT = 200_000
CLUSTERS = 200
QUERIES = 100
HEADER = {"model": "fake", "weights_fingerprint": "fake-0", "pretrained": False, "pooling": "mean",
          "normalize": True, "fragment_seconds": None, "fragment_offset": 0.0}


def clustered(count: int, seed: int) -> np.ndarray:
    """Unit vectors around ``CLUSTERS`` fixed centres (noise 0.6 of the centre's norm)."""
    centres = np.random.default_rng(7).standard_normal((CLUSTERS, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(CLUSTERS, size=count)] + 0.6 * rng.standard_normal((count, DIM), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_extract_folder(folder: Path, count: int, header: dict[str, object] = HEADER,
                         seed: int = 0) -> None:
    """The files ``sonovec extract`` leaves: model.json, embeddings.npy [N, D], paths.txt."""
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(header))
    out = np.lib.format.open_memmap(folder / "embeddings.npy", mode="w+", dtype=np.float32,
                                    shape=(count, DIM))
    for start in range(0, count, 50_000):
        stop = min(start + 50_000, count)
        out[start:stop] = clustered(stop - start, seed + start)
    out.flush()
    (folder / "paths.txt").write_text("".join(f"piece/{i:06d}.wav\n" for i in range(count)))


def index_build(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "sonovec.server.cli", "index", "build", "--no-progress", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def memory_kb(server: ServerProcess) -> dict[str, int]:
    assert server.proc is not None
    lines = Path(f"/proc/{server.proc.pid}/status").read_text().splitlines()
    fields = (line.split(":", 1) for line in lines)
    return {k: int(v.split()[0]) for k, v in fields if k.startswith(("Rss", "VmRSS"))}


def search_all(server: ServerProcess, queries: np.ndarray) -> list[list[int]]:
    found = []
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        for q in queries:
            response = client.post("/v1/collections/archive/search", json={"vector": q.tolist(), "k": 10})
            assert response.status_code == 200, response.text
            found.append([int(h["id"].split("/")[1].split(".")[0]) for h in response.json()["hits"]])
    return found


def test_built_index_is_searched_over_rest_from_disk(tmp_path: Path) -> None:
    write_extract_folder(tmp_path / "extract", COUNT)
    built = index_build(str(tmp_path / "extract"), "--name", "archive", "--data-dir", str(tmp_path / "data"),
                        "--factory", "IVF1024,PQ32", "--train-size", "60000", "--shard-rows", "50000")
    assert built.returncode == 0, built.stderr
    folder = tmp_path / "data" / "indexes" / "archive"
    assert (folder / "lists.ivfdata").stat().st_size < COUNT * (32 + 8) * 1.1  # codes + ids, on disk

    vectors = np.load(tmp_path / "extract" / "embeddings.npy", mmap_mode="r")
    queries = clustered(QUERIES, seed=10**6)  # fresh points of the same clusters
    truth = np.argsort(-(queries @ np.asarray(vectors).T), axis=1)[:, :10]

    (tmp_path / "empty" / "data").mkdir(parents=True)
    with ServerProcess(tmp_path / "empty") as baseline:  # same server, no collection
        missing = httpx.post(f"{baseline.url}/v1/collections/archive/search",
                                        json={"vector": queries[0].tolist(), "k": 10})
        assert missing.status_code == 404
        before = memory_kb(baseline)
    with ServerProcess(tmp_path) as server:
        info = httpx.get(f"{server.url}/v1/collections/archive").json()
        assert info["count"] == COUNT and info["space"]["weights_fingerprint"] == "fake-0"
        found = search_all(server, queries)
        after = memory_kb(server)

        # read-mostly: writes and drops are refused with 409, not a 500
        add = httpx.post(f"{server.url}/v1/collections/archive/items",
                         json={"items": [{"id": "x", "vector": queries[0].tolist()}]})
        assert add.status_code == 409 and "read-only" in add.json()["error"]["message"]
        assert httpx.delete(f"{server.url}/v1/collections/archive").status_code == 409
        by_id = httpx.post(f"{server.url}/v1/collections/archive/search",
                           json={"id": "piece/000042.wav", "k": 3})
        assert by_id.status_code == 200 and "piece/000042.wav" not in [h["id"] for h in by_id.json()["hits"]]
        got = httpx.get(f"{server.url}/v1/collections/archive/items/piece/000042.wav").json()
        assert np.allclose(got["vector"], vectors[42], atol=1e-6)

    recall = np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)])
    flat_kb = COUNT * DIM * 4 // 1024
    grown_kb = after["RssAnon"] - before["RssAnon"]
    print(f"\nrecall@10 {recall:.3f}; anonymous RSS +{grown_kb} kB, file-backed RSS {after['RssFile']} kB "
          f"(baseline {before['RssFile']} kB); flat vectors {flat_kb} kB")
    assert recall >= 0.9
    assert grown_kb < flat_kb / 4, (before, after)


def test_build_refuses_mixed_embedding_spaces(tmp_path: Path) -> None:
    write_extract_folder(tmp_path / "a", 3_000)
    write_extract_folder(tmp_path / "b", 3_000, {**HEADER, "weights_fingerprint": "other"})
    built = index_build(str(tmp_path / "a"), str(tmp_path / "b"), "--name", "mixed",
                        "--data-dir", str(tmp_path / "data"), "--factory", "IVF16,PQ8")
    assert built.returncode != 0 and "another embedding space" in built.stderr
    assert not (tmp_path / "data" / "indexes" / "mixed").exists()
