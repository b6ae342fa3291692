"""The README's latent lab section, run as written against a live server: every shell line (curl
with --fail added) and the Python block."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from audiofiles import write_tone
from readme import run_as_written, section
from servers import ServerProcess

pytestmark = pytest.mark.e2e


def test_readme_lab_examples_work_as_written(tmp_path: Path) -> None:
    body = section("Latent lab")
    shell = re.search(r"```bash\n(.*?)```", body, re.S)
    python = re.search(r"```python\n(.*?)```", body, re.S)
    assert shell and python
    lines = [line for line in shell.group(1).splitlines() if line.strip()]
    assert sum(line.startswith("curl ") for line in lines) >= 5
    write_tone(tmp_path / "example.wav", 2.0, 44_100, 2, "wav")
    write_tone(tmp_path / "other.wav", 1.5, 22_050, 1, "wav")
    with ServerProcess(tmp_path) as server:
        for line in lines:
            run_as_written(line, server.port, tmp_path, timeout=120)
        code = python.group(1).replace("localhost:8000", f"127.0.0.1:{server.port}")
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "most influential dimensions" in done.stdout
    halfway, rate = sf.read(tmp_path / "halfway.wav")
    assert rate == 48_000 and halfway.shape == (72_000, 2)  # the shorter input's length
    assert (tmp_path / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    scales = json.loads((tmp_path / "latents.json").read_text())["latents"]["scales"]
    assert len(scales) == 3  # 2 s at 48 kHz: segments at 0, 47,520 and 95,040 (the last 960 samples)
