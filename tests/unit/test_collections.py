"""Collections over the fake backend, in process: items, spaces, search, index types, the
write-ahead log and snapshots, kNN and probe classification, and the REST routes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from audiofiles import encode, tone
from timbres import pitch_set, timbre_set

from sonovec.server.collections import IndexSpec, NewItem, Query, SpaceClaim, store_for
from sonovec.server.collections.classify import knn_vote
from sonovec.server.collections.index import VectorIndex
from sonovec.server.collections.local import LocalStore
from sonovec.server.collections.manager import Collections
from sonovec.server.collections.options import ClassifyOptions, CreateOptions, ProbeOptions, SearchOptions
from sonovec.server.collections.spec import Hit
from sonovec.server.collections.wal import WAL
from sonovec.server.core import AudioSource, EmbedOptions
from sonovec.server.errors import ErrorKind, SonovecError
from sonovec.server.http.app import create_app
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

DIM = 128


def unit_rows(count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def two_clusters(count: int, seed: int) -> np.ndarray:
    """``count`` rows: the first half around one random direction, the second around another."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(2, seed=seed + 100)
    x = np.repeat(centres, [count // 2, count - count // 2], axis=0) + 0.3 * rng.standard_normal(
        (count, DIM)
    ) / np.sqrt(DIM)
    return x.astype(np.float32)


def wav(seconds: float = 1.0, seed: int = 0) -> AudioSource:
    return AudioSource(data=encode(tone(seconds, 44_100, 2, seed=seed), 44_100, "wav"))


async def refused(kind: ErrorKind, call, *words: str) -> SonovecError:  # type: ignore[no-untyped-def]
    with pytest.raises(SonovecError) as caught:
        await call
    assert caught.value.kind == kind, caught.value
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
    return caught.value


@pytest.fixture
async def runtime(make_runtime) -> AsyncIterator[Runtime]:  # type: ignore[no-untyped-def]
    rt = make_runtime(snapshot_interval_s=3600)
    yield rt
    await rt.collections.close()


def reopened(runtime: Runtime) -> Collections:
    """A second ``Collections`` on the same data directory, as after a crash (the first is
    never closed, so nothing is flushed or snapshotted on its way out)."""
    settings = runtime.settings
    return Collections(runtime.service, store_for(settings), max_recordings=settings.max_recordings)


# ---- items and spaces ----


async def test_create_list_drop_and_names(runtime: Runtime) -> None:
    cols = runtime.collections
    info = await cols.create("songs", CreateOptions(pooling="mean_std", description="test"))
    assert info.space.dim == 2 * DIM and info.space.weights_fingerprint == "fake-encodec_48khz-0"
    assert info.index.kind == "flat" and info.count == 0
    await refused(ErrorKind.CONFLICT, cols.create("songs"), "exists")
    await refused(ErrorKind.INVALID, cols.create("../etc"), "name")
    await refused(ErrorKind.INVALID, cols.create("x", CreateOptions(index=IndexSpec(kind="annoy"))), "index")  # type: ignore[arg-type]
    await refused(ErrorKind.NOT_FOUND, cols.create("x", CreateOptions(model="nope")), "nope")
    await cols.create("voices", CreateOptions(model="encodec_24khz"))
    assert [c.name for c in await cols.list()] == ["songs", "voices"]
    await cols.drop("songs")
    await refused(ErrorKind.NOT_FOUND, cols.info("songs"), "songs")
    assert [c.name for c in await cols.list()] == ["voices"]
    await cols.create("songs")  # the name is free again, and the old items are gone
    assert (await cols.info("songs")).count == 0


async def test_upsert_get_delete_by_vector_and_audio(runtime: Runtime) -> None:
    cols = runtime.collections
    await cols.create("c")
    rows = unit_rows(3)
    ids = await cols.upsert(
        "c", [NewItem(f"v{i}", rows[i], labels=("x",), metadata={"i": i}) for i in range(3)]
    )
    assert ids == ["v0", "v1", "v2"]
    await cols.upsert("c", [NewItem("clip", audio=wav(), labels=("tone",), metadata={"file": "a.wav"})])
    direct = await runtime.service.embed(wav(), EmbedOptions(pooling="mean"))
    item = await cols.get("c", "clip")
    np.testing.assert_array_equal(item.vector, direct.vector)
    assert item.labels == ("tone",) and item.metadata == {"file": "a.wav"}
    # upsert replaces: same count, new vector, labels and metadata
    await cols.upsert("c", [NewItem("v1", rows[0] * 2, labels=("y", "z"), metadata={})])
    assert (await cols.info("c")).count == 4
    replaced = await cols.get("c", "v1")
    assert replaced.labels == ("y", "z") and replaced.metadata == {}
    np.testing.assert_allclose(replaced.vector, rows[0] * 2)
    assert await cols.delete("c", ["v0", "missing"]) == 1
    await refused(ErrorKind.NOT_FOUND, cols.get("c", "v0"), "v0")
    assert (await cols.info("c")).count == 3


async def test_bad_items_write_nothing(runtime: Runtime) -> None:
    cols = runtime.collections
    await cols.create("c")
    good = NewItem("ok", unit_rows(1)[0])
    cases = [
        (NewItem("short", np.ones(5, np.float32)), "items[1].vector"),
        (NewItem("nan", np.full(DIM, np.nan, np.float32)), "finite"),
        (NewItem("both", unit_rows(1)[0], audio=wav()), "exactly one"),
        (NewItem("", unit_rows(1)[0]), "items[1].id"),
        (NewItem("meta", unit_rows(1)[0], metadata={"x": "y" * 20_000}), "metadata"),
        (NewItem("junk", audio=AudioSource(data=b"RIFF....")), "items[1].audio"),
    ]
    for bad, words in cases:
        error = await refused(
            ErrorKind.INVALID if bad.id != "junk" else ErrorKind.UNSUPPORTED, cols.upsert("c", [good, bad])
        )
        assert words in str(error), (words, str(error))
    assert (await cols.info("c")).count == 0


async def test_other_embedding_spaces_are_refused(runtime: Runtime) -> None:
    cols = runtime.collections
    await cols.create("c", CreateOptions(pooling="mean_std"))
    vector = unit_rows(1, 2 * DIM)[0]
    await cols.upsert(
        "c", [NewItem("a", vector)], space=SpaceClaim(model="encodec_48khz", pooling="mean_std")
    )
    error = await refused(
        ErrorKind.CONFLICT,
        cols.upsert("c", [NewItem("b", vector)], space=SpaceClaim(weights_fingerprint="pretrained-abc")),
        "pretrained-abc",
        "fake-encodec_48khz-0",
    )
    assert "mean_std" in error.message
    await refused(
        ErrorKind.CONFLICT, cols.search("c", Query(vector=vector, space=SpaceClaim(pooling="mean")))
    )
    # the server now runs other weights: audio would land in another space
    info = runtime.service.infos["encodec_48khz"]
    runtime.service.infos["encodec_48khz"] = dataclasses.replace(info, weights_fingerprint="other-weights")
    try:
        await refused(ErrorKind.CONFLICT, cols.upsert("c", [NewItem("b", audio=wav())]), "other-weights")
        await refused(ErrorKind.CONFLICT, cols.search("c", Query(audio=wav())), "other-weights")
        assert len((await cols.search("c", Query(vector=vector))).hits) == 1  # vectors still answer
    finally:
        runtime.service.infos["encodec_48khz"] = info


# ---- search ----


async def test_search_by_vector_id_audio_with_label_filter(runtime: Runtime) -> None:
    cols = runtime.collections
    await cols.create("c")
    rows = unit_rows(200)
    await cols.upsert(
        "c",
        [
            NewItem(f"v{i}", rows[i], labels=("even" if i % 2 == 0 else "odd",), metadata={"i": i})
            for i in range(200)
        ],
    )
    await cols.upsert("c", [NewItem("clip", audio=wav(seed=3))])
    brute = rows @ rows[7]
    order = [f"v{i}" for i in np.argsort(-brute)[:5]]
    by_vector = await cols.search("c", Query(vector=rows[7] * 3), SearchOptions(k=5))
    assert [h.id for h in by_vector.hits] == order and by_vector.exact
    assert by_vector.hits[0].score == pytest.approx(1.0, abs=1e-5) and by_vector.hits[0].metadata == {"i": 7}
    by_id = await cols.search("c", Query(item_id="v7"), SearchOptions(k=4))
    assert [h.id for h in by_id.hits] == order[1:5]  # the item itself left out
    odd = await cols.search("c", Query(item_id="v7"), SearchOptions(k=10, labels=("odd",)))
    assert len(odd.hits) == 10 and all(h.labels == ("odd",) for h in odd.hits)
    assert [h.id for h in odd.hits] == [f"v{i}" for i in np.argsort(-brute) if i % 2][1:11]
    assert (await cols.search("c", Query(audio=wav(seed=3)), SearchOptions(k=1))).hits[0].id == "clip"
    assert (await cols.search("c", Query(vector=rows[0]), SearchOptions(k=5, labels=("nothing",)))).hits == []
    await refused(ErrorKind.INVALID, cols.search("c", Query(vector=rows[0], item_id="v1")), "exactly one")
    await refused(ErrorKind.INVALID, cols.search("c", Query(vector=rows[0]), SearchOptions(k=0)), "k")
    await refused(ErrorKind.NOT_FOUND, cols.search("c", Query(item_id="nope")), "nope")


@pytest.mark.parametrize(
    "index", [IndexSpec(kind="hnsw", hnsw_m=16), IndexSpec(kind="ivf", nlist=16, nprobe=4)]
)
async def test_approximate_indexes_recall_and_per_call_parameters(runtime: Runtime, index: IndexSpec) -> None:
    cols = runtime.collections
    await cols.create("flat")
    await cols.create("approx", CreateOptions(index=index))
    rows = unit_rows(1500, seed=1)
    items = [NewItem(f"v{i}", rows[i], labels=(str(i % 3),)) for i in range(len(rows))]
    for name in ("flat", "approx"):
        for start in range(0, len(items), 500):
            await cols.upsert(name, items[start : start + 500])
    assert (await cols.info("approx")).count == 1500
    queries = unit_rows(50, seed=2)
    recall = []
    for q in queries:
        exact = {h.id for h in (await cols.search("flat", Query(vector=q), SearchOptions(k=10))).hits}
        found = await cols.search("approx", Query(vector=q), SearchOptions(k=10, ef_search=128, nprobe=16))
        recall.append(len(exact & {h.id for h in found.hits}) / 10)
        assert not found.exact
    assert np.mean(recall) >= 0.95, np.mean(recall)
    state = cols.store.states["approx"]
    assert state.index.spec == index  # per-call parameters never touch the shared index
    # deletes and replacements disappear from approximate results too
    top = (await cols.search("approx", Query(vector=rows[5]), SearchOptions(k=1))).hits[0]
    assert top.id == "v5"
    await cols.delete("approx", ["v5"])
    await cols.upsert("approx", [NewItem("v6", -rows[6])])
    assert "v5" not in {
        h.id for h in (await cols.search("approx", Query(vector=rows[5]), SearchOptions(k=20))).hits
    }
    assert (await cols.search("approx", Query(vector=-rows[6]), SearchOptions(k=1))).hits[0].id == "v6"
    filtered = await cols.search("approx", Query(vector=rows[9]), SearchOptions(k=10, labels=("0",)))
    assert filtered.exact and filtered.hits[0].id == "v9" and all(h.labels == ("0",) for h in filtered.hits)


def test_hnsw_tombstones_are_compacted_by_a_rebuild() -> None:
    index = VectorIndex(IndexSpec(kind="hnsw", hnsw_m=16), DIM)
    rows = unit_rows(3000, seed=10)
    index.add(np.arange(3000), rows)
    index.remove(np.arange(0, 3000, 2)[:900])
    assert len(index.tombstones) == 900 and index.live == 2100  # below the rebuild threshold
    assert not set(index.search(rows[0], 5)[1].tolist()) & set(range(0, 1800, 2))
    index.remove(np.arange(1, 1200, 2))  # now over a quarter of what is live: rebuilt
    assert index.tombstones == set() and index.live == 1500
    scores, ids, _ = index.search(rows[2999], 3, ef_search=64)
    assert ids[0] == 2999 and scores[0] == pytest.approx(1.0, abs=1e-5)


async def test_concurrent_searches_and_writes(runtime: Runtime) -> None:
    cols = runtime.collections
    await cols.create("c", CreateOptions(index=IndexSpec(kind="hnsw")))
    rows = unit_rows(600, seed=4)
    await cols.upsert("c", [NewItem(f"v{i}", rows[i]) for i in range(300)])

    async def writer(start: int) -> None:
        for i in range(start, start + 100, 10):
            await cols.upsert("c", [NewItem(f"v{j}", rows[j]) for j in range(i, i + 10)])
            await cols.delete("c", [f"v{i - 300}"])

    async def reader() -> int:
        hits = 0
        for i in range(40):
            hits += len((await cols.search("c", Query(vector=rows[i]), SearchOptions(k=5))).hits)
        return hits

    results = await asyncio.gather(writer(300), writer(400), writer(500), *(reader() for _ in range(4)))
    assert all(r == 200 for r in results[3:])
    assert (await cols.info("c")).count == 600 - 30


# ---- durability ----


async def test_log_replay_after_a_crash_answers_the_same(runtime: Runtime) -> None:
    cols = runtime.collections
    await cols.create("c", CreateOptions(pooling="mean_std", index=IndexSpec(kind="flat")))
    rows = unit_rows(120, 2 * DIM, seed=5)
    for i in range(0, 100, 10):
        await cols.upsert(
            "c", [NewItem(f"v{i + j}", rows[i + j], labels=("a",), metadata={"n": i + j}) for j in range(10)]
        )
    store = cols.store
    assert isinstance(store, LocalStore)
    await store.snapshot("c")  # snapshot at 100 items, then more in the log only
    await cols.upsert("c", [NewItem(f"v{i}", rows[i]) for i in range(100, 120)])
    await cols.upsert("c", [NewItem("v3", rows[3] * -1, labels=("b",))])  # replace
    await cols.delete("c", ["v4"])
    before = [await cols.search("c", Query(vector=rows[i]), SearchOptions(k=7)) for i in range(0, 120, 11)]

    after = reopened(runtime)  # the first was never closed: no final snapshot
    try:
        assert (await after.info("c")).count == 119
        for i, result in zip(range(0, 120, 11), before, strict=True):
            again = await after.search("c", Query(vector=rows[i]), SearchOptions(k=7))
            assert [(h.id, h.score) for h in again.hits] == [(h.id, h.score) for h in result.hits]
        assert (await after.get("c", "v3")).labels == ("b",)
        await refused(ErrorKind.NOT_FOUND, after.get("c", "v4"))
    finally:
        await after.close()


async def test_torn_tail_and_ops_already_in_the_snapshot(runtime: Runtime, tmp_path: Path) -> None:
    cols = runtime.collections
    await cols.create("c")
    rows = unit_rows(30, seed=6)
    await cols.upsert("c", [NewItem(f"v{i}", rows[i]) for i in range(20)])
    wal = tmp_path / "data" / "collections" / "c" / WAL
    logged = wal.read_bytes()
    assert isinstance(cols.store, LocalStore)
    await cols.store.snapshot("c")
    assert wal.stat().st_size == 0
    # a crash between the snapshot's rename and the log's truncation, then a torn last record
    await cols.upsert("c", [NewItem(f"v{i}", rows[i]) for i in range(20, 30)])
    tail = wal.read_bytes()
    wal.write_bytes(logged + tail + tail[:37])
    after = reopened(runtime)
    try:
        info = await after.info("c")
        assert info.count == 30  # no duplicates, nothing lost
        hits = (await after.search("c", Query(vector=rows[25]), SearchOptions(k=30))).hits
        assert len({h.id for h in hits}) == len(hits) == 30
        assert wal.stat().st_size == 0  # the torn record cut off, the replayed log compacted (issue 10)
        await after.upsert("c", [NewItem("new", rows[0])])  # and the log goes on cleanly
    finally:
        await after.close()
    again = reopened(runtime)
    try:
        assert (await again.info("c")).count == 31
    finally:
        await again.close()


# ---- classification ----


def test_knn_vote_weightings() -> None:
    hits = [Hit("a", 0.99, ("cat",), {}), Hit("b", 0.5, ("dog",), {}), Hit("c", 0.4, ("dog", "pet"), {})]
    uniform = dict(knn_vote(hits, "uniform"))
    assert uniform == pytest.approx({"dog": 0.5, "cat": 0.25, "pet": 0.25})
    distance = knn_vote(hits, "distance")
    assert distance[0][0] == "cat" and distance[0][1] > 0.9  # 1/0.01 against 1/0.5 + 1/0.6
    assert sum(score for _, score in distance) == pytest.approx(1.0)
    assert dict(knn_vote(hits, "uniform", classes=["dog"])) == {"dog": 1.0}


async def _labelled(cols: Collections, name: str, clips: list[tuple[str, np.ndarray]], rate: int) -> None:
    items = [
        NewItem(f"{name}{i}", audio=AudioSource(array=x, sample_rate=rate), labels=(label,))
        for i, (label, x) in enumerate(clips)
    ]
    for start in range(0, len(items), 32):
        await cols.upsert(name, items[start : start + 32])


@pytest.mark.parametrize("make_set", [timbre_set, pitch_set], ids=["timbre", "pitch"])
async def test_knn_and_probe_recover_synthetic_labels(runtime: Runtime, make_set) -> None:  # type: ignore[no-untyped-def]
    cols = runtime.collections
    rate = 48_000  # the model's rate: no resampling
    await cols.create("train", CreateOptions(pooling="mean_std"))
    await _labelled(cols, "train", make_set(60, rate, seed=1), rate)
    held_out = make_set(30, rate, seed=2)
    probe = await cols.train_probe("train", "p", ProbeOptions(folds=5))
    assert probe.version == 1 and probe.num_items == 60 and len(probe.classes) == 3
    assert np.array(probe.confusion_matrix).sum() == 60
    knn_right = probe_right = 0
    for label, x in held_out:
        query = Query(audio=AudioSource(array=x, sample_rate=rate))
        knn_right += (await cols.classify("train", query, ClassifyOptions(k=5, weighting="distance"))).labels[
            0
        ][0] == label
        probe_right += (await cols.classify("train", query, ClassifyOptions(probe="p"))).labels[0][0] == label
    knn_acc, probe_acc = knn_right / len(held_out), probe_right / len(held_out)
    print(
        f"\n{make_set.__name__} (fake backend, mean_std): kNN held-out accuracy {knn_acc:.2f}, "
        f"probe held-out {probe_acc:.2f}, probe {probe.folds}-fold CV {probe.cv_accuracy:.2f}"
    )
    assert knn_acc >= 0.9 and probe_acc >= 0.9 and probe.cv_accuracy >= 0.9


async def test_probes_are_versioned_persisted_and_checked(runtime: Runtime) -> None:
    cols = runtime.collections
    await cols.create("c")
    rows = two_clusters(40, seed=7)
    await cols.upsert("c", [NewItem(f"v{i}", rows[i], labels=("hi" if i < 20 else "lo",)) for i in range(40)])
    await cols.upsert("c", [NewItem("both", rows[0], labels=("hi", "lo")), NewItem("none", rows[1])])
    first = await cols.train_probe("c", "axis", ProbeOptions(folds=4))
    assert (
        first.version == 1 and first.num_items == 40 and first.cv_accuracy == 1.0
    )  # multi-labelled left out
    assert first.confusion_matrix == [[20, 0], [0, 20]] and first.classes == ["hi", "lo"]
    second = await cols.train_probe("c", "axis", ProbeOptions(c=0.1))
    assert second.version == 2
    result = await cols.classify("c", Query(item_id="v3"), ClassifyOptions(probe="axis"))
    assert result.labels[0][0] == "hi" and result.probe_version == 2
    assert sum(p for _, p in result.labels) == pytest.approx(1.0)
    assert (
        await cols.classify("c", Query(vector=rows[30]), ClassifyOptions(probe="axis", version=1))
    ).probe_version == 1
    await refused(
        ErrorKind.NOT_FOUND,
        cols.classify("c", Query(vector=rows[0]), ClassifyOptions(probe="axis", version=9)),
    )
    await refused(
        ErrorKind.NOT_FOUND, cols.classify("c", Query(vector=rows[0]), ClassifyOptions(probe="other"))
    )
    await refused(
        ErrorKind.INVALID, cols.train_probe("c", "one", ProbeOptions(classes=("hi",))), "at least 2 classes"
    )
    after = reopened(runtime)
    try:
        assert [(p.name, p.version) for p in await after.probes("c")] == [("axis", 1), ("axis", 2)]
    finally:
        await after.close()


# ---- REST ----


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sonovec") as c:
        yield c


async def test_rest_collections_round_trip(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/collections", json={"name": "songs", "index": {"type": "hnsw", "m": 16}})
    assert created.status_code == 201, created.text
    assert created.json()["space"]["dim"] == DIM and created.json()["index"]["type"] == "hnsw"
    again = await client.post("/v1/collections", json={"name": "songs"})
    assert again.status_code == 409 and again.json()["error"]["kind"] == "conflict"
    rows = unit_rows(5, seed=8)
    items = [
        {"id": f"dir/v{i}.wav", "vector": rows[i].tolist(), "labels": ["a"], "metadata": {"i": i}}
        for i in range(5)
    ]
    added = await client.post("/v1/collections/songs/items", json={"items": items})
    assert added.status_code == 200, added.text
    assert added.json()["count"] == 5
    upload = await client.post(
        "/v1/collections/songs/items",
        files={"audio": ("a.wav", encode(tone(1.0, 44_100, 2), 44_100, "wav"))},
        data={"id": "clip", "labels": "b,c", "metadata": '{"source": "upload"}'},
    )
    assert upload.status_code == 200, upload.text
    item = (await client.get("/v1/collections/songs/items/clip")).json()
    assert (
        item["labels"] == ["b", "c"]
        and item["metadata"] == {"source": "upload"}
        and len(item["vector"]) == DIM
    )
    assert (await client.get("/v1/collections/songs/items/dir/v2.wav")).json()["metadata"] == {"i": 2}
    by_vector = await client.post("/v1/collections/songs/search", json={"vector": rows[2].tolist(), "k": 2})
    assert [h["id"] for h in by_vector.json()["hits"]][0] == "dir/v2.wav"
    by_file = await client.post(
        "/v1/collections/songs/search",
        files={"audio": ("q.wav", encode(tone(1.0, 44_100, 2), 44_100, "wav"))},
        data={"k": "1"},
    )
    assert by_file.json()["hits"][0]["id"] == "clip", by_file.text
    filtered = await client.post(
        "/v1/collections/songs/search", json={"id": "dir/v0.wav", "labels": ["a"], "k": 10}
    )
    assert len(filtered.json()["hits"]) == 4
    wrong = await client.post(
        "/v1/collections/songs/items",
        json={
            "items": [{"id": "x", "vector": rows[0].tolist()}],
            "space": {"weights_fingerprint": "elsewhere"},
        },
    )
    assert wrong.status_code == 409 and "elsewhere" in wrong.json()["error"]["message"]
    bad = await client.post("/v1/collections/songs/search", json={"k": 3})
    assert bad.status_code == 422 and bad.json()["error"]["allowed"]
    deleted = await client.delete("/v1/collections/songs/items/dir/v0.wav")
    assert deleted.json() == {"collection": "songs", "id": "dir/v0.wav", "deleted": True}
    assert (await client.delete("/v1/collections/songs/items/dir/v0.wav")).json()["deleted"] is False
    assert (await client.get("/v1/collections/songs/items/dir/v0.wav")).status_code == 404
    listed = (await client.get("/v1/collections")).json()["collections"]
    assert [(c["name"], c["count"]) for c in listed] == [("songs", 5)]
    assert (await client.delete("/v1/collections/songs")).status_code == 200
    assert (await client.get("/v1/collections/songs")).status_code == 404


async def test_rest_classify_and_probes(client: httpx.AsyncClient) -> None:
    await client.post("/v1/collections", json={"name": "c"})
    rows = two_clusters(30, seed=9)
    items = [
        {"id": f"v{i}", "vector": rows[i].tolist(), "labels": ["up" if i < 15 else "down"]} for i in range(30)
    ]
    await client.post("/v1/collections/c/items", json={"items": items})
    knn = await client.post(
        "/v1/classify", json={"collection": "c", "id": "v2", "k": 5, "weighting": "uniform"}
    )
    assert knn.status_code == 200, knn.text
    body = knn.json()
    assert body["method"] == "knn" and body["labels"][0]["label"] == "up" and len(body["neighbours"]) == 5
    trained = await client.post("/v1/collections/c/probes", json={"name": "updown", "folds": 3})
    assert trained.status_code == 201, trained.text
    assert trained.json()["version"] == 1 and trained.json()["cv_accuracy"] == 1.0
    assert trained.json()["confusion_matrix"] == [[15, 0], [0, 15]]
    probed = await client.post(
        "/v1/classify", json={"collection": "c", "probe": "updown", "vector": rows[20].tolist()}
    )
    assert probed.json()["labels"][0]["label"] == "down" and probed.json()["probe_version"] == 1
    listed = await client.get("/v1/collections/c/probes")
    assert [(p["name"], p["version"]) for p in listed.json()["probes"]] == [("updown", 1)]
    missing = await client.post("/v1/classify", json={"collection": "c", "probe": "nope", "id": "v1"})
    assert missing.status_code == 404


@pytest.mark.model
async def test_knn_and_probe_through_real_encodec_random_weights(tmp_path: Path) -> None:
    """The same through EnCodec 24 kHz in PyTorch with random-init weights (no trained checkpoint
    here): weaker features than a trained model, still far above chance (1/3)."""
    pytest.importorskip("sonovec.models.encodec_torch")
    settings = Settings(
        backend="torch",
        weights="random",
        device="cpu",
        grpc_port=0,
        models=["encodec_24khz"],
        data_dir=tmp_path / "data",
    )
    runtime = Runtime(settings)
    await runtime.start()
    try:
        cols, rate = runtime.collections, 24_000
        await cols.create("notes", CreateOptions(pooling="mean_std"))
        train = pitch_set(30, rate, seed=1, seconds=0.5)
        await _labelled(cols, "notes", train, rate)
        probe = await cols.train_probe("notes", "pitch", ProbeOptions(folds=5))
        right = 0
        held_out = pitch_set(12, rate, seed=2, seconds=0.5)
        for label, x in held_out:
            votes = await cols.classify(
                "notes", Query(audio=AudioSource(array=x, sample_rate=rate)), ClassifyOptions(k=5)
            )
            right += votes.labels[0][0] == label
        print(
            f"\npitch (EnCodec 24 kHz, random weights, mean_std): kNN held-out accuracy "
            f"{right / len(held_out):.2f}, probe {probe.folds}-fold CV {probe.cv_accuracy:.2f}"
        )
        assert right / len(held_out) >= 0.6 and probe.cv_accuracy >= 0.6
    finally:
        await runtime.drain()
