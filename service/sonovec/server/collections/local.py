"""Collections on this machine's disk (``data_dir/collections``): the default without ``--redis-url``.

One writer task owns every change. It takes the queued writes of all requests at once (group
commit), appends them to each collection's write-ahead log with one fsync per log, applies them
to memory under the collection's write lock, and only then acknowledges them. It also takes the
snapshots (every ``snapshot_interval_s`` while the log is not empty, at ``snapshot_ops`` logged
ops, and at shutdown), so the log is never appended to while a snapshot replaces it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sonovec.server.collections.spec import CollectionInfo
from sonovec.server.collections.state import CollectionState, Op
from sonovec.server.collections.wal import (
    WAL,
    WriteAheadLog,
    fsync_dir,
    load_collection,
    write_atomic,
    write_snapshot,
)
from sonovec.server.errors import ErrorKind, SonovecError, not_found

log = logging.getLogger(__name__)

INFO = "collection.json"
_MAX_JOBS_PER_COMMIT = 1024
_PROBE_FILE = re.compile(r"^(?P<name>.+)\.v(?P<version>\d+)\.json$")


@dataclass
class _Job:
    state: CollectionState
    ops: list[Op] | None  # None: drop the collection
    done: asyncio.Future[list[bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Disk:
    directory: Path
    wal: WriteAheadLog
    seq: int  # the last seq written to the log
    snapshot_at: float = field(default_factory=time.monotonic)


class LocalStore:
    kind = "local"

    def __init__(self, root: Path, *, snapshot_interval_s: float = 60.0, snapshot_ops: int = 50_000) -> None:
        self.root = root
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_ops = snapshot_ops
        self.states: dict[str, CollectionState] = {}
        self._disks: dict[str, _Disk] = {}
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._admin = asyncio.Lock()

    # ---- life cycle ----

    async def open(self) -> None:
        await asyncio.to_thread(self._load_all)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="collections-writer")

    def _load_all(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".*"):  # a create or a drop cut short by a crash
            shutil.rmtree(leftover, ignore_errors=True)
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not (directory / INFO).exists():
                log.warning("%s: not a collection (no %s); left alone", directory, INFO)
                continue
            info = CollectionInfo.from_json((directory / INFO).read_text())
            state, replayed = load_collection(directory, CollectionState(info))
            wal = WriteAheadLog(directory / WAL)
            if (directory / WAL).stat().st_size:  # compact now, or the same ops are replayed at every
                # start until the next write
                write_snapshot(directory, state.snapshot())
                wal.truncate()
            self.states[info.name] = state
            self._disks[info.name] = _Disk(directory, wal, state.seq)
            log.info("collection %s: %d items (%d ops replayed from the log)",
                     info.name, len(state), replayed)

    def check_available(self) -> None:
        """Always available once open: the data is on local disk."""

    async def close(self) -> None:
        if self._writer is None:
            return
        await self._queue.put(None)
        await self._writer
        self._writer = None
        for disk in self._disks.values():
            disk.wal.close()

    # ---- collections ----

    async def create(self, info: CollectionInfo) -> CollectionState:
        async with self._admin:
            if info.name in self.states:
                raise SonovecError(ErrorKind.CONFLICT, f"collection {info.name!r} exists", field="name")
            directory = self.root / info.name
            await asyncio.to_thread(self._create_dir, directory, info)
            state = CollectionState(info)
            self._disks[info.name] = _Disk(directory, WriteAheadLog(directory / WAL), 0)
            self.states[info.name] = state
            return state

    def _create_dir(self, directory: Path, info: CollectionInfo) -> None:
        staging = self.root / f".creating-{info.uid}"
        staging.mkdir()
        write_atomic(staging / INFO, info.to_json().encode())
        staging.rename(directory)
        fsync_dir(self.root)

    async def drop(self, state: CollectionState) -> None:
        await self._submit(_Job(state, None))

    # ---- items ----

    async def write(self, state: CollectionState, ops: list[Op]) -> list[bool]:
        """Log, fsync and apply ``ops``; per op, whether it changed anything (a delete of a
        missing id does not). Returns once the ops survive a crash."""
        return await self._submit(_Job(state, ops))

    async def _submit(self, job: _Job) -> list[bool]:
        if self._writer is None or self._writer.done():
            raise SonovecError(ErrorKind.UNAVAILABLE, "collections are closed", retry_after=1.0)
        await self._queue.put(job)
        return await asyncio.shield(job.done)  # once queued, a write completes even if its caller leaves

    # ---- the writer ----

    async def _write_loop(self) -> None:
        tick = max(0.05, self.snapshot_interval_s / 4)
        while True:
            try:
                job = await asyncio.wait_for(self._queue.get(), timeout=tick)
            except TimeoutError:
                await self._snapshot_due()
                continue
            jobs = [job]
            while len(jobs) < _MAX_JOBS_PER_COMMIT and not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            stop = None in jobs
            work = [j for j in jobs if j is not None]
            try:
                await self._commit(work)
                await self._snapshot_due(force=stop)
            except Exception as exc:  # a disk error fails these writes, never the writer
                log.exception("collections writer")
                reason = f"storage error ({type(exc).__name__}); see the server log"
                _fail(work, SonovecError(ErrorKind.INTERNAL, reason))
            if stop:
                return

    async def _commit(self, jobs: list[_Job]) -> None:
        """Group commit: jobs in order, drops between runs of writes."""
        run: list[_Job] = []
        for job in jobs:
            if job.ops is not None:
                run.append(job)
                continue
            await self._commit_writes(run)
            run = []
            await self._drop(job)
        await self._commit_writes(run)

    async def _commit_writes(self, jobs: list[_Job]) -> None:
        if not jobs:
            return
        logged: dict[str, list[Op]] = {}
        results: list[list[bool]] = []
        present: dict[tuple[str, str], bool] = {}  # what earlier jobs of this commit did
        for job in jobs:
            if job.state.dropped:
                results.append([])
                continue
            disk = self._disks[job.state.name]
            changed = []
            for op in job.ops or []:
                key = (job.state.name, op.id)
                exists = present.get(key, op.id in job.state.items)
                changed.append(op.kind == "upsert" or exists)
                if op.kind == "delete" and not exists:
                    continue
                present[key] = op.kind == "upsert"
                disk.seq += 1
                logged.setdefault(job.state.name, []).append(op.with_seq(disk.seq))
            results.append(changed)
        await asyncio.to_thread(self._append, logged)
        for name, ops in logged.items():
            state = self.states[name]
            await state.lock.run_write(functools.partial(state.apply, ops))
        for job, changed in zip(jobs, results, strict=True):
            if job.done.done():
                continue
            if job.state.dropped:
                job.done.set_exception(not_found(f"collection {job.state.name!r} was dropped", field="name"))
            else:
                job.done.set_result(changed)

    def _append(self, logged: dict[str, list[Op]]) -> None:
        for name, ops in logged.items():
            self._disks[name].wal.append(ops)

    async def _drop(self, job: _Job) -> None:
        state = job.state
        if state.dropped:
            job.done.set_result([])
            return
        state.dropped = True
        disk = self._disks.pop(state.name)
        del self.states[state.name]
        disk.wal.close()
        await asyncio.to_thread(_remove_dir, disk.directory, self.root / f".dropped-{state.info.uid}")
        job.done.set_result([True])

    async def _snapshot_due(self, force: bool = False) -> None:
        now = time.monotonic()
        for name, disk in list(self._disks.items()):
            due = now - disk.snapshot_at >= self.snapshot_interval_s or disk.wal.records >= self.snapshot_ops
            if disk.wal.records and (due or force):
                await self.snapshot(name)

    async def snapshot(self, name: str) -> None:
        """Write the collection's snapshot and empty its log (writer task only, or when idle)."""
        state, disk = self.states[name], self._disks[name]
        started = time.perf_counter()
        arrays = await state.lock.run_read(state.snapshot)
        await asyncio.to_thread(write_snapshot, disk.directory, arrays)
        await asyncio.to_thread(disk.wal.truncate)
        disk.snapshot_at = time.monotonic()
        log.info("collection %s: snapshot of %d items at op %d in %.2f s", name, len(state), state.seq,
                 time.perf_counter() - started)

    # ---- probes ----

    async def save_probe(self, collection: str, probe: dict[str, Any]) -> int:
        async with self._admin:
            directory = self._probe_dir(collection)
            return await asyncio.to_thread(self._save_probe, directory, probe)

    @staticmethod
    def _save_probe(directory: Path, probe: dict[str, Any]) -> int:
        directory.mkdir(exist_ok=True)
        versions = [int(m["version"]) for p in directory.iterdir()
                    if (m := _PROBE_FILE.match(p.name)) and m["name"] == probe["name"]]
        version = max(versions, default=0) + 1
        probe = {**probe, "version": version}
        write_atomic(directory / f"{probe['name']}.v{version}.json", json.dumps(probe).encode())
        return version

    async def load_probes(self, collection: str) -> list[dict[str, Any]]:
        directory = self._probe_dir(collection)
        return await asyncio.to_thread(_read_probes, directory)

    def _probe_dir(self, collection: str) -> Path:
        disk = self._disks.get(collection)
        if disk is None:
            raise not_found(f"collection {collection!r} does not exist", field="collection")
        return disk.directory / "probes"


def _read_probes(directory: Path) -> list[dict[str, Any]]:
    if not directory.exists():
        return []
    return [json.loads(p.read_text()) for p in sorted(directory.iterdir()) if _PROBE_FILE.match(p.name)]


def _remove_dir(directory: Path, trash: Path) -> None:
    directory.rename(trash)  # atomic: after a crash the collection is gone, not half there
    fsync_dir(directory.parent)
    shutil.rmtree(trash, ignore_errors=True)


def _fail(jobs: list[_Job], error: SonovecError) -> None:
    for job in jobs:
        if not job.done.done():
            job.done.set_exception(error)
