"""``sonovec extract``: a folder of recordings -> embeddings on disk, through the same batcher.

Output folder (documented in docs/extract.md)::

    model.json          the model, its weights fingerprint and the options; a resume must match it
    manifest.jsonl      one JSON line per finished recording, appended and fsync'd as each one ends:
                        {"path", "duration_s", "num_windows", "embedding": [...], "latents": "latents/..."}
    latents/<path>.npy  [F, D] float32 latent frames (with --latents), written before its manifest line
    embeddings.npy      [N, D] float32, rows in manifest order (rewritten at the end of every run)
    paths.txt           the N relative paths, one a line, in the same order
    errors.jsonl        recordings that failed, with the error (retried on the next run)

A run killed at any point resumes where it stopped: recordings with a manifest line are skipped;
a torn last line is ignored and its recording done again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import soundfile
from tqdm import tqdm

from sonovec.server import extract_formats
from sonovec.server.core import AudioSource, EmbedOptions, Service
from sonovec.server.errors import SonovecError
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractOptions:
    input: Path
    output: Path
    latents: bool = False
    pooling: str = "mean"
    normalize: bool = True
    fragment_seconds: float | None = None
    fragment_offset: float = 0.0
    concurrency: int = 8
    extensions: tuple[str, ...] = ("wav", "flac", "ogg", "mp3", "opus", "aiff", "aif")
    progress: bool = True
    format: str = "npy"  # extra output beside embeddings.npy: parquet | safetensors (extract_formats.py)


def find_recordings(root: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower().lstrip(".") in extensions
    )


def read_manifest(path: Path) -> list[dict]:
    """Finished recordings; a torn (partly written) last line is ignored."""
    if not path.exists():
        return []
    done = []
    for line in path.read_text().splitlines():
        try:
            done.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring a torn line in %s", path)
    return done


def read_source(path: Path, options: ExtractOptions) -> AudioSource:
    """The whole file's bytes, or just the fragment's samples (decoding only what is needed)."""
    if options.fragment_seconds is None:
        return AudioSource(data=path.read_bytes())
    with soundfile.SoundFile(path) as f:
        start = int(options.fragment_offset * f.samplerate)
        f.seek(min(start, f.frames))
        samples = f.read(int(options.fragment_seconds * f.samplerate), dtype="float32", always_2d=True)
        return AudioSource(array=samples.T, sample_rate=f.samplerate)


class _Writer:
    """Appends manifest lines durably; one writer, called from the event loop only."""

    def __init__(self, output: Path) -> None:
        self.output = output
        _drop_torn_tail(output / "manifest.jsonl")
        _drop_torn_tail(output / "errors.jsonl")
        self._manifest = open(output / "manifest.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._errors = open(output / "errors.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def done(self, entry: dict) -> None:
        self._append(self._manifest, entry)

    def failed(self, entry: dict) -> None:
        self._append(self._errors, entry)

    @staticmethod
    def _append(file: IO[str], entry: dict) -> None:
        file.write(json.dumps(entry) + "\n")
        file.flush()
        os.fsync(file.fileno())

    def close(self) -> None:
        self._manifest.close()
        self._errors.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a kill left without its newline, so the next line starts clean."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".npy.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_model(output: Path, header: dict) -> None:
    path = output / "model.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != header:
            raise SystemExit(
                f"sonovec extract: {output} was made with other settings ({before}); "
                "use a new output folder, or the same model, weights and options"
            )
    else:
        path.write_text(json.dumps(header, indent=2))


async def run_extract(settings: Settings, options: ExtractOptions) -> int:
    if not options.input.is_dir():
        raise SystemExit(f"sonovec extract: {options.input} is not a folder")
    options.output.mkdir(parents=True, exist_ok=True)
    async with Runtime(settings).running() as runtime:
        return await _extract(runtime.service, options)


async def _extract(service: Service, options: ExtractOptions) -> int:
    backend = service.backend(None)
    info = service.info(backend)
    header = {
        "model": info.name,
        "weights_fingerprint": info.weights_fingerprint,
        "pretrained": info.pretrained,
        "pooling": options.pooling,
        "normalize": options.normalize,
        "fragment_seconds": options.fragment_seconds,
        "fragment_offset": options.fragment_offset,
    }
    if info.warning:
        log.warning("%s", info.warning)
    _check_model(options.output, header)
    done = {entry["path"] for entry in read_manifest(options.output / "manifest.jsonl")}
    todo = [p for p in find_recordings(options.input, options.extensions) if str(p) not in done]
    writer = _Writer(options.output)
    embed_options = EmbedOptions(pooling=options.pooling, normalize=options.normalize, frames=options.latents)
    slots = asyncio.Semaphore(options.concurrency)
    failures = 0
    bar = tqdm(total=len(todo) + len(done), initial=len(done), unit="file", disable=not options.progress)

    async def one(rel: Path) -> None:
        nonlocal failures
        async with slots:
            try:
                source = await asyncio.to_thread(read_source, options.input / rel, options)
                result = await service.embed(source, embed_options)
            except (SonovecError, OSError, RuntimeError) as exc:
                failures += 1
                writer.failed({"path": str(rel), "error": str(exc)})
                log.warning("%s: %s", rel, exc)
                bar.update(1)
                return
            entry = {
                "path": str(rel),
                "duration_s": round(result.duration_s, 6),
                "num_windows": result.num_windows,
                "embedding": result.vector.tolist(),
            }
            if options.latents and result.frames is not None:
                latents_path = Path("latents") / rel.with_suffix(".npy")
                await asyncio.to_thread(_save_npy, options.output / latents_path, result.frames)
                entry["latents"] = str(latents_path)
            writer.done(entry)
            bar.update(1)

    try:
        await asyncio.gather(*(one(rel) for rel in todo))
    finally:
        writer.close()
        bar.close()
    _consolidate(options.output, header, options.format)
    log.info("extracted %d recordings (%d failed) into %s", len(todo) - failures, failures, options.output)
    return 1 if failures else 0


def _consolidate(output: Path, header: dict, fmt: str = "npy") -> None:
    entries = read_manifest(output / "manifest.jsonl")
    if not entries:
        return
    _save_npy(output / "embeddings.npy", np.asarray([e["embedding"] for e in entries], np.float32))
    (output / "paths.txt").write_text("".join(e["path"] + "\n" for e in entries))
    extract_formats.write(output, entries, header, fmt)
