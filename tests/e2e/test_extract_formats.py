"""``sonovec extract --format parquet|safetensors``: files other tools load without sonovec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas
import pytest
import safetensors.numpy
from audiofiles import write_tone
from safetensors import safe_open

from sonovec.server import extract_formats

pytestmark = pytest.mark.e2e

FAKE = ["--backend", "fake", "--weights", "random", "--no-progress", "--log-level", "warning"]

# Read back in a fresh interpreter that cannot import sonovec: pyarrow (and numpy) alone.
READ_PARQUET = """
import json, sys
sys.modules["sonovec"] = None  # any import of sonovec fails
import numpy as np, pyarrow.parquet as pq
table = pq.read_table(sys.argv[1])
vectors = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(table.num_rows, -1)
np.save(sys.argv[2], vectors)
print(json.dumps({c: table.column(c).to_pylist() for c in table.column_names if c != "embedding"}))
"""


def extract(inp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sonovec.server.cli", "extract", str(inp), str(out), *FAKE, *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def make_folder(root: Path) -> list[str]:
    names = []
    for i in range(5):
        sub = root / f"kit{i % 2}" if i < 4 else root
        sub.mkdir(parents=True, exist_ok=True)
        write_tone(sub / f"hit{i}.wav", 0.5 + 0.25 * i, 44_100, 2, "wav", seed=500 + i)
        names.append(str((sub / f"hit{i}.wav").relative_to(root)))
    return names


def test_parquet_read_back_with_pyarrow_alone_equals_embeddings_npy(tmp_path: Path) -> None:
    make_folder(tmp_path / "in")
    out = tmp_path / "out"
    done = extract(
        tmp_path / "in", out, "--format", "parquet", "--fragment-seconds", "1", "--fragment-offset", "0.25"
    )
    assert done.returncode == 0, done.stderr
    read = subprocess.run(
        [sys.executable, "-c", READ_PARQUET, str(out / "embeddings"), str(tmp_path / "back.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert read.returncode == 0, read.stderr
    columns = json.loads(read.stdout)
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), np.load(out / "embeddings.npy"))
    assert columns["path"] == (out / "paths.txt").read_text().split()
    assert columns["label"] == [str(Path(p).parent) if "/" in p else "" for p in columns["path"]]
    model = json.loads((out / "model.json").read_text())
    assert set(columns["model"]) == {model["model"]}
    assert set(columns["weights_fingerprint"]) == {model["weights_fingerprint"]}
    assert set(columns["offset_s"]) == {0.25}
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert columns["duration_s"] == [e["duration_s"] for e in manifest]


def test_parquet_shards_and_pandas(tmp_path: Path) -> None:
    entries = [{"path": f"a/{i}.wav", "duration_s": 1.0, "embedding": [float(i), 1.0, 2.0]} for i in range(7)]
    header = {"model": "m", "weights_fingerprint": "f", "pooling": "mean", "fragment_seconds": None}
    extract_formats.write_parquet(tmp_path / "embeddings", entries, header, rows=3)
    shards = sorted(p.name for p in (tmp_path / "embeddings").glob("*.parquet"))
    assert shards == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    frame = pandas.read_parquet(tmp_path / "embeddings")
    assert list(frame["path"]) == [e["path"] for e in entries]
    assert [list(v) for v in frame["embedding"]] == [e["embedding"] for e in entries]
    extract_formats.write_parquet(
        tmp_path / "embeddings", entries[:2], header, rows=3
    )  # a rerun: no stale shard
    assert len(list((tmp_path / "embeddings").glob("*.parquet"))) == 1


def test_safetensors_loads_with_the_safetensors_package(tmp_path: Path) -> None:
    make_folder(tmp_path / "in")
    out = tmp_path / "out"
    done = extract(tmp_path / "in", out, "--format", "safetensors")
    assert done.returncode == 0, done.stderr
    tensors = safetensors.numpy.load_file(out / "embeddings.safetensors")
    np.testing.assert_array_equal(tensors["embeddings"], np.load(out / "embeddings.npy"))
    with safe_open(out / "embeddings.safetensors", framework="numpy") as f:
        metadata = f.metadata()
    assert json.loads(metadata["paths"]) == (out / "paths.txt").read_text().split()
    assert metadata["model"] == "encodec_48khz"
