"""``sonovec extract --engine ray`` on a local Ray cluster (2 CPUs, in a subprocess): the same vectors
as ``--engine local`` bit for bit, and a rerun after a SIGKILL mid-way skips the finished shards.
Skipped when Ray is not installed (``pip install 'sonovec[ray]'``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from audiofiles import write_tone

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'sonovec[ray]'")
pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAKE = ["--backend", "fake", "--weights", "random", "--no-progress", "--log-level", "warning"]
RAY = ["--engine", "ray", "--ray-cpus", "2", "--shard-files", "3"]


def extract(inp: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "sonovec.server.cli", "extract", str(inp), str(out), *FAKE, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: Ray's workers die with it


def finish(proc: subprocess.Popen[str]) -> None:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]


def vectors_by_path(out: Path) -> dict[str, np.ndarray]:
    vectors = np.load(out / "embeddings.npy")
    paths = (out / "paths.txt").read_text().splitlines()
    return dict(zip(paths, vectors, strict=True))


def test_ray_matches_local_and_resumes_after_kill(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    for i in range(12):
        (inp / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        write_tone(inp / f"c{i % 3}" / f"p{i}.{['wav', 'flac'][i % 2]}", 0.5 + 0.25 * (i % 4), 44_100, 2,
                   ["wav", "flac"][i % 2], seed=i)
    finish(extract(inp, tmp_path / "local"))
    local = vectors_by_path(tmp_path / "local")
    assert len(local) == 12

    # a first ray run, killed as soon as some shards are written
    out = tmp_path / "ray"
    proc = extract(inp, out, *RAY)
    deadline = time.monotonic() + 300
    while not list(out.glob("shards/part-*.json")):
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("part-*.json")}
    assert 1 <= len(kept) < 4  # killed mid-way: some shards left to do

    finish(extract(inp, out, *RAY))
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("part-*.json")
            if p.name in kept} == kept  # finished shards were skipped, not redone
    assert len(list((out / "shards").glob("part-*.json"))) == 4
    ray = vectors_by_path(out)
    assert sorted(ray) == sorted(local)
    for path, vector in local.items():
        assert np.array_equal(ray[path], vector), path  # bit for bit
    header = json.loads((tmp_path / "local" / "model.json").read_text())
    assert json.loads((out / "model.json").read_text()) == header
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["path"] for m in manifest] == sorted(local)
