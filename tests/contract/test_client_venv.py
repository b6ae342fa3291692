"""The client installed alone (``pip install ./client``) in a fresh virtualenv without torch,
faiss or soundfile embeds a file against a running server, over both transports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from servers import ServerProcess

from sonovec.client import Client

from .conftest import API_KEY, clip, url_of

pytestmark = [pytest.mark.contract, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib.util, sys
from sonovec.client import Client
heavy = ("torch", "faiss", "soundfile", "sonovec.server", "sonovec.models")
present = [m for m in heavy if importlib.util.find_spec(m)]
assert not present, present
path, key = sys.argv[1], sys.argv[2]
for url in sys.argv[3:]:
    with Client(url, api_key=key) as client:
        e = client.embed(path)
        print(url.split(":")[0], e.model.name, " ".join(repr(float(x)) for x in e.vector))
"""


def test_fresh_virtualenv_without_torch(server: ServerProcess, tmp_path: Path) -> None:
    # A copy of client/ and proto/ only: the build finds the contract in ../proto.
    source = tmp_path / "src"
    shutil.copytree(
        REPO / "client", source / "client", ignore=shutil.ignore_patterns("v1", "build", "*.egg-info")
    )
    shutil.copytree(REPO / "proto", source / "proto")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(source / "client")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    audio = tmp_path / "clip.wav"
    audio.write_bytes(clip(2.0, 44_100, 2, seed=80))
    urls = [url_of(server, t) for t in ("http", "grpc")]
    run = subprocess.run(
        [str(python), "-c", SCRIPT, str(audio), API_KEY, *urls],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    with Client(urls[1], api_key=API_KEY) as client:
        want = client.embed(audio).vector
    lines = run.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["http", "encodec_48khz"], ["grpc", "encodec_48khz"]]
    for line in lines:
        np.testing.assert_array_equal(np.array([float(x) for x in line.split()[2:]], np.float32), want)
    assert sys.prefix != str(env_dir)
