"""``sonovec compare`` on labelled audio the test makes: the feature baselines beat chance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from timbres import pitch_set, timbre_set

pytestmark = pytest.mark.e2e


def write_set(folder: Path, clips: list, rate: int) -> None:
    for i, (label, clip) in enumerate(clips):
        (folder / label).mkdir(parents=True, exist_ok=True)
        sf.write(folder / label / f"{i:03d}.wav", clip[0], rate)


@pytest.mark.parametrize("kind", ["timbres", "pitches"])
def test_compare_ranks_baselines_above_chance(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / kind
    make = timbre_set if kind == "timbres" else pitch_set
    write_set(folder, make(30, 22_050, seed=1, seconds=0.5), 22_050)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sonovec.server.cli",
            "compare",
            str(folder),
            "--output",
            str(tmp_path / "report"),
            "--models",
            "encodec_48khz,mfcc,logmel,chroma",
            "--backend",
            "fake",
            "--weights",
            "random",
            "--folds",
            "3",
            "--repeats",
            "2",
            "--data-dir",
            str(tmp_path / "data"),
            "--log-level",
            "warning",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)  # the figures, as the command prints them
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    scores = {m["model"]: m for m in report["models"]}
    assert report["chance"] == pytest.approx(1 / 3)
    best_baseline = max(scores[m]["probe_mean"] for m in ("mfcc", "logmel", "chroma"))
    assert best_baseline > 0.8 and scores["mfcc"]["probe_mean"] > 0.6 and scores["mfcc"]["knn"] > 0.5
    assert "| mfcc | 120 | features |" in (tmp_path / "report" / "report.md").read_text()
    png = (tmp_path / "report" / "report.png").read_bytes()
    assert png[:4] == b"\x89PNG"
    (Path("/tmp") / f"compare-{kind}.png").write_bytes(png)
