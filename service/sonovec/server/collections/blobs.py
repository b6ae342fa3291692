"""Kept audio: each item's recording (the original bytes, or its EnCodec codes), so it can be played.

Opt-in per collection (``CreateOptions.keep_audio``). A ``BlobStore`` keeps, per collection
incarnation (its ``uid``), one policy, one reference per item and content-addressed blobs::

    data_dir/audio/<uid>/policy.json           {"keep_audio": "original", "max_bytes": ..., ...}
    data_dir/audio/<uid>/refs/<sha256(id)>.json {"id", "blob", "kind", format fields}
    data_dir/audio/<uid>/blobs/<sha[:2]>/<sha>  the bytes (written atomically, shared by equal items)

A blob goes when no reference of its collection names it any more; the whole folder goes with the
collection. With ``--redis-url`` the same records live in Redis (``RedisBlobStore``) so every
replica can play every item.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soundfile

from sonovec.server.collections.options import CreateOptions
from sonovec.server.collections.spec import CollectionInfo, NewItem
from sonovec.server.collections.wal import write_atomic
from sonovec.server.core import AudioSource, DecodeResult, EncodeResult
from sonovec.server.errors import ErrorKind, SonovecError, invalid, not_found, too_large


@dataclass(frozen=True)
class Kept:
    """One item's kept audio: its reference (kind and format) and its bytes."""

    ref: dict[str, Any]
    body: bytes


class BlobStore(Protocol):
    async def set_policy(self, uid: str, policy: dict[str, Any]) -> None: ...
    async def policy(self, uid: str) -> dict[str, Any] | None: ...
    async def put(self, uid: str, item_id: str, ref: dict[str, Any], body: bytes) -> None: ...
    async def get(self, uid: str, item_id: str) -> Kept | None: ...
    async def kept(self, uid: str) -> set[str]: ...
    async def forget(self, uid: str, item_ids: list[str]) -> None: ...
    async def drop(self, uid: str) -> None: ...


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class LocalBlobStore:
    """Files under ``root`` (``data_dir/audio``); the references of a collection are read once and
    then kept in memory (one event loop writes them)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._refs: dict[str, dict[str, dict[str, Any]]] = {}
        self._policies: dict[str, dict[str, Any] | None] = {}

    def _dir(self, uid: str) -> Path:
        return self.root / uid

    async def set_policy(self, uid: str, policy: dict[str, Any]) -> None:
        directory = self._dir(uid)

        def write() -> None:
            (directory / "refs").mkdir(parents=True, exist_ok=True)
            write_atomic(directory / "policy.json", json.dumps(policy).encode())

        await asyncio.to_thread(write)
        self._policies[uid] = policy

    async def policy(self, uid: str) -> dict[str, Any] | None:
        if uid not in self._policies:
            path = self._dir(uid) / "policy.json"
            self._policies[uid] = await asyncio.to_thread(
                lambda: json.loads(path.read_text()) if path.exists() else None
            )
        return self._policies[uid]

    async def _loaded(self, uid: str) -> dict[str, dict[str, Any]]:
        if uid not in self._refs:
            self._refs[uid] = await asyncio.to_thread(self._read_refs, uid)
        return self._refs[uid]

    def _read_refs(self, uid: str) -> dict[str, dict[str, Any]]:
        refs: dict[str, dict[str, Any]] = {}
        directory = self._dir(uid) / "refs"
        if directory.exists():
            for path in directory.glob("*.json"):
                ref = json.loads(path.read_text())
                refs[ref["id"]] = ref
        return refs

    def _ref_path(self, uid: str, item_id: str) -> Path:
        return self._dir(uid) / "refs" / f"{digest(item_id.encode())}.json"

    def _blob_path(self, uid: str, blob: str) -> Path:
        return self._dir(uid) / "blobs" / blob[:2] / blob

    async def put(self, uid: str, item_id: str, ref: dict[str, Any], body: bytes) -> None:
        refs = await self._loaded(uid)
        ref = {**ref, "id": item_id, "blob": digest(body), "bytes": len(body)}
        blob_path, ref_path = self._blob_path(uid, ref["blob"]), self._ref_path(uid, item_id)

        def write() -> None:
            if not blob_path.exists():
                blob_path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(blob_path, body)
            ref_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(ref_path, json.dumps(ref).encode())

        await asyncio.to_thread(write)
        old = refs.get(item_id)
        refs[item_id] = ref
        if old is not None and old["blob"] != ref["blob"]:
            await self._collect(uid, [old["blob"]])

    async def get(self, uid: str, item_id: str) -> Kept | None:
        ref = (await self._loaded(uid)).get(item_id)
        if ref is None:
            return None
        path = self._blob_path(uid, ref["blob"])
        return Kept(ref, await asyncio.to_thread(path.read_bytes))

    async def kept(self, uid: str) -> set[str]:
        return set(await self._loaded(uid))

    async def forget(self, uid: str, item_ids: list[str]) -> None:
        refs = await self._loaded(uid)
        gone = [refs.pop(i) for i in item_ids if i in refs]
        if not gone:
            return
        paths = [self._ref_path(uid, ref["id"]) for ref in gone]
        await asyncio.to_thread(_unlink, paths)
        await self._collect(uid, [ref["blob"] for ref in gone])

    async def _collect(self, uid: str, blobs: list[str]) -> None:
        """Delete the blobs no reference names any more."""
        used = {ref["blob"] for ref in self._refs.get(uid, {}).values()}
        paths = [self._blob_path(uid, b) for b in set(blobs) - used]
        await asyncio.to_thread(_unlink, paths)

    async def drop(self, uid: str) -> None:
        self._refs.pop(uid, None)
        self._policies.pop(uid, None)
        directory, trash = self._dir(uid), self.root / f".dropped-{uid}"

        def remove() -> None:
            if directory.exists():
                directory.rename(trash)  # atomic: never half a collection's audio left behind
                shutil.rmtree(trash, ignore_errors=True)

        await asyncio.to_thread(remove)


def _unlink(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


# ---- bodies: what is kept, and how it plays ----


def codes_body(codes: list[np.ndarray], scales: list[float], num_samples: int) -> bytes:
    """EnCodec codes (per segment ``[K, F_s]``), their scales and the length, as one ``.npz``."""
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {f"codes{i}": c.astype(np.int16) for i, c in enumerate(codes)}
    arrays["scales"] = np.asarray(scales, np.float32)
    arrays["num_samples"] = np.asarray(num_samples, np.int64)
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def codes_from_body(body: bytes) -> tuple[list[np.ndarray], list[float], int]:
    with np.load(io.BytesIO(body)) as arrays:
        scales = arrays["scales"].tolist()
        codes = [arrays[f"codes{i}"].astype(np.int64) for i in range(len(scales))]
        return codes, scales, int(arrays["num_samples"])


def original_wav(ref: dict[str, Any], body: bytes) -> bytes:
    """The kept original as 16-bit WAV at its own sample rate and channels (raw PCM by the format
    it came with; containers as libsndfile reads them)."""
    if ref.get("pcm"):
        dtype = np.dtype("<f4") if ref["pcm"] == "f32le" else np.dtype("<i2")
        samples = np.frombuffer(body, dtype).reshape(-1, ref["channels"])
        if dtype.kind == "i":
            samples = samples.astype(np.float32) / 32768.0
        rate = int(ref["sample_rate"])
    else:
        samples, rate = soundfile.read(io.BytesIO(body), dtype="float32", always_2d=True)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def array_wav(array: np.ndarray, sample_rate: int) -> bytes:
    """An in-process recording (``[C, T]`` or ``[T]`` float) kept as float WAV."""
    samples = np.asarray(array, np.float32)
    samples = samples[:, None] if samples.ndim == 1 else samples.T
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


# ---- the collections' side: what to keep of an item, and its WAV ----


class Codec(Protocol):
    """What keeping codes needs of the core (the service): encode and decode."""

    async def encode(
        self, source: AudioSource, *, model: str | None, bandwidth: float = ...,
        timeout_s: float | None = None,
    ) -> EncodeResult: ...

    async def decode(
        self, codes: Sequence[np.ndarray], scales: Sequence[float] | None, *, model: str | None,
        num_samples: int | None = None, timeout_s: float | None = None,
        made_at: tuple[int | None, int | None] = (None, None),
    ) -> DecodeResult: ...


NOTHING_KEPT = "none"


class KeptAudio:
    """Keeps and plays items' recordings by each collection's policy (``CreateOptions.keep_audio``)."""

    def __init__(self, blobs: BlobStore | None, codec: Codec | None) -> None:
        self.blobs = blobs
        self.codec = codec

    async def start(self, info: CollectionInfo, options: CreateOptions) -> None:
        """Record a new collection's policy (nothing when it keeps nothing)."""
        if options.keep_audio == NOTHING_KEPT:
            return
        assert self.blobs is not None  # checked by ``check_create``
        await self.blobs.set_policy(info.uid, options.audio_policy())

    def check_create(self, options: CreateOptions, bandwidths: Sequence[float]) -> None:
        if options.keep_audio == NOTHING_KEPT:
            return
        if self.blobs is None:
            raise invalid("this server keeps no audio", field="keep_audio", allowed="none")
        if options.keep_audio == "codes":
            if self.codec is None:
                raise invalid("this server cannot encode codes", field="keep_audio", allowed="none, original")
            if options.keep_audio_bandwidth not in bandwidths:
                raise invalid(f"bandwidth {options.keep_audio_bandwidth:g} kbps",
                              field="keep_audio_bandwidth", allowed=", ".join(f"{b:g}" for b in bandwidths))

    async def policy(self, info: CollectionInfo) -> dict[str, Any]:
        policy = None if self.blobs is None else await self.blobs.policy(info.uid)
        return policy or {"keep_audio": NOTHING_KEPT}

    def check_sizes(self, policy: dict[str, Any], items: Sequence[NewItem]) -> None:
        """Refuse, before anything is embedded, a recording over the collection's cap."""
        if policy["keep_audio"] != "original":
            return
        for i, item in enumerate(items):
            size = _source_bytes(item.audio)
            if size is not None and size > policy["max_bytes"]:
                raise too_large(
                    f"recording of {size} bytes", field=f"items[{i}].audio",
                    allowed=f"at most {policy['max_bytes']} bytes: this collection keeps recordings",
                )

    async def bodies(
        self, info: CollectionInfo, policy: dict[str, Any], items: Sequence[NewItem], timeout_s: float | None
    ) -> list[tuple[dict[str, Any], bytes] | None]:
        """What to keep of each item (None: nothing, e.g. added by vector)."""
        kind = policy["keep_audio"]
        if kind == NOTHING_KEPT:
            return [None] * len(items)
        if kind == "original":
            return [None if item.audio is None else _original(item.audio) for item in items]
        return list(await asyncio.gather(*(self._codes(info, policy, item, timeout_s) for item in items)))

    async def _codes(
        self, info: CollectionInfo, policy: dict[str, Any], item: NewItem, timeout_s: float | None
    ) -> tuple[dict[str, Any], bytes] | None:
        if item.audio is None or self.codec is None:
            return None
        encoded = await self.codec.encode(item.audio, model=info.space.model, bandwidth=policy["bandwidth"],
                                          timeout_s=timeout_s)
        ref = {"kind": "codes", "bandwidth": encoded.bandwidth, "model": info.space.model}
        return ref, codes_body(encoded.codes, encoded.scales, encoded.num_samples)

    async def save(
        self, info: CollectionInfo, ids: Sequence[str], bodies: Sequence[tuple[dict[str, Any], bytes] | None]
    ) -> None:
        """Keep each item's body; an item replaced by one without audio loses what was kept."""
        if self.blobs is None:
            return
        for item_id, kept in zip(ids, bodies, strict=True):
            if kept is None:
                await self.blobs.forget(info.uid, [item_id])
            else:
                await self.blobs.put(info.uid, item_id, *kept)

    async def forget(self, info: CollectionInfo, ids: Sequence[str]) -> None:
        if self.blobs is not None:
            await self.blobs.forget(info.uid, list(ids))

    async def drop(self, info: CollectionInfo) -> None:
        if self.blobs is not None:
            await self.blobs.drop(info.uid)

    async def kept(self, info: CollectionInfo) -> set[str]:
        return set() if self.blobs is None else await self.blobs.kept(info.uid)

    async def wav(self, info: CollectionInfo, item_id: str) -> bytes:
        """The item's recording as WAV: the original converted, or the codes decoded."""
        kept = None if self.blobs is None else await self.blobs.get(info.uid, item_id)
        if kept is None:
            policy = (await self.policy(info))["keep_audio"]
            why = ("the collection keeps no audio (keep_audio=none)" if policy == NOTHING_KEPT
                   else "it was added by vector, so there is nothing to play")
            raise not_found(f"no audio for item {item_id!r}: {why}", field="audio")
        if kept.ref["kind"] == "original":
            return await asyncio.to_thread(original_wav, kept.ref, kept.body)
        if self.codec is None:
            raise SonovecError(ErrorKind.UNAVAILABLE, "this server cannot decode codes")
        codes, scales, num_samples = codes_from_body(kept.body)
        decoded = await self.codec.decode(codes, scales, model=kept.ref["model"], num_samples=num_samples)
        return await asyncio.to_thread(decoded.wav_bytes)


def _source_bytes(source: AudioSource | None) -> int | None:
    if source is None:
        return None
    if source.data is not None:
        return len(source.data)
    return None if source.array is None else int(np.asarray(source.array).nbytes)


def _original(source: AudioSource) -> tuple[dict[str, Any], bytes]:
    if source.data is not None and source.pcm is not None:
        ref = {"kind": "original", "pcm": source.pcm.encoding, "sample_rate": source.pcm.sample_rate,
               "channels": source.pcm.channels}
        return ref, source.data
    if source.data is not None:
        return {"kind": "original"}, source.data
    assert source.array is not None and source.sample_rate is not None
    return {"kind": "original"}, array_wav(source.array, source.sample_rate)
