"""One collection in memory: items, label postings, the FAISS index, and its readers-writer lock.

Every change is an ``Op`` (upsert or delete of one item, with a sequence number). Storage (the
write-ahead log, or the Redis stream) records ops; this module applies them. Applying the same
ops again in the same order gives the same state, and an upsert replaces any item of that id, so
replaying a log never duplicates an item.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from sonovec.server.collections.index import VectorIndex
from sonovec.server.collections.spec import CollectionInfo, Hit, Item
from sonovec.server.pooling import l2_normalize

T = TypeVar("T")


@dataclass(frozen=True)
class Op:
    kind: Literal["upsert", "delete"]
    id: str
    vector: np.ndarray | None = None  # upsert: [dim] float32
    labels: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def with_seq(self, seq: int) -> Op:
        return Op(self.kind, self.id, self.vector, self.labels, self.metadata, seq)


# ---- one item as bytes: u32 header length | JSON {id, labels, metadata} | float32 vector ----


def encode_item(op: Op) -> bytes:
    header = json.dumps({"id": op.id, "labels": list(op.labels), "metadata": op.metadata}).encode()
    vector = b"" if op.vector is None else np.ascontiguousarray(op.vector, dtype="<f4").tobytes()
    return struct.pack("<I", len(header)) + header + vector


def decode_item(blob: bytes, seq: int = 0) -> Op:
    (size,) = struct.unpack_from("<I", blob)
    header = json.loads(blob[4 : 4 + size])
    vector = np.frombuffer(blob, dtype="<f4", offset=4 + size).astype(np.float32)
    return Op("upsert", header["id"], vector, tuple(header["labels"]), header["metadata"], seq)


class RWLock:
    """Many readers or one writer; a waiting writer holds back new readers, so a stream of
    searches cannot starve adds. Single event loop, so plain counters suffice.

    ``run_read`` / ``run_write`` run a blocking function in a worker thread under the lock and
    release it when the thread finishes, even if the awaiting request was cancelled first (FAISS
    must never be written while a search still runs)."""

    def __init__(self) -> None:
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._wakeups: list[asyncio.Future[None]] = []

    def _wake(self) -> None:
        for future in self._wakeups:
            if not future.done():
                future.set_result(None)
        self._wakeups.clear()

    async def _until(self, ready: Callable[[], bool]) -> None:
        while not ready():
            future = asyncio.get_running_loop().create_future()
            self._wakeups.append(future)
            await future

    async def _acquire(self, write: bool) -> None:
        if not write:
            await self._until(lambda: not self._writing and self._writers_waiting == 0)
            self._readers += 1
            return
        self._writers_waiting += 1
        try:
            await self._until(lambda: not self._writing and self._readers == 0)
        finally:
            self._writers_waiting -= 1
            self._wake()  # readers held back by this writer may go if it gave up
        self._writing = True

    def _release(self, write: bool) -> None:
        if write:
            self._writing = False
        else:
            self._readers -= 1
        self._wake()

    async def _run(self, write: bool, fn: Callable[[], T]) -> T:
        await self._acquire(write)
        try:
            future = asyncio.get_running_loop().run_in_executor(None, fn)
        except BaseException:
            self._release(write)
            raise
        future.add_done_callback(lambda _: self._release(write))
        return await asyncio.shield(future)

    async def run_read(self, fn: Callable[[], T]) -> T:
        return await self._run(False, fn)

    async def run_write(self, fn: Callable[[], T]) -> T:
        return await self._run(True, fn)


@dataclass
class _Record:
    internal: int
    vector: np.ndarray
    labels: tuple[str, ...]
    metadata: dict[str, Any]


class CollectionState:
    def __init__(self, info: CollectionInfo, index: VectorIndex | None = None) -> None:
        self.info = info
        self.index = index or VectorIndex(info.index, info.space.dim)
        self.items: dict[str, _Record] = {}
        self.by_internal: dict[int, str] = {}
        self.postings: dict[str, set[int]] = {}
        self.next_internal = 0
        self.seq = 0  # the last op applied
        self.lock = RWLock()
        self.dropped = False

    @property
    def name(self) -> str:
        return self.info.name

    def __len__(self) -> int:
        return len(self.items)

    # ---- writes: under ``lock`` (write) ----

    def apply(self, ops: Sequence[Op]) -> None:
        for kind, run in itertools.groupby(ops, key=lambda op: op.kind):
            batch = list(run)
            if kind == "upsert":
                self._upsert(list({op.id: op for op in batch}.values()))  # the last op per id wins
            else:
                self._forget([op.id for op in batch])
        if ops:
            self.seq = max(self.seq, ops[-1].seq)

    def _upsert(self, ops: list[Op]) -> None:
        self._forget([op.id for op in ops])
        internals = np.arange(self.next_internal, self.next_internal + len(ops), dtype=np.int64)
        self.next_internal += len(ops)
        vectors = np.stack([np.asarray(op.vector, np.float32) for op in ops])
        self.index.add(internals, l2_normalize(vectors))
        for row, (internal, op) in enumerate(zip(internals.tolist(), ops, strict=True)):
            self.items[op.id] = _Record(internal, vectors[row], op.labels, op.metadata)
            self.by_internal[internal] = op.id
            for label in op.labels:
                self.postings.setdefault(label, set()).add(internal)

    def _forget(self, ids: list[str]) -> None:
        gone = [self.items.pop(item_id) for item_id in ids if item_id in self.items]
        if not gone:
            return
        self.index.remove(np.array([record.internal for record in gone], np.int64))
        for record in gone:
            del self.by_internal[record.internal]
            for label in record.labels:
                members = self.postings.get(label)
                if members is not None:
                    members.discard(record.internal)
                    if not members:
                        del self.postings[label]

    # ---- reads: under ``lock`` (read) when the index is involved ----

    def item(self, item_id: str) -> Item | None:
        record = self.items.get(item_id)
        if record is None:
            return None
        return Item(item_id, record.vector.copy(), record.labels, dict(record.metadata))

    def allowed(self, labels: Sequence[str] | None) -> np.ndarray | None:
        """Internal ids carrying any of ``labels``; None for no filter."""
        if labels is None:
            return None
        members: set[int] = set()
        for label in labels:
            members |= self.postings.get(label, set())
        return np.fromiter(members, np.int64, len(members))

    def search(
        self,
        unit_query: np.ndarray,
        k: int,
        *,
        labels: Sequence[str] | None = None,
        exclude: str | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[list[Hit], bool]:
        allowed = self.allowed(labels)
        want = k + (exclude is not None)
        scores, internals, exact = self.index.search(unit_query, want, allowed=allowed, ef_search=ef_search,
                                                     nprobe=nprobe)
        hits = []
        for score, internal in zip(scores.tolist(), internals.tolist(), strict=True):
            item_id = self.by_internal.get(internal)
            if item_id is None or item_id == exclude:
                continue
            record = self.items[item_id]
            hits.append(Hit(item_id, float(score), record.labels, dict(record.metadata)))
        return hits[:k], exact

    def labelled(self, classes: Sequence[str] | None) -> tuple[np.ndarray, list[str]]:
        """Vectors ``[N, dim]`` and their class, for items carrying exactly one of ``classes``
        (all labels when None)."""
        wanted = None if classes is None else set(classes)
        vectors, targets = [], []
        for record in self.items.values():
            mine = [label for label in record.labels if wanted is None or label in wanted]
            if len(mine) == 1:
                vectors.append(record.vector)
                targets.append(mine[0])
        dim = self.info.space.dim
        return (np.stack(vectors) if vectors else np.empty((0, dim), np.float32)), targets

    # ---- snapshots ----

    def snapshot(self) -> dict[str, np.ndarray]:
        """Everything needed to come back, as arrays for ``np.savez`` (read lock held)."""
        ids = list(self.items)
        records = [self.items[item_id] for item_id in ids]
        meta = [[item_id, list(r.labels), r.metadata] for item_id, r in zip(ids, records, strict=True)]
        state = {"seq": self.seq, "next_internal": self.next_internal,
                 "tombstones": sorted(self.index.tombstones), "info": self.info.to_json()}
        dim = self.info.space.dim
        return {
            "index": self.index.serialize(),
            "internal": np.array([r.internal for r in records], np.int64),
            "vectors": np.stack([r.vector for r in records]) if records else np.empty((0, dim), np.float32),
            "items": np.frombuffer(json.dumps(meta).encode(), np.uint8),
            "state": np.frombuffer(json.dumps(state).encode(), np.uint8),
        }

    @classmethod
    def restore(cls, arrays: dict[str, np.ndarray]) -> CollectionState:
        state = json.loads(arrays["state"].tobytes())
        info = CollectionInfo.from_json(state["info"])
        index = VectorIndex.deserialize(info.index, info.space.dim, arrays["index"], set(state["tombstones"]))
        self = cls(info, index)
        meta = json.loads(arrays["items"].tobytes())
        for (item_id, labels, metadata), internal, vector in zip(
            meta, arrays["internal"].tolist(), arrays["vectors"], strict=True
        ):
            self.items[item_id] = _Record(internal, np.array(vector, np.float32), tuple(labels), metadata)
            self.by_internal[internal] = item_id
            for label in labels:
                self.postings.setdefault(label, set()).add(internal)
        self.seq, self.next_internal = state["seq"], state["next_internal"]
        return self
