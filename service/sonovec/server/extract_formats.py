"""Output formats of ``sonovec extract`` (``--format``), for tools that load embeddings directly.

Every format is written from the manifest at the end of each run (so a resumed run rewrites it
whole), next to ``embeddings.npy`` and ``paths.txt``, which are always written:

- ``npy``: nothing more.
- ``parquet``: ``embeddings/part-00000.parquet``, ... (``ROWS_PER_SHARD`` rows each), one row per
  recording (or its fragment): ``path``, ``label`` (the folder it is in, "" at the top),
  ``offset_s``, ``duration_s``, ``model``, ``weights_fingerprint``, ``embedding``
  (``fixed_size_list<float32>[D]``). Needs pyarrow (``pip install 'sonovec-server[parquet]'``);
  pandas, polars, DuckDB and pyarrow read the folder as one table.
- ``safetensors``: ``embeddings.safetensors``, one tensor ``embeddings`` [N, D] F32; its metadata
  holds the model, the fingerprint and the paths (a JSON list). Written here by hand (the format
  is a length, a JSON header and the raw bytes), so it needs no extra package.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

FORMATS = ("npy", "parquet", "safetensors")
ROWS_PER_SHARD = 100_000


def write(output: Path, entries: list[dict], header: dict[str, Any], fmt: str) -> None:
    """Write ``entries`` (manifest lines, in order) in ``fmt`` under ``output``."""
    if fmt == "parquet":
        write_parquet(output / "embeddings", entries, header)
    elif fmt == "safetensors":
        write_safetensors(output / "embeddings.safetensors", entries, header)
    elif fmt != "npy":
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")


def _label(path: str) -> str:
    parent = PurePosixPath(path).parent
    return "" if str(parent) == "." else parent.name


def write_parquet(
    folder: Path, entries: list[dict], header: dict[str, Any], rows: int = ROWS_PER_SHARD
) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SystemExit(
            "sonovec extract --format parquet needs pyarrow: pip install 'sonovec-server[parquet]'"
        ) from None
    vectors = np.asarray([e["embedding"] for e in entries], np.float32)
    dim = vectors.shape[1]
    offset = float(header.get("fragment_offset") or 0.0) if header.get("fragment_seconds") else 0.0
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):  # a rerun with fewer shards leaves none behind
        old.unlink()
    for shard, start in enumerate(range(0, len(entries), rows)):
        part = entries[start : start + rows]
        flat = pa.array(vectors[start : start + rows].reshape(-1), pa.float32())
        table = pa.table(
            {
                "path": pa.array([e["path"] for e in part], pa.string()),
                "label": pa.array([_label(e["path"]) for e in part], pa.string()),
                "offset_s": pa.array([offset] * len(part), pa.float64()),
                "duration_s": pa.array([float(e["duration_s"]) for e in part], pa.float64()),
                "model": pa.array([header["model"]] * len(part), pa.string()),
                "weights_fingerprint": pa.array([header["weights_fingerprint"]] * len(part), pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
            }
        )
        metadata = {b"sonovec": json.dumps(header).encode()}
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        tmp = folder / f".part-{shard:05d}.parquet.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / f"part-{shard:05d}.parquet")


def write_safetensors(path: Path, entries: list[dict], header: dict[str, Any]) -> None:
    """safetensors: an 8-byte little-endian header length, the JSON header, then the data."""
    vectors = np.ascontiguousarray(np.asarray([e["embedding"] for e in entries], "<f4"))
    metadata = {
        "model": str(header["model"]),
        "weights_fingerprint": str(header["weights_fingerprint"]),
        "pooling": str(header["pooling"]),
        "paths": json.dumps([e["path"] for e in entries]),
    }
    described = {
        "__metadata__": metadata,
        "embeddings": {"dtype": "F32", "shape": list(vectors.shape), "data_offsets": [0, vectors.nbytes]},
    }
    text = json.dumps(described, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    tmp = path.with_suffix(".safetensors.tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.write(vectors.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
