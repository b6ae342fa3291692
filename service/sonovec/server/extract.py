"""``sonovec extract``: a folder of recordings -> embeddings on disk, through the same batcher.

The output folder, resuming and errors are described in docs/extract.md; in short::

    model.json          the model, its weights fingerprint and the options; a resume must match it
    manifest.jsonl      one JSON line per finished recording, appended and fsync'd as each one ends
    latents/<path>.npy  [F, D] float32 latent frames (with --latents), written before its manifest line
                        (<path> keeps its extension: latents/a/b.wav.npy)
    embeddings.npy      [N, D] float32, rows in manifest order (rewritten at the end of every run)
    paths.txt           the N relative paths, one a line, in the same order
    errors.jsonl        the recordings of the latest run that were refused or failed, with the reason

A run killed at any point resumes where it stopped: recordings with a manifest line are skipped;
a torn last line is ignored and its recording done again. Only the chosen model is loaded, and only
after the input and the output folder have been checked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import soundfile
from tqdm import tqdm

from sonovec.server import extract_formats
from sonovec.server.core import AudioSource, EmbedOptions, EmbedResult, Service
from sonovec.server.errors import ErrorKind, SonovecError
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)


DEFAULT_EXTENSIONS = ("wav", "flac", "ogg", "mp3", "opus", "aiff", "aif")  # what libsndfile reads

# Refusals for what a recording holds (silent, empty, NaN, too long, too many channels): the run
# goes on and still exits 0; each is a line in errors.jsonl. Anything else (a file that cannot be
# decoded or read, a backend error) also goes on, but the run exits 1.
REFUSED_KINDS = frozenset({ErrorKind.INVALID.value, ErrorKind.TOO_LARGE.value})


@dataclass(frozen=True)
class ExtractOptions:
    input: Path
    output: Path
    model: str | None = None  # None: the first of the settings' models
    latents: bool = False
    pooling: str = "mean"
    normalize: bool = True
    fragment_seconds: float | None = None
    fragment_offset: float = 0.0
    concurrency: int = 8
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    progress: bool = True
    format: str = "npy"  # extra output beside embeddings.npy: parquet | safetensors (extract_formats.py)


@dataclass(frozen=True)
class Found:
    recordings: list[Path]  # relative to the input folder, sorted
    skipped: Counter[str]  # extension ("" when none) -> files left out for it


def find_recordings(root: Path, extensions: tuple[str, ...]) -> Found:
    recordings, skipped = [], Counter[str]()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix.lower().lstrip(".") in extensions:
            recordings.append(path.relative_to(root))
        else:
            skipped[path.suffix.lower()] += 1
    return Found(sorted(recordings), skipped)


def describe_skipped(skipped: Counter[str]) -> str:
    """``skipped 4 files with unsupported extensions (.m4a x3, no extension x1)``."""
    kinds = ", ".join(
        f"{ext or 'no extension'} x{n}" for ext, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    total = sum(skipped.values())
    return f"skipped {total} file{'s' if total != 1 else ''} with unsupported extensions ({kinds})"


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
    """Appends manifest lines durably; one writer, called from the event loop only.

    errors.jsonl starts afresh each run: every recording it named is tried again anyway."""

    def __init__(self, output: Path) -> None:
        self.output = output
        _drop_torn_tail(output / "manifest.jsonl")
        self._manifest = open(output / "manifest.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._errors = open(output / "errors.jsonl", "w", encoding="utf-8")  # noqa: SIM115

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


# ---- model.json: what made the folder; a resume must match it ----


def _options_header(model: str, options: ExtractOptions) -> dict[str, Any]:
    """The part of model.json known before any model is loaded."""
    return {
        "model": model,
        "pooling": options.pooling,
        "normalize": options.normalize,
        "fragment_seconds": options.fragment_seconds,
        "fragment_offset": options.fragment_offset,
    }


def _full_header(options: ExtractOptions, model: str, fingerprint: str, pretrained: bool) -> dict[str, Any]:
    header = _options_header(model, options)
    return {
        "model": model,
        "weights_fingerprint": fingerprint,
        "pretrained": pretrained,
        **{k: v for k, v in header.items() if k != "model"},
    }


def _read_header(output: Path) -> dict[str, Any] | None:
    """The output folder's model.json, or None for a new folder; exits when it is no folder."""
    if output.exists() and not output.is_dir():
        raise SystemExit(f"sonovec extract: the output {output} exists and is not a folder")
    path = output / "model.json"
    if not path.exists():
        return None
    try:
        header: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(
            f"sonovec extract: {path} is not valid JSON ({exc}); use a new output folder"
        ) from None
    return header


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``pooling: 'mean_std' in the folder, 'mean' now`` for each setting that differs."""
    return [
        f"{key}: {before[key]!r} in the folder, {value!r} now"
        if key in before
        else f"{key}: not in the folder, {value!r} now"
        for key, value in now.items()
        if before.get(key, _ABSENT) != value
    ]


_ABSENT = object()


def _refuse_if_different(output: Path, before: dict[str, Any], now: dict[str, Any]) -> None:
    changed = differences(before, now)
    if changed:
        raise SystemExit(
            f"sonovec extract: {output} was made with other settings ({'; '.join(changed)}); "
            "to resume, run with the folder's settings, or use a new output folder"
        )


# ---- the run ----


@dataclass
class _Tally:
    embedded: int = 0
    refused: int = 0  # for what the recording holds (REFUSED_KINDS): the run still exits 0
    failed: int = 0  # could not be read or embedded: the run exits 1


async def run_extract(settings: Settings, options: ExtractOptions) -> int:
    """Check the input, the output folder and the options, then load only the chosen model."""
    if not options.input.is_dir():
        raise SystemExit(f"sonovec extract: {options.input} is not a folder")
    model = options.model or settings.models[0]
    before = _read_header(options.output)
    if before is not None:
        _refuse_if_different(options.output, before, _options_header(model, options))
    found = find_recordings(options.input, options.extensions)
    if found.skipped:
        log.warning(
            "%s: libsndfile cannot read them; convert them (e.g. with ffmpeg) or change --extensions",
            describe_skipped(found.skipped),
        )
    todo = _todo(found, options.output)
    log.info(
        "%d recordings under %s: %d to do, %d done before",
        len(found.recordings),
        options.input,
        len(todo),
        len(found.recordings) - len(todo),
    )
    if not todo:
        if not found.recordings:
            log.warning("no recordings under %s (extensions %s)", options.input, ",".join(options.extensions))
        if (options.output / "errors.jsonl").exists():  # this run had no errors either
            (options.output / "errors.jsonl").write_text("")
        _consolidate(options.output, before or {}, options.format)
        return 0
    options.output.mkdir(parents=True, exist_ok=True)
    # One model: the one this run uses (the settings' list is for the server).
    async with Runtime(settings, models=[model], collections=False).running() as runtime:
        return await _extract(runtime.service, options, found)


async def _extract(service: Service, options: ExtractOptions, found: Found | None = None) -> int:
    """Embed what ``found`` (default: a fresh listing of the input) has that the manifest lacks,
    with a started service (benchmarks/study_replay.py calls this with its own)."""
    found = found or find_recordings(options.input, options.extensions)
    info = service.info(service.backend(None))  # its weights warning, if any, was logged at load
    header = _full_header(options, info.name, info.weights_fingerprint, info.pretrained)
    before = _read_header(options.output)
    if before is not None:
        _refuse_if_different(options.output, before, header)
    else:
        (options.output / "model.json").write_text(json.dumps(header, indent=2))
    todo = _todo(found, options.output)
    writer = _Writer(options.output)
    embed_options = EmbedOptions(pooling=options.pooling, normalize=options.normalize, frames=options.latents)
    slots = asyncio.Semaphore(options.concurrency)
    tally = _Tally()
    done_before = len(found.recordings) - len(todo)
    bar = tqdm(total=len(todo) + done_before, initial=done_before, unit="file", disable=not options.progress)

    async def one(rel: Path) -> None:
        async with slots:
            try:
                entry = await _embed_one(service, options, embed_options, rel)
            except (SonovecError, OSError, RuntimeError) as exc:
                failure = _error_entry(rel, exc)
                if failure["kind"] in REFUSED_KINDS:
                    tally.refused += 1
                else:
                    tally.failed += 1
                writer.failed(failure)
                log.warning("%s: %s", rel, exc)
            else:
                writer.done(entry)
                tally.embedded += 1
            bar.update(1)

    try:
        await asyncio.gather(*(one(rel) for rel in todo))
    finally:
        writer.close()
        bar.close()
    _consolidate(options.output, header, options.format)
    _report(options.output, tally, done_before, found.skipped)
    return 1 if tally.failed else 0


def _todo(found: Found, output: Path) -> list[Path]:
    """The recordings without a manifest line."""
    done = {entry["path"] for entry in read_manifest(output / "manifest.jsonl")}
    return [p for p in found.recordings if str(p) not in done]


async def _embed_one(
    service: Service, options: ExtractOptions, embed_options: EmbedOptions, rel: Path
) -> dict[str, Any]:
    source = await asyncio.to_thread(read_source, options.input / rel, options)
    result = await _embed_when_queued(service, source, embed_options)
    entry: dict[str, Any] = {
        "path": str(rel),
        "duration_s": round(result.duration_s, 6),
        "num_windows": result.num_windows,
        "embedding": result.vector.tolist(),
    }
    if options.latents and result.frames is not None:
        latents_path = Path("latents") / f"{rel}.npy"  # a.wav and a.flac side by side: two files
        await asyncio.to_thread(_save_npy, options.output / latents_path, result.frames)
        entry["latents"] = str(latents_path)
    return entry


async def _embed_when_queued(service: Service, source: AudioSource, options: EmbedOptions) -> EmbedResult:
    """A server answers a full queue with 429; a bulk run waits its turn instead. (Long recordings
    fill the queue: 8 at once of 4 minutes are more than its default 1800 audio seconds.)"""
    while True:
        try:
            return await service.embed(source, options)
        except SonovecError as exc:
            if exc.kind is not ErrorKind.OVERLOADED:
                raise
            # retry_after is when the queue has likely drained; try at half of it.
            await asyncio.sleep((exc.retry_after or 1.0) / 2)


def _error_entry(rel: Path, exc: Exception) -> dict[str, str]:
    """errors.jsonl's line: the path, a kind (the service's error kinds, or io_error) and the reason."""
    if isinstance(exc, SonovecError):
        kind = exc.kind.value
    elif isinstance(exc, soundfile.SoundFileError):  # libsndfile cannot decode it (a fragment read)
        kind = ErrorKind.UNSUPPORTED.value
    elif isinstance(exc, OSError):
        kind = "io_error"
    else:
        kind = ErrorKind.INTERNAL.value
    return {"path": str(rel), "kind": kind, "error": str(exc)}


def _report(output: Path, tally: _Tally, done_before: int, skipped: Counter[str]) -> None:
    parts = [f"extracted {tally.embedded} recordings into {output} ({done_before} done before)"]
    if tally.refused or tally.failed:
        parts.append(
            f"{tally.refused} refused for their content, {tally.failed} failed: see {output / 'errors.jsonl'}"
        )
    if skipped:
        parts.append(describe_skipped(skipped))
    quiet = not (tally.refused or tally.failed or skipped)
    log.log(logging.INFO if quiet else logging.WARNING, "%s", "; ".join(parts))


def _consolidate(output: Path, header: dict, fmt: str = "npy") -> None:
    entries = read_manifest(output / "manifest.jsonl")
    if not entries:
        return
    _save_npy(output / "embeddings.npy", np.asarray([e["embedding"] for e in entries], np.float32))
    (output / "paths.txt").write_text("".join(e["path"] + "\n" for e in entries))
    extract_formats.write(output, entries, header, fmt)
