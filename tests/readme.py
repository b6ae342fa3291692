"""The README's examples as tests run them: a section's text, and a shell line run as written
against a live server (curl with --fail added, localhost:8000 pointed at the server)."""

from __future__ import annotations

import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    """The text under ``## title``, up to the next second-level heading."""
    return README.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def run_as_written(line: str, port: int, cwd: Path, timeout: float = 60) -> None:
    """Run one README shell line against the server on ``port``; fail the test if it fails."""
    runnable = line.replace("curl -s ", "curl -sS --fail ").replace("localhost:8000", f"127.0.0.1:{port}")
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", runnable], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
