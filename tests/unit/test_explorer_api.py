"""The explorer's API: kept audio (GET .../items/{id}/audio), maps and clusters (cached per
collection version, deterministic for a seed, 4xx for what cannot be mapped). In-process REST
over the fake backend; files on a real data dir."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fakes import fake_settings

from sonovec.server.collections.maps import MapOptions, Points, compute_map, label_purity
from sonovec.server.http.app import create_app
from sonovec.server.runtime import Runtime

pytestmark = pytest.mark.unit
RATE = 24_000


def wav(seconds: float, freq: float, seed: int = 0) -> tuple[bytes, np.ndarray]:
    t = np.arange(round(seconds * RATE)) / RATE
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    pcm = np.round(x * 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), pcm


async def create(rest: httpx.AsyncClient, name: str, **options: object) -> None:
    r = await rest.post("/v1/collections", json={"name": name, **options})
    assert r.status_code == 201, r.text


async def add_audio(rest: httpx.AsyncClient, name: str, item_id: str, body: bytes, label: str = "") -> None:
    r = await rest.post(f"/v1/collections/{name}/items", files={"audio": ("a.wav", body)},
                        data={"id": item_id, "labels": label})
    assert r.status_code == 200, r.text


async def add_vectors(rest: httpx.AsyncClient, name: str, vectors: np.ndarray, labels: list[str]) -> None:
    items = [{"id": f"v{i:03d}", "vector": v.tolist(), "labels": [lab]}
             for i, (v, lab) in enumerate(zip(vectors, labels, strict=True))]
    r = await rest.post(f"/v1/collections/{name}/items", json={"items": items})
    assert r.status_code == 200, r.text


def blobs(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "audio").rglob("blobs/*/*") if p.is_file()]


def clustered(n_per: int, dim: int = 128, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three tight groups of vectors around orthogonal directions, labelled a, b, c."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim, dtype=np.float32)[:3] * 5
    vectors = np.concatenate([c + 0.05 * rng.standard_normal((n_per, dim)) for c in centres])
    return vectors.astype(np.float32), [lab for lab in "abc" for _ in range(n_per)]


async def cache_hits(rest: httpx.AsyncClient, kind: str) -> float:
    for line in (await rest.get("/metrics")).text.splitlines():
        if line.startswith(f'sonovec_map_cache_requests_total{{kind="{kind}",result="hit"}}'):
            return float(line.split()[-1])
    return 0.0


# ---- kept audio ----


async def test_original_audio_plays_back_as_the_same_samples(rest: httpx.AsyncClient, tmp_path: Path) -> None:
    await create(rest, "kept", keep_audio="original")
    body, pcm = wav(1.3, 330)
    await add_audio(rest, "kept", "a/b c", body)  # an id with a slash and a space
    r = await rest.get("/v1/collections/kept/items/a%2Fb%20c/audio")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(r.content), dtype="int16")
    assert rate == RATE and np.array_equal(samples, pcm)


async def test_raw_pcm_is_kept_with_its_format(rest: httpx.AsyncClient) -> None:
    await create(rest, "raw", keep_audio="original")
    _, pcm = wav(0.5, 440)
    audio = {"data": __import__("base64").b64encode(pcm.tobytes()).decode(), "encoding": "pcm_s16le",
             "sample_rate": RATE, "channels": 1}
    r = await rest.post("/v1/collections/raw/items", json={"items": [{"id": "p", "audio": audio}]})
    assert r.status_code == 200, r.text
    samples, rate = sf.read(io.BytesIO((await rest.get("/v1/collections/raw/items/p/audio")).content),
                            dtype="int16")
    assert rate == RATE and np.array_equal(samples, pcm)


async def test_codes_are_kept_and_played_by_decoding(rest: httpx.AsyncClient) -> None:
    await create(rest, "codes", keep_audio="codes", keep_audio_bandwidth=6.0)
    body, _ = wav(1.5, 220)
    await add_audio(rest, "codes", "c", body)
    r = await rest.get("/v1/collections/codes/items/c/audio")
    assert r.status_code == 200
    info = sf.info(io.BytesIO(r.content))
    assert info.samplerate == 48_000 and info.frames == 72_000  # decoded at the model's rate, same length


async def test_nothing_to_play_says_why(rest: httpx.AsyncClient) -> None:
    await create(rest, "none")
    await create(rest, "some", keep_audio="original")
    body, _ = wav(0.5, 220)
    await add_audio(rest, "none", "x", body)
    await add_vectors(rest, "some", np.ones((1, 128), np.float32), ["v"])
    none = await rest.get("/v1/collections/none/items/x/audio")
    assert none.status_code == 404 and "keeps no audio" in none.json()["error"]["message"]
    vector = await rest.get("/v1/collections/some/items/v000/audio")
    assert vector.status_code == 404 and "added by vector" in vector.json()["error"]["message"]
    missing = await rest.get("/v1/collections/some/items/nope/audio")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "id"


async def test_keep_audio_options_are_checked(rest: httpx.AsyncClient) -> None:
    bad = await rest.post("/v1/collections", json={"name": "b", "keep_audio": "mp3"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "keep_audio"
    bandwidth = await rest.post("/v1/collections", json={"name": "b", "keep_audio": "codes",
                                                          "keep_audio_bandwidth": 5.0})
    assert bandwidth.status_code == 422 and bandwidth.json()["error"]["field"] == "keep_audio_bandwidth"
    await create(rest, "capped", keep_audio="original", keep_audio_max_bytes=10_000)
    body, _ = wav(1.0, 220)  # 48 kB
    r = await rest.post("/v1/collections/capped/items", files={"audio": ("a.wav", body)}, data={"id": "big"})
    assert r.status_code == 413 and "keeps recordings" in r.json()["error"]["allowed"]
    assert (await rest.get("/v1/collections/capped")).json()["count"] == 0  # refused before anything


async def test_kept_audio_goes_with_its_item_and_its_collection(make_runtime, tmp_path: Path) -> None:
    runtime = make_runtime()
    data = runtime.settings.data_dir
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)),
                                 base_url="http://sonovec") as rest:
        await create(rest, "life", keep_audio="original")
        one, _ = wav(0.5, 220, seed=1)
        two, _ = wav(0.5, 330, seed=2)
        await add_audio(rest, "life", "one", one)
        await add_audio(rest, "life", "same", one)  # equal bytes: one blob
        await add_audio(rest, "life", "two", two)
        assert len(blobs(data)) == 2
        await rest.delete("/v1/collections/life/items/one")
        assert len(blobs(data)) == 2  # still used by "same"
        await rest.delete("/v1/collections/life/items/same")
        assert len(blobs(data)) == 1
        r = await rest.post("/v1/collections/life/items",
                            json={"items": [{"id": "two", "vector": [1.0] * 128}]})  # replaced by a vector
        assert r.status_code == 200 and blobs(data) == []
        assert (await rest.get("/v1/collections/life/items/two/audio")).status_code == 404
        await add_audio(rest, "life", "three", two)
        assert (await rest.delete("/v1/collections/life")).status_code == 200
        assert blobs(data) == [] and [p for p in (data / "audio").iterdir()] == []


async def test_kept_audio_survives_a_restart(tmp_path: Path) -> None:
    first = Runtime(fake_settings(tmp_path))
    body, pcm = wav(0.7, 262)
    async with first.running(), httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(first)),
                                                  base_url="http://s") as rest:
        await create(rest, "durable", keep_audio="original")
        await add_audio(rest, "durable", "d", body)
    second = Runtime(fake_settings(tmp_path))
    async with second.running(), httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(second)),
                                                   base_url="http://s") as rest:
        r = await rest.get("/v1/collections/durable/items/d/audio")
        assert r.status_code == 200 and np.array_equal(sf.read(io.BytesIO(r.content), dtype="int16")[0], pcm)


# ---- maps ----


async def test_map_is_cached_per_version_and_deterministic(rest: httpx.AsyncClient) -> None:
    await create(rest, "m")
    vectors, labels = clustered(6)
    await add_vectors(rest, "m", vectors, labels)
    hits = await cache_hits(rest, "map")
    first = (await rest.get("/v1/collections/m/map?method=tsne&perplexity=5&seed=3")).json()
    again = (await rest.get("/v1/collections/m/map?method=tsne&perplexity=5&seed=3")).json()
    assert not first["cached"] and again["cached"]
    assert await cache_hits(rest, "map") == hits + 1
    assert [(p["x"], p["y"]) for p in again["points"]] == [(p["x"], p["y"]) for p in first["points"]]
    assert first["params"]["perplexity"] == 5 and first["total"] == 18 and len(first["points"]) == 18
    other_seed = (await rest.get("/v1/collections/m/map?method=tsne&perplexity=5&seed=4")).json()
    assert not other_seed["cached"]
    await add_vectors(rest, "m", vectors[:1] * 0.5, ["a"])  # v000 replaced: a new version
    changed = (await rest.get("/v1/collections/m/map?method=tsne&perplexity=5&seed=3")).json()
    assert not changed["cached"] and changed["version"] > first["version"]


def test_map_of_the_same_points_and_seed_is_the_same() -> None:
    vectors, labels = clustered(8)
    points = Points([f"i{i}" for i in range(24)], [(lab,) for lab in labels], [{}] * 24, vectors, 24, 1)
    for method in ("tsne", "pca"):
        a = compute_map(points, MapOptions(method=method, perplexity=6, seed=1)).coords
        b = compute_map(points, MapOptions(method=method, perplexity=6, seed=1)).coords
        assert np.array_equal(a, b)
    c = compute_map(points, MapOptions(method="tsne", perplexity=6, seed=2)).coords
    assert not np.allclose(a, c) or method == "pca"


async def test_map_subsamples_beyond_the_cap_with_its_seed(rest: httpx.AsyncClient) -> None:
    await create(rest, "big")
    vectors, labels = clustered(10)
    await add_vectors(rest, "big", vectors, labels)
    one = (await rest.get("/v1/collections/big/map?method=pca&max_points=7&seed=1")).json()
    same = (await rest.get("/v1/collections/big/clusters?k=2&max_points=7&seed=1")).json()
    other = (await rest.get("/v1/collections/big/map?method=pca&max_points=7&seed=2")).json()
    ids = [p["id"] for p in one["points"]]
    assert len(ids) == 7 and one["total"] == 30 and ids == same["ids"]
    assert ids != [p["id"] for p in other["points"]]


async def test_what_cannot_be_mapped_is_a_clear_4xx(rest: httpx.AsyncClient) -> None:
    await create(rest, "empty")
    for path in ("/v1/collections/empty/map", "/v1/collections/empty/clusters"):
        r = await rest.get(path)
        assert r.status_code == 422 and "empty" in r.json()["error"]["message"]
    await create(rest, "few")
    await add_vectors(rest, "few", np.eye(128, dtype=np.float32)[:3], ["a", "b", "c"])
    cases = {
        "/v1/collections/few/map?method=isomap": "method",
        "/v1/collections/few/clusters?method=dbscan": "method",
        "/v1/collections/few/map?method=tsne": "method",  # 3 items: too few for t-SNE
        "/v1/collections/few/map?perplexity=0": "perplexity",
        "/v1/collections/few/map?max_points=1000000": "max_points",
        "/v1/collections/few/clusters?k=0": "k",
        "/v1/collections/few/map?seed=x": "query.seed",
    }
    for path, field in cases.items():
        r = await rest.get(path)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["field"] == field, path
    assert (await rest.get("/v1/collections/nope/map")).status_code == 404
    assert (await rest.get("/v1/collections/few/map?method=pca")).status_code == 200


# ---- clusters ----


async def test_clusters_on_the_embeddings_with_label_purity(rest: httpx.AsyncClient) -> None:
    await create(rest, "c")
    vectors, labels = clustered(8)
    await add_vectors(rest, "c", vectors, labels)
    hits = await cache_hits(rest, "clusters")
    kmeans = (await rest.get("/v1/collections/c/clusters?method=kmeans&k=3&seed=0")).json()
    assert kmeans["purity"] == 1.0 and sorted(c["size"] for c in kmeans["clusters"]) == [8, 8, 8]
    assert {c["label"] for c in kmeans["clusters"]} == {"a", "b", "c"}
    again = (await rest.get("/v1/collections/c/clusters?method=kmeans&k=3&seed=0")).json()
    assert again["cached"] and again["assignments"] == kmeans["assignments"]
    assert await cache_hits(rest, "clusters") == hits + 1
    hdbscan = (await rest.get("/v1/collections/c/clusters?method=hdbscan&min_cluster_size=4")).json()
    assert hdbscan["purity"] == 1.0 and len([c for c in hdbscan["clusters"] if c["id"] >= 0]) == 3


def test_label_purity_counts_majorities_of_labelled_members() -> None:
    assignments = np.array([0, 0, 0, 1, 1, 1])
    labels: list[tuple[str, ...]] = [("a",), ("a",), ("b",), ("b",), (), ("b", "x")]
    clusters, purity = label_purity(assignments, labels)
    assert [(c.id, c.size, c.label) for c in clusters] == [(0, 3, "a"), (1, 3, "b")]
    assert clusters[0].purity == pytest.approx(2 / 3) and clusters[1].purity == 1.0
    assert purity == pytest.approx(4 / 5)


@pytest.mark.slow  # numba compiles UMAP on its first call (~100 s on a loaded 2-core machine)
def test_umap_map_is_deterministic_for_a_seed() -> None:
    pytest.importorskip("umap", reason="umap-learn is an optional extra (sonovec-server[umap])")
    vectors, labels = clustered(10)
    points = Points([f"i{i}" for i in range(30)], [(lab,) for lab in labels], [{}] * 30, vectors, 30, 1)
    first = compute_map(points, MapOptions(method="umap", n_neighbors=5, seed=1))
    again = compute_map(points, MapOptions(method="umap", n_neighbors=5, seed=1))
    assert np.array_equal(first.coords, again.coords) and first.params["n_neighbors"] == 5
