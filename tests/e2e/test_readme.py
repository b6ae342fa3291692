"""The README's curl examples, run as written against a live server (with --fail added)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from audiofiles import write_tone
from servers import ServerProcess

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands(section: str) -> list[str]:
    text = README.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", body, re.S)
    assert block, f"no bash block under '## {section}'"
    return [line for line in block.group(1).splitlines() if line.startswith("curl ")]


def test_readme_curl_examples_work_as_written(tmp_path: Path) -> None:
    commands = readme_commands("Try it")
    assert len(commands) >= 6
    write_tone(tmp_path / "example.wav", 3.0, 44_100, 2, "wav")
    with ServerProcess(tmp_path) as server:
        for command in commands:
            runnable = command.replace("curl -s ", "curl -sS --fail ").replace(
                "localhost:8000", f"127.0.0.1:{server.port}"
            )
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", runnable],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    decoded, rate = sf.read(tmp_path / "decoded.wav")
    assert rate == 48_000 and decoded.shape == (144_000, 2)  # 3 s at the 48 kHz model's rate
    assert len(json.loads((tmp_path / "embedding.json").read_text())["frames"]) > 0
    assert json.loads((tmp_path / "self.json").read_text())["segment_seconds"] == 1.0
