"""``sonovec extract --engine ray``: the same extraction on a Ray cluster (``pip install 'sonovec[ray]'``).

    file list (sorted) -> shards of --shard-files recordings
        ray.data.from_items(shards)
        .map(decode_shard)            CPU tasks: read, decode, mix, resample (sonovec.server.audio)
        .map(ShardEmbedder, concurrency=--actors, num_gpus=1 if the cluster has GPUs)
                                      one sonovec Service per actor: the same windowing, batcher,
                                      pooling and cache as the service; writes its shard
    -> shards/part-NNNNN.npy [n, D] + part-NNNNN.json (paths, durations, windows, errors)
    -> consolidated like --engine local: manifest.jsonl, embeddings.npy, paths.txt (path order)

The decode stage does what ``Service.ingest`` does (``decode_audio`` / ``from_array`` with the
model's rate, channels and limits), and the actor calls ``Service.embed_ingested``, so on CPU the
vectors equal ``--engine local``'s bit for bit (tests/integration/test_ray_extract.py).

Resumable: a shard whose ``.json`` exists with the same recordings is skipped on rerun (the ``.npy``
is written first, the ``.json`` last, both atomically). Python entry point::

    from sonovec.server.ray_extract import RayOptions, run_ray_extract
    run_ray_extract(Settings(backend="torch"), ExtractOptions(input=..., output=...),
                    RayOptions(address="ray://head:10001", actors=8))
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sonovec.server.audio import AudioLimits, Recording, decode_audio, from_array
from sonovec.server.core import EmbedOptions
from sonovec.server.errors import SonovecError
from sonovec.server.extract import (
    ExtractOptions,
    _full_header,
    _read_header,
    _refuse_if_different,
    _save_npy,
    find_recordings,
    read_source,
)
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local cluster on this machine
    num_cpus: int | None = None  # local cluster only
    actors: int = 1  # embedding actors (one model each)
    shard_files: int = 64  # recordings per shard (the unit of resumption)


@dataclass(frozen=True)
class _Target:
    sample_rate: int
    channels: int
    limits: AudioLimits


def _write_json(path: Path, body: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_done(output: Path, number: int, paths: list[str]) -> bool:
    meta = output / "shards" / f"part-{number:05d}.json"
    return meta.exists() and json.loads(meta.read_text())["planned"] == paths


def decode_shard(row: dict[str, Any], input_dir: str, options: ExtractOptions,
                 target: _Target) -> dict[str, Any]:
    """CPU stage: each recording of the shard as a ``Recording`` at the model's rate, or its error."""
    decoded: list[tuple[str, Recording | str]] = []
    for rel in json.loads(row["paths"]):
        try:
            source = read_source(Path(input_dir) / rel, options)
            if source.array is not None:
                recording = from_array(source.array, int(source.sample_rate or 0),
                                       target_rate=target.sample_rate, target_channels=target.channels,
                                       limits=target.limits)
            else:
                recording = decode_audio(source.data or b"", target_rate=target.sample_rate,
                                         target_channels=target.channels, limits=target.limits)
            decoded.append((rel, recording))
        except (SonovecError, OSError, RuntimeError) as exc:
            decoded.append((rel, str(exc)))
    return {"shard": row["shard"], "paths": row["paths"], "decoded": pickle.dumps(decoded)}


class ShardEmbedder:
    """One Ray actor: a started ``Service`` (its own event loop) that embeds whole shards."""

    def __init__(self, settings: Settings, options: ExtractOptions) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        model = options.model or settings.models[0]
        self.runtime = Runtime(settings, models=[model], collections=False).start_sync()
        self.service = self.runtime.service
        self.embed_options = EmbedOptions(pooling=options.pooling, normalize=options.normalize,
                                          frames=options.latents)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        decoded = pickle.loads(row["decoded"])
        results = self.loop.run_until_complete(self._all(decoded))
        number = int(row["shard"])
        done = [r for r in results if "embedding" in r]
        directory = self.options.output / "shards"
        vectors = np.asarray([r.pop("embedding") for r in done], np.float32)
        _save_npy(directory / f"part-{number:05d}.npy", vectors)
        _write_json(directory / f"part-{number:05d}.json", {
            "planned": json.loads(row["paths"]), "done": done, "errors": [r for r in results if "error" in r],
        })
        return {"shard": number, "done": len(done), "failed": len(results) - len(done)}

    async def _all(self, decoded: list[tuple[str, Recording | str]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._one(rel, rec) for rel, rec in decoded)))

    async def _one(self, rel: str, recording: Recording | str) -> dict[str, Any]:
        if isinstance(recording, str):
            return {"path": rel, "error": recording}
        service = self.service
        backend = service.backend(None)
        try:
            async with service.request(None) as ticket:
                ingested = await asyncio.to_thread(service.prepare, recording, backend, digest=True)
                result = await service.embed_ingested(ingested, backend, self.embed_options, ticket)
        except (SonovecError, RuntimeError) as exc:
            return {"path": rel, "error": str(exc)}
        entry: dict[str, Any] = {"path": rel, "duration_s": round(result.duration_s, 6),
                                 "num_windows": result.num_windows, "embedding": result.vector}
        if self.options.latents and result.frames is not None:
            latents_path = Path("latents") / f"{rel}.npy"  # as --engine local names it
            _save_npy(self.options.output / latents_path, result.frames)
            entry["latents"] = str(latents_path)
        return entry


def _header_and_target(settings: Settings, options: ExtractOptions) -> tuple[dict[str, Any], _Target]:
    """model.json as --engine local writes it, and what the decode stage needs (no model run)."""
    model = options.model or settings.models[0]
    runtime = Runtime(settings, models=[model], collections=False).start_sync()
    try:
        service = runtime.service
        backend = service.backend(None)
        info = service.info(backend)
        header = _full_header(options, info.name, info.weights_fingerprint, info.pretrained)
        return header, _Target(backend.spec.sample_rate, backend.spec.channels, service.limits)
    finally:
        runtime.stop()


def run_ray_extract(settings: Settings, options: ExtractOptions, ray_options: RayOptions) -> int:
    """Extract ``options.input`` into ``options.output`` on Ray; 1 if any recording failed."""
    try:
        import ray
    except ImportError:
        raise SystemExit("sonovec extract --engine ray needs Ray: pip install 'sonovec[ray]'") from None
    if not options.input.is_dir():
        raise SystemExit(f"sonovec extract: {options.input} is not a folder")
    (options.output / "shards").mkdir(parents=True, exist_ok=True)
    header, target = _header_and_target(settings, options)
    before = _read_header(options.output)
    if before is not None:
        _refuse_if_different(options.output, before, header)
    else:
        (options.output / "model.json").write_text(json.dumps(header, indent=2))
    recordings = [str(p) for p in find_recordings(options.input, options.extensions).recordings]
    size = ray_options.shard_files
    plan = [recordings[i : i + size] for i in range(0, len(recordings), size)]
    todo = [{"shard": n, "paths": json.dumps(paths)} for n, paths in enumerate(plan)
            if not shard_done(options.output, n, paths)]
    log.info("%d recordings in %d shards, %d to do", len(recordings), len(plan), len(todo))
    if todo:
        started_here = not ray.is_initialized()
        if started_here:
            local_cpus = None if ray_options.address else ray_options.num_cpus
            ray.init(address=ray_options.address, num_cpus=local_cpus, include_dashboard=False,
                     log_to_driver=False)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ds: Any = ray.data.from_items(todo, override_num_blocks=len(todo))
        decode_kwargs = {"input_dir": str(options.input), "options": options, "target": target}
        ds = ds.map(decode_shard, fn_kwargs=decode_kwargs)
        ds = ds.map(ShardEmbedder, fn_constructor_kwargs={"settings": settings, "options": options},
                    concurrency=ray_options.actors, num_gpus=gpus, num_cpus=1 if not gpus else 0)
        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), unit="shard",
                   disable=not options.progress)
        for row in ds.iter_rows():
            bar.update(1)
            log.debug("shard %s: %s done, %s failed", row["shard"], row["done"], row["failed"])
        bar.close()
        if started_here:
            ray.shutdown()
    return consolidate(options.output, plan)


def consolidate(output: Path, plan: list[list[str]]) -> int:
    """manifest.jsonl, embeddings.npy, paths.txt and errors.jsonl from the shards, in path order."""
    entries, errors, blocks = [], [], []
    for number in range(len(plan)):
        meta = json.loads((output / "shards" / f"part-{number:05d}.json").read_text())
        vectors = np.load(output / "shards" / f"part-{number:05d}.npy")
        for entry, vector in zip(meta["done"], vectors, strict=True):
            entries.append({**entry, "embedding": vector.tolist()})
        blocks.append(vectors.reshape(len(meta["done"]), -1))
        errors.extend(meta["errors"])
    tmp = output / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
    os.replace(tmp, output / "manifest.jsonl")
    (output / "errors.jsonl").write_text("".join(json.dumps(e) + "\n" for e in errors))
    if entries:
        _save_npy(output / "embeddings.npy", np.concatenate([b for b in blocks if len(b)]).astype(np.float32))
        (output / "paths.txt").write_text("".join(e["path"] + "\n" for e in entries))
    log.info("extracted %d recordings (%d failed) into %s", len(entries), len(errors), output)
    return 1 if errors else 0
