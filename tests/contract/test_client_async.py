"""``AsyncClient`` and ``AsyncCollections`` give what ``Client`` and ``Collections`` give (which the
other contract tests hold to the core), method by method, over REST and gRPC."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from sonovec.client import AsyncClient, Client, NewItem, SonovecClientError, SpaceClaim

from .conftest import clip

pytestmark = pytest.mark.contract
pytest.importorskip("sonovec.server.collections")

ITEMS = {
    f"{label}{i}": (label, clip(1.0, 16_000, 1, seed=seed))
    for i, (label, seed) in enumerate([("a", 201), ("a", 202), ("b", 203), ("b", 204)])
}
QUERY = clip(1.2, 16_000, 1, seed=205)


async def settle(result: Any) -> Any:
    """The result of a sync call as it is; of an async one, awaited."""
    return await result if inspect.isawaitable(result) else result


async def scenario(client: Client | AsyncClient, name: str) -> dict[str, Any]:
    """Every method of the client and of its collections, once; what each gave, as plain values."""
    c, s = client, settle
    seen: dict[str, Any] = {}
    models = await s(c.models())
    seen["models"] = ([m.name for m in models.models], models.limits, c.limits == models.limits)
    info = await s(c.info())
    seen["info"] = (info.limits, info.transport, info.max_receive_message_bytes)
    embedding = await s(c.embed(QUERY, pooling="mean_std", frames=True))
    seen["embed"] = (embedding.vector.tolist(), embedding.frames.shape)
    codes = await s(c.encode(QUERY, bandwidth=3.0))
    seen["encode"] = ([x.tolist() for x in codes.segments], codes.scales)
    seen["decode"] = (await s(c.decode(codes))).audio.tolist()
    seen["similarity"] = (await s(c.similarity([QUERY, ITEMS["a0"][1]]))).matrix.tolist()
    seen["self_similarity"] = (await s(c.self_similarity(QUERY, segment_seconds=0.5))).matrix.tolist()

    created = await s(c.collections.create(name, description="twins"))
    seen["create"] = (created.space, created.index, created.count, created.description)
    items = [NewItem(i, audio=audio, labels=[label]) for i, (label, audio) in ITEMS.items()]
    seen["add"] = (await s(c.collections.add(name, items))).count
    plain = await s(c.embed(QUERY))
    await s(c.collections.add(name, [NewItem("q", vector=plain.vector)], space=SpaceClaim.of(plain)))
    seen["list"] = name in [x.name for x in await s(c.collections.list())]
    seen["info_collection"] = (await s(c.collections.info(name))).count
    seen["get"] = (await s(c.collections.get(name, "a0"))).vector.tolist()
    hits = await s(c.collections.search(name, QUERY, k=3, labels=["a", "b"]))
    seen["search"] = [(h.id, h.score) for h in hits.hits]
    seen["search_id"] = [(h.id, h.score) for h in (await s(c.collections.search(name, id="b2", k=2))).hits]
    knn = await s(c.classify(QUERY, collection=name, k=3))
    seen["classify"] = [(x.label, x.score) for x in knn.labels]
    probe = await s(c.collections.train_probe(name, "p", folds=2))
    seen["train_probe"] = (probe.classes, probe.num_items, probe.version)
    seen["probes"] = [(p.name, p.version) for p in await s(c.collections.probes(name))]
    seen["classify_probe"] = (await s(c.classify(id="a1", collection=name, probe="p"))).method
    seen["delete"] = await s(c.collections.delete(name, ["b3", "missing"]))
    seen["drop"] = await s(c.collections.drop(name))
    with pytest.raises(SonovecClientError) as raised:
        await s(c.collections.info(name))
    seen["after_drop"] = raised.value.kind
    return seen


def test_async_twins_give_what_sync_ones_give(
    client: Client, async_client_factory: Callable[..., AsyncClient], transport: str
) -> None:
    want = asyncio.run(scenario(client, f"twins-sync-{transport}"))

    async def run() -> dict[str, Any]:
        async with async_client_factory(timeout=30.0) as twin:
            return await scenario(twin, f"twins-async-{transport}")

    got = asyncio.run(run())
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == want[key], key
    assert want["models"][2] and want["delete"] == 1 and want["drop"] and want["after_drop"] == "not_found"
