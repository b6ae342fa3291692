"""client/README.md's Python examples, run as written (ports swapped) against the live server."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from servers import ServerProcess

from .conftest import API_KEY, clip

pytestmark = pytest.mark.contract

README = Path(__file__).resolve().parents[2] / "client" / "README.md"


def test_readme_examples_run(server: ServerProcess, tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 6
    (tmp_path / "example.wav").write_bytes(clip(3.0, 44_100, 2, seed=90))
    env = {**os.environ, "SONOVEC_API_KEY": API_KEY}
    for block in blocks:
        if "collections" in block and importlib.util.find_spec("sonovec.server.collections") is None:
            continue  # the server's core has no collections yet
        code = block.replace("localhost:8000", f"127.0.0.1:{server.port}").replace(
            "localhost:50051", f"127.0.0.1:{server.grpc_port}"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr[-3000:]}"
