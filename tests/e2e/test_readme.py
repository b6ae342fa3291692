"""The README's curl examples, run as written against a live server (with --fail added)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf
from audiofiles import write_tone
from readme import run_as_written, section
from servers import ServerProcess

pytestmark = pytest.mark.e2e

def readme_commands(title: str) -> list[str]:
    body = section(title)
    block = re.search(r"```bash\n(.*?)```", body, re.S)
    assert block, f"no bash block under '## {title}'"
    return [line for line in block.group(1).splitlines() if line.startswith("curl ")]


def test_readme_curl_examples_work_as_written(tmp_path: Path) -> None:
    commands = readme_commands("Try it")
    assert len(commands) >= 6
    write_tone(tmp_path / "example.wav", 3.0, 44_100, 2, "wav")
    with ServerProcess(tmp_path) as server:
        for command in commands:
            run_as_written(command, server.port, tmp_path, timeout=60)
    decoded, rate = sf.read(tmp_path / "decoded.wav")
    assert rate == 48_000 and decoded.shape == (144_000, 2)  # 3 s at the 48 kHz model's rate
    assert len(json.loads((tmp_path / "embedding.json").read_text())["frames"]) > 0
    assert json.loads((tmp_path / "self.json").read_text())["segment_seconds"] == 1.0
