"""Collections, search and classification over REST and gRPC equal the core called directly."""

from __future__ import annotations

import numpy as np
import pytest

from sonovec.client import Client, IndexSpec, NewItem, SonovecClientError, SpaceClaim
from sonovec.server.collections.options import ClassifyOptions, ProbeOptions, SearchOptions
from sonovec.server.core import AudioSource, EmbedOptions

from .conftest import Reference, assert_same_array, clip

pytestmark = pytest.mark.contract
spec = pytest.importorskip("sonovec.server.collections")

LABELLED = {
    f"{label}{i}": (label, clip(1.0, 16_000, 1, seed=seed))
    for i, (label, seed) in enumerate(
        [("a", 101), ("a", 102), ("a", 103), ("b", 104), ("b", 105), ("b", 106)]
    )
}
QUERY = clip(1.2, 16_000, 1, seed=107)


def _core_items() -> list[object]:
    return [
        spec.NewItem(item_id, None, AudioSource(data=audio), (label,), {"n": i})
        for i, (item_id, (label, audio)) in enumerate(LABELLED.items())
    ]


def _client_items() -> list[NewItem]:
    return [
        NewItem(item_id, audio=audio, labels=[label], metadata={"n": i})
        for i, (item_id, (label, audio)) in enumerate(LABELLED.items())
    ]


@pytest.fixture(scope="module")
def core_collection(reference: Reference) -> str:
    """The same collection, built by the core directly."""
    name = "contract-ref"

    collections = reference.runtime.collections

    async def build(service) -> None:  # type: ignore[no-untyped-def]
        await collections.create(name)
        await collections.upsert(name, _core_items())
        query = await service.embed(AudioSource(data=QUERY), EmbedOptions())
        await collections.upsert(name, [spec.NewItem("q", query.vector)])
        await collections.train_probe(name, "p", ProbeOptions(folds=2))

    reference.run(build)
    return name


def test_collection_life_cycle(
    client: Client, transport: str, reference: Reference, core_collection: str
) -> None:
    ref = reference.runtime.collections
    name = f"contract-{transport}"
    created = client.collections.create(name, description="contract suite")
    assert (created.name, created.count, created.index.type, created.description) == (
        name,
        0,
        "flat",
        "contract suite",
    )
    assert created.space.model == "encodec_48khz" and created.space.dim == 128
    assert name in [c.name for c in client.collections.list()]

    added = client.collections.add(name, _client_items())
    assert added.ids == list(LABELLED) and added.count == len(LABELLED)
    embedding = client.embed(QUERY)
    client.collections.add(name, [NewItem("q", vector=embedding.vector)], space=SpaceClaim.of(embedding))
    assert client.collections.info(name).count == len(LABELLED) + 1

    item = client.collections.get(name, "a0")
    want_item = reference.run(lambda s: ref.get(core_collection, "a0"))
    assert_same_array(item.vector, want_item.vector)
    assert (item.labels, item.metadata) == (["a"], {"n": 0})

    for query in ({"audio": QUERY}, {"id": "b4"}, {"vector": embedding.vector}):
        got = client.collections.search(name, k=4, labels=["a", "b"], **query)
        core_query = spec.Query(
            vector=query.get("vector"),
            item_id=query.get("id"),
            audio=AudioSource(data=QUERY) if "audio" in query else None,
        )
        want = reference.run(
            lambda s, q=core_query: ref.search(core_collection, q, SearchOptions(k=4, labels=("a", "b")))
        )
        assert [(h.id, h.score, h.labels, h.metadata) for h in got.hits] == [
            (h.id, h.score, list(h.labels), h.metadata) for h in want.hits
        ]
        assert got.exact and got.space.weights_fingerprint == created.space.weights_fingerprint

    knn = client.classify(QUERY, collection=name, k=4, weighting="uniform")
    want_knn = reference.run(
        lambda s: ref.classify(
            core_collection,
            spec.Query(audio=AudioSource(data=QUERY)),
            ClassifyOptions(k=4, weighting="uniform"),
        )
    )
    assert [(x.label, x.score) for x in knn.labels] == want_knn.labels and knn.method == "knn"
    assert [h.id for h in knn.neighbours] == [h.id for h in want_knn.neighbours]

    probe = client.collections.train_probe(name, "p", folds=2)
    want_probe = reference.run(lambda s: ref.probes(core_collection))[0]
    assert (probe.classes, probe.num_items, probe.version) == (want_probe.classes, want_probe.num_items, 1)
    assert probe.confusion_matrix.shape == (2, 2) and [p.name for p in client.collections.probes(name)] == [
        "p"
    ]
    by_probe = client.classify(QUERY, collection=name, probe="p")
    assert by_probe.method == "probe" and by_probe.probe == "p" and by_probe.probe_version == 1
    assert sorted(x.label for x in by_probe.labels) == ["a", "b"]

    assert client.collections.delete(name, ["b5", "missing"]) == 1
    assert client.collections.drop(name)
    with pytest.raises(SonovecClientError) as raised:
        client.collections.info(name)
    assert raised.value.kind == "not_found" and raised.value.field == "collection"


ZEROS = np.zeros(128, np.float32)


@pytest.mark.parametrize(
    "call, kind, field",
    [
        (lambda c: c.collections.create("bad name!"), "invalid_argument", "name"),
        (lambda c: c.collections.create("x", index="annoy"), "invalid_argument", "index.type"),
        (
            lambda c: c.collections.search("contract-none", vector=np.ones(128, np.float32)),
            "not_found",
            "collection",
        ),
        (lambda c: c.classify(QUERY, collection="contract-none"), "not_found", "collection"),
        # bounds live in the core's option types: both transports refuse the same values
        (lambda c: c.collections.search("contract-none", vector=ZEROS, k=0), "invalid_argument", "k"),
        (lambda c: c.collections.search("none", vector=ZEROS, nprobe=0), "invalid_argument", "nprobe"),
        (lambda c: c.classify(vector=ZEROS, collection="contract-none", k=0), "invalid_argument", "k"),
        (lambda c: c.classify(vector=ZEROS, collection="contract-none", top=0), "invalid_argument", "top"),
        (lambda c: c.classify(vector=ZEROS, collection="x", weighting="max"), "invalid_argument",
         "weighting"),
        (lambda c: c.collections.create("x", description="d" * 1001), "invalid_argument", "description"),
        (lambda c: c.collections.train_probe("contract-none", "p", folds=1), "invalid_argument", "folds"),
    ],
)
def test_collection_errors_are_the_same(client: Client, call, kind: str, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SonovecClientError) as raised:
        call(client)
    assert (raised.value.kind, raised.value.field) == (kind, field)


def test_vectors_of_another_space_are_refused(client: Client, transport: str) -> None:
    name = f"contract-space-{transport}"
    client.collections.create(name)
    other = client.embed(QUERY, model="encodec_24khz")
    with pytest.raises(SonovecClientError) as raised:
        client.collections.add(name, [NewItem("x", vector=other.vector)], space=SpaceClaim.of(other))
    assert raised.value.kind == "conflict" and raised.value.status in (409, "FAILED_PRECONDITION")
    with pytest.raises(SonovecClientError) as raised:
        client.collections.add(name, [NewItem("x", vector=np.ones(7, np.float32))])
    assert raised.value.kind == "invalid_argument"
    client.collections.drop(name)


def test_index_options_round_trip(client: Client, transport: str) -> None:
    name = f"contract-hnsw-{transport}"
    created = client.collections.create(
        name, pooling="mean_std", normalize=False, index=IndexSpec("hnsw", m=16)
    )
    assert (
        created.index == IndexSpec("hnsw", m=16) and created.space.dim == 256 and not created.space.normalize
    )
    assert client.collections.info(name).index == created.index
    client.collections.drop(name)
