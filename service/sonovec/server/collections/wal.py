"""A collection on disk: a write-ahead log of ops, and a snapshot that the log continues.

::

    data_dir/collections/<name>/
        snapshot.npz     state at op ``seq`` S (FAISS index bytes, vectors, items): written to a
                         temporary file, fsync'd, renamed over the old one, directory fsync'd
        wal.log          ops after the snapshot, one record each, appended and fsync'd before a
                         write is acknowledged; emptied once a newer snapshot is in place

A record::

    b"SW" | kind u8 (1 upsert, 2 delete) | seq u64 | length u32 | crc32 u32 | payload

A crash can leave a torn record at the end of the log; it was never acknowledged, so replay stops
there and cuts it off. Replay skips ops at or before the snapshot's ``seq`` (a crash between the
snapshot's rename and the log's truncation leaves such ops behind).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from sonovec.server.collections.state import CollectionState, Op, decode_item, encode_item

log = logging.getLogger(__name__)

_MAGIC = b"SW"
_HEAD = struct.Struct("<2sBQII")  # magic, kind, seq, length, crc32
_KINDS = {"upsert": 1, "delete": 2}
SNAPSHOT = "snapshot.npz"
WAL = "wal.log"


def encode_record(op: Op) -> bytes:
    payload = encode_item(op) if op.kind == "upsert" else op.id.encode()
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<BQ", _KINDS[op.kind], op.seq)))
    return _HEAD.pack(_MAGIC, _KINDS[op.kind], op.seq, len(payload), crc) + payload


def _decode_records(data: bytes) -> Iterator[tuple[int, Op]]:
    """(end offset, op) for each whole, intact record; stops at the first that is not."""
    offset = 0
    while offset + _HEAD.size <= len(data):
        magic, kind, seq, length, crc = _HEAD.unpack_from(data, offset)
        end = offset + _HEAD.size + length
        if magic != _MAGIC or kind not in (1, 2) or end > len(data):
            return
        payload = data[offset + _HEAD.size : end]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<BQ", kind, seq))) != crc:
            return
        op = decode_item(payload, seq) if kind == 1 else Op("delete", payload.decode(), seq=seq)
        yield end, op
        offset = end


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class WriteAheadLog:
    """Append-only, fsync'd; one per collection, used only by the writer task."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = open(path, "ab")  # noqa: SIM115 - held open for the collection's life
        self.records = 0
        self.bytes = self._handle.tell()

    def append(self, ops: Sequence[Op]) -> None:
        """Write ``ops`` and fsync: when this returns they survive a crash."""
        data = b"".join(encode_record(op) for op in ops)
        self._handle.write(data)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records += len(ops)
        self.bytes += len(data)

    def truncate(self) -> None:
        self._handle.truncate(0)
        self._handle.seek(0)
        os.fsync(self._handle.fileno())
        self.records = self.bytes = 0

    def close(self) -> None:
        self._handle.close()

    @staticmethod
    def replay(path: Path, after_seq: int) -> list[Op]:
        """The intact ops in ``path`` after ``after_seq``; a torn tail is cut off the file."""
        if not path.exists():
            return []
        data = path.read_bytes()
        ops, good = [], 0
        for end, op in _decode_records(data):
            good = end
            if op.seq > after_seq:
                ops.append(op)
        if good < len(data):
            log.warning("%s: cutting %d bytes of a torn or corrupt record at offset %d",
                        path, len(data) - good, good)
            with open(path, "r+b") as handle:
                handle.truncate(good)
                os.fsync(handle.fileno())
        return ops


def write_snapshot(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = directory / (SNAPSHOT + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / SNAPSHOT)
    fsync_dir(directory)


def load_collection(directory: Path, fresh: CollectionState) -> tuple[CollectionState, int]:
    """The collection in ``directory``: its snapshot (or ``fresh`` when there is none) with the
    log replayed on top. Returns the state and how many logged ops were replayed."""
    snapshot = directory / SNAPSHOT
    state = fresh
    if snapshot.exists():
        with np.load(snapshot, allow_pickle=False) as arrays:
            state = CollectionState.restore({key: arrays[key] for key in arrays.files})
    ops = WriteAheadLog.replay(directory / WAL, state.seq)
    if ops:
        state.apply(ops)
    return state, len(ops)
