"""``sonovec extract`` as a user runs it: a folder in, embeddings out, resumable after kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audiofiles import write_tone

pytestmark = pytest.mark.e2e

FAKE = ["--backend", "fake", "--weights", "random", "--no-progress", "--log-level", "warning"]


def extract(
    inp: Path, out: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sonovec.server.cli", "extract", str(inp), str(out), *FAKE, *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def make_folder(root: Path, count: int) -> list[str]:
    names = []
    for i in range(count):
        sub = root / f"composer{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        fmt = ["wav", "flac", "ogg"][i % 3]
        write_tone(sub / f"piece{i}.{fmt}", 1.0 + 0.5 * (i % 4), 44_100, 2, fmt, seed=i)
        names.append(f"composer{i % 3}/piece{i}.{fmt}")
    (root / "notes.txt").write_text("not audio")
    return sorted(names)


def test_extract_writes_the_documented_format(tmp_path: Path) -> None:
    names = make_folder(tmp_path / "in", 7)
    (tmp_path / "in" / "broken.wav").write_bytes(b"RIFF junk")
    done = extract(tmp_path / "in", tmp_path / "out", "--latents", "--pooling", "mean_std")
    assert done.returncode == 1, done.stderr  # one recording failed, and says so
    out = tmp_path / "out"
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(e["path"] for e in manifest) == names
    embeddings = np.load(out / "embeddings.npy")
    assert embeddings.shape == (7, 256)
    assert (out / "paths.txt").read_text().split() == [e["path"] for e in manifest]
    latents = np.load(out / manifest[0]["latents"])
    assert latents.ndim == 2 and latents.shape[1] == 128
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == ["broken.wav"] and errors[0]["error"]
    assert errors[0]["kind"] == "unsupported_media_type"  # a damaged file: exit 1, unlike silence
    model = json.loads((out / "model.json").read_text())
    assert model["model"] == "encodec_48khz" and model["pretrained"] is False
    other = extract(tmp_path / "in", out, "--pooling", "mean")  # other options: refused, not mixed
    assert other.returncode != 0 and "other settings" in other.stderr
    assert "pooling: 'mean_std' in the folder, 'mean' now" in other.stderr


def test_extract_fragments_take_only_the_asked_seconds(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "long.flac", 5.0, 44_100, 2, "flac")
    done = extract(tmp_path / "in", tmp_path / "out", "--fragment-seconds", "2", "--fragment-offset", "1")
    assert done.returncode == 0, done.stderr
    (entry,) = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert entry["duration_s"] == pytest.approx(2.0, abs=1e-3)


def test_extract_resumes_after_kill_9_without_duplicates(tmp_path: Path) -> None:
    names = make_folder(tmp_path / "in", 24)
    out = tmp_path / "out"
    env = {**os.environ, "SONOVEC_FAKE_SECONDS_PER_AUDIO_SECOND": "0.05", "SONOVEC_MAX_BATCH_SECONDS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sonovec.server.cli",
            "extract",
            str(tmp_path / "in"),
            str(out),
            *FAKE,
            "--concurrency",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        not manifest.exists() or len(manifest.read_text().splitlines()) < 4
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = len(manifest.read_text().splitlines())
    assert 4 <= first < 24, "killed too late to test resuming"
    with manifest.open("a") as f:
        f.write('{"path": "torn')  # a line cut short by the kill
    done = extract(tmp_path / "in", out)
    assert done.returncode == 0, done.stderr
    lines = manifest.read_text().splitlines()
    paths = [json.loads(line)["path"] for line in lines if line.endswith("}")]
    assert sorted(paths) == names  # every recording exactly once
    assert np.load(out / "embeddings.npy").shape == (24, 128)


def test_map_draws_the_embedding_space_of_an_extract_folder(tmp_path: Path) -> None:
    make_folder(tmp_path / "in", 9)
    assert extract(tmp_path / "in", tmp_path / "out").returncode == 0
    done = subprocess.run(
        [sys.executable, "-m", "sonovec.server.cli", "map", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    png = (tmp_path / "out" / "map.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def loaded_models(stderr: str) -> list[str]:
    """The models the run loaded, from the service's 'loaded NAME (...)' log lines."""
    return re.findall(r"INFO sonovec\.server\.runtime: loaded (\S+) ", stderr)


def test_extract_loads_only_the_chosen_model(tmp_path: Path) -> None:
    make_folder(tmp_path / "in", 3)
    chosen = extract(tmp_path / "in", tmp_path / "out24", "--model", "encodec_24khz", "--log-level", "info")
    assert chosen.returncode == 0, chosen.stderr
    assert loaded_models(chosen.stderr) == ["encodec_24khz"]
    assert json.loads((tmp_path / "out24" / "model.json").read_text())["model"] == "encodec_24khz"
    default = extract(tmp_path / "in", tmp_path / "out48", "--log-level", "info")
    assert default.returncode == 0, default.stderr
    assert loaded_models(default.stderr) == ["encodec_48khz"]  # not both, though the server loads both


def test_a_refused_resume_names_the_setting_and_loads_nothing(tmp_path: Path) -> None:
    make_folder(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert extract(tmp_path / "in", out, "--pooling", "mean_std").returncode == 0
    refused = extract(tmp_path / "in", out, "--model", "encodec_24khz", "--log-level", "info")
    assert refused.returncode == 1
    assert "pooling: 'mean_std' in the folder, 'mean' now" in refused.stderr
    assert "model: 'encodec_48khz' in the folder, 'encodec_24khz' now" in refused.stderr
    assert loaded_models(refused.stderr) == []  # refused before any model was loaded
    again = extract(tmp_path / "in", out, "--pooling", "mean_std")  # the same settings: resumes
    assert again.returncode == 0, again.stderr


def test_files_it_cannot_read_are_counted_and_named(tmp_path: Path) -> None:
    names = make_folder(tmp_path / "in", 2)  # and notes.txt
    for i in range(3):
        (tmp_path / "in" / f"take{i}.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    (tmp_path / "in" / "README").write_text("no extension")
    done = extract(tmp_path / "in", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    line = "skipped 5 files with unsupported extensions (.m4a x3, no extension x1, .txt x1)"
    assert done.stderr.count(line) == 2, done.stderr  # at the start and in the summary
    assert sorted((tmp_path / "out" / "paths.txt").read_text().split()) == names


def test_a_silent_recording_is_refused_in_errors_jsonl_and_the_run_succeeds(tmp_path: Path) -> None:
    names = make_folder(tmp_path / "in", 2)
    sf.write(tmp_path / "in" / "silence.wav", np.zeros((44_100, 2), np.float32), 44_100)
    done = extract(tmp_path / "in", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "extracted 2 recordings" in done.stderr and "1 refused for their content, 0 failed" in done.stderr
    (error,) = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["path"] == "silence.wav" and error["kind"] == "invalid_argument"
    assert "silent" in error["error"]
    assert sorted((tmp_path / "out" / "paths.txt").read_text().split()) == names
    again = extract(tmp_path / "in", tmp_path / "out")  # tried again, still one line
    assert again.returncode == 0, again.stderr
    assert len((tmp_path / "out" / "errors.jsonl").read_text().splitlines()) == 1


def test_recordings_longer_than_the_queue_holds_at_once_wait_their_turn(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    for i in range(4):  # 4 x 6 s at once, a queue of 10 audio seconds: a server would answer 429
        write_tone(tmp_path / "in" / f"take{i}.flac", 6.0, 48_000, 2, "flac", seed=i)
    env = {**os.environ, "SONOVEC_FAKE_SECONDS_PER_AUDIO_SECOND": "0.02"}
    done = extract(
        tmp_path / "in", tmp_path / "out", "--max-queue-seconds", "10", "--concurrency", "4", env=env
    )
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 4
    assert (tmp_path / "out" / "errors.jsonl").read_text() == ""


def test_latents_of_same_named_recordings_do_not_overwrite_each_other(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_tone(tmp_path / "in" / "a.wav", 1.0, 48_000, 2, "wav", seed=1)
    write_tone(tmp_path / "in" / "a.flac", 2.0, 48_000, 2, "flac", seed=2)
    assert extract(tmp_path / "in", tmp_path / "out", "--latents").returncode == 0
    entries = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    frames = {e["path"]: np.load(tmp_path / "out" / e["latents"]).shape[0] for e in entries}
    assert frames["a.flac"] > frames["a.wav"]  # each its own file: 2 s has more frames than 1 s
    assert {e["latents"] for e in entries} == {"latents/a.wav.npy", "latents/a.flac.npy"}
