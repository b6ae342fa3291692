"""Hostile JSON, names and ids against a live server: deep, huge, invalid UTF-8 and chunked
bodies; stored fields that could not be served back. Whatever is accepted must read back, search
and classify with 200, also after a restart."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from hostile.conftest import MAX_REQUEST_BYTES, Live, MiB, PeakProbe

pytestmark = pytest.mark.integration

DIM = 128  # encodec_48khz, pooling mean


def vector(seed: int = 1) -> list[float]:
    return [((i * 7919 + seed * 104729) % 1000) / 1000 - 0.5 for i in range(DIM)]


@pytest.fixture
def collection(live: Live) -> Iterator[str]:
    name = f"c-{uuid.uuid4().hex[:8]}"
    assert live.http.post("/v1/collections", json={"name": name}).status_code == 201
    yield name
    live.http.delete(f"/v1/collections/{name}")


def add(live: Live, collection: str, **item: object) -> tuple[int, dict]:
    item.setdefault("vector", vector())
    response = live.http.post(f"/v1/collections/{collection}/items", json={"items": [item]})
    return response.status_code, response.json()


def post_raw(live: Live, path: str, body: bytes, **headers: str) -> tuple[int, dict]:
    response = live.http.post(path, content=body, headers={"content-type": "application/json", **headers})
    return response.status_code, response.json()


def assert_invalid(status: int, body: dict, field: str) -> None:
    assert status == 422, body
    assert body["error"]["kind"] == "invalid_argument", body
    assert body["error"]["field"] == field, body


def assert_servable(live: Live, collection: str) -> None:
    """Every stored item reads back; search and classify over all of them answer 200."""
    search = live.http.post(f"/v1/collections/{collection}/search", json={"vector": vector(2), "k": 50})
    assert search.status_code == 200, search.text
    for hit in search.json()["hits"]:
        got = live.http.get(f"/v1/collections/{collection}/items/{quote(hit['id'], safe='/')}")
        assert got.status_code == 200, (hit["id"], got.text)
    classify = live.http.post("/v1/classify", json={"collection": collection, "vector": vector(3)})
    assert classify.status_code == 200, classify.text


# ---- bodies ----


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_deeply_nested_bodies_are_422(live: Live, peak: PeakProbe, collection: str, depth: int) -> None:
    body = b'{"items": [{"id": "x", "vector": [0], "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}]}"
    status, reply = post_raw(live, f"/v1/collections/{collection}/items", body)
    assert status == 422, reply
    assert reply["error"]["kind"] == "invalid_argument"
    peak.assert_below(32 * MiB)


@pytest.mark.parametrize("depth", [17, 500])
def test_metadata_nested_past_the_limit_is_refused(live: Live, collection: str, depth: int) -> None:
    metadata: object = 1
    for _ in range(depth):
        metadata = {"a": metadata}
    status, reply = add(live, collection, id="deep", metadata=metadata)
    assert_invalid(status, reply, "items[0].metadata")
    assert "nested" in reply["error"]["message"]
    assert_servable(live, collection)


def test_metadata_at_the_depth_limit_is_stored_and_served(live: Live, collection: str) -> None:
    metadata: object = "leaf"
    for _ in range(15):
        metadata = {"a": metadata}
    status, reply = add(live, collection, id="deep-ok", metadata={"m": metadata})
    assert status == 200, reply
    assert live.http.get(f"/v1/collections/{collection}/items/deep-ok").json()["metadata"] == {"m": metadata}


def test_invalid_utf8_body_is_422(live: Live, collection: str) -> None:
    status, reply = post_raw(live, f"/v1/collections/{collection}/items", b'{"items": [{"id": "\xff\xfe"}]}')
    assert_invalid(status, reply, "body")
    assert "UTF-8" in reply["error"]["message"]


def test_body_that_is_not_json_is_422(live: Live) -> None:
    status, reply = post_raw(live, "/v1/embed", b"{not json")
    assert_invalid(status, reply, "body")


@pytest.mark.parametrize(
    ("where", "item"),
    [
        ("items[0].metadata", {"id": "m", "metadata": {"k": "\ud800"}}),
        ("items[0].metadata", {"id": "m", "metadata": {"\udfff": 1}}),
        ("items[0].labels[0]", {"id": "l", "labels": ["\ud800"]}),
        ("items[0].labels[0]", {"id": "l", "labels": ["a\nb"]}),
        ("items[0].id", {"id": "\ud800"}),
        ("items[0].id", {"id": "line\nbreak"}),
        ("items[0].id", {"id": "tab\there"}),
        ("items[0].id", {"id": "../../x"}),
        ("items[0].id", {"id": "a/./b"}),
        ("items[0].id", {"id": "x" * 257}),
        ("items[0].metadata", {"id": "big", "metadata": {"k": "x" * (16 * 1024)}}),
    ],
)
def test_unservable_fields_are_refused_at_add(live: Live, collection: str, where: str, item: dict) -> None:
    body = json.dumps({"items": [{**item, "vector": vector()}]}).encode()  # \ud800 escapes survive
    status, reply = post_raw(live, f"/v1/collections/{collection}/items", body)
    assert_invalid(status, reply, where)
    assert reply["error"]["allowed"]
    assert_servable(live, collection)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e39"])
def test_non_finite_vectors_are_refused(live: Live, collection: str, value: str) -> None:
    numbers = ", ".join([value] + ["0.1"] * (DIM - 1))
    body = f'{{"items": [{{"id": "v", "vector": [{numbers}]}}]}}'.encode()
    status, reply = post_raw(live, f"/v1/collections/{collection}/items", body)
    assert status == 422, reply
    assert live.http.get(f"/v1/collections/{collection}/items/v").status_code == 404


@pytest.mark.parametrize("item_id", ["a/b/c", "é ü 音", "with space", "q?x#y", "%2F", "emoji-🎵", "a..b"])
def test_odd_but_valid_ids_add_read_and_delete(live: Live, collection: str, item_id: str) -> None:
    status, reply = add(live, collection, id=item_id, labels=["音"], metadata={"ok": [1, 2.5, None, True]})
    assert status == 200, reply
    path = f"/v1/collections/{collection}/items/{quote(item_id, safe='/')}"
    got = live.http.get(path)
    assert got.status_code == 200, got.text
    assert got.json()["id"] == item_id
    assert_servable(live, collection)
    assert live.http.delete(path).json()["deleted"] is True


@pytest.mark.parametrize("name", ["abc\n", "../x", ".hidden", "-x", "a" * 65, "a b", "a\u00e9", ""])
def test_bad_collection_names_are_refused(live: Live, name: str) -> None:
    status, reply = post_raw(live, "/v1/collections", json.dumps({"name": name}).encode())
    assert_invalid(status, reply, "name")


def test_bad_probe_names_are_refused(live: Live, collection: str) -> None:
    status, reply = post_raw(
        live, f"/v1/collections/{collection}/probes", json.dumps({"name": "p\n"}).encode()
    )
    assert_invalid(status, reply, "probe")


def test_description_with_a_lone_surrogate_is_refused(live: Live) -> None:
    status, reply = post_raw(live, "/v1/collections", b'{"name": "desc", "description": "\\ud800"}')
    assert_invalid(status, reply, "description")


# ---- size ----


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"audio": {"data": "'
    for _ in range(total // size):
        yield b"A" * size
    yield b'"}}'


def test_chunked_body_over_the_limit_is_413_without_reading_it_whole(live: Live, peak: PeakProbe) -> None:
    total = 64 * MiB  # 20 x the body limit
    headers = {"content-type": "application/json"}
    response = live.http.post("/v1/embed", content=_chunks(total), headers=headers)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["kind"] == "payload_too_large"
    assert response.request.headers["transfer-encoding"] == "chunked"
    peak.assert_below(24 * MiB)


def test_content_length_over_the_limit_is_413_at_once(live: Live, peak: PeakProbe) -> None:
    body = b"{" + b" " * (4 * MAX_REQUEST_BYTES) + b"}"
    status, reply = post_raw(live, "/v1/embed", body)
    assert status == 413, reply
    assert reply["error"]["field"] == "body"
    peak.assert_below(24 * MiB)


def test_huge_json_just_under_the_limit_is_refused_cheaply(live: Live, peak: PeakProbe) -> None:
    """A body of a million tiny values (inside the byte limit): 422 or 413, never a 500."""
    body = ('{"items": [' + ",".join(['{"id": "x", "vector": [0]}'] * 90_000) + "]}").encode()
    status, reply = post_raw(live, "/v1/collections/none/items", body)
    assert status in (404, 413, 422), reply
    peak.assert_below(160 * MiB)
