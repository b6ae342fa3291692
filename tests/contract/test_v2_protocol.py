"""The Open Inference Protocol (KServe v2) with its own clients: tritonclient HTTP (binary and JSON
tensors) and gRPC embed the same WAV as /v1/embed, to 1e-6, and get the protocol's errors.

tritonclient pins protobuf < 7 and sonovec needs >= 7.35, so the clients run in a virtualenv of
their own (``.cache/tritonclient-venv``, built once from PyPI), as ``v2_tritonclient.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from audiofiles import tone
from servers import ServerProcess

from sonovec.client import Client

from .conftest import API_KEY, url_of

pytestmark = [pytest.mark.contract, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("v2_tritonclient.py")
TRITON_VENV = REPO / ".cache" / "tritonclient-venv"
TRITON_REQUIREMENTS = ("tritonclient[http,grpc]>=2.40", "numpy")


def triton_python() -> Path:
    """The virtualenv's python, with tritonclient installed (built on first use)."""
    python = TRITON_VENV / "bin" / "python"
    probe = [str(python), "-c", "import tritonclient.http, tritonclient.grpc"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    venv.create(TRITON_VENV, with_pip=True, clear=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *TRITON_REQUIREMENTS],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def triton_run(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("v2")
    wave = tone(1.2, 48_000, 2, seed=140)  # [C, T] at the model rate; 1.2 s: two segments, and
    # as a JSON tensor (about 20 characters a sample) still under the contract server's body limit
    wav = tmp / "clip.wav"
    soundfile.write(wav, wave.T, 48_000, subtype="FLOAT")
    np.save(tmp / "wave.npy", np.ascontiguousarray(wave[None], dtype=np.float32))  # [1, C, T]
    run = subprocess.run(
        [
            str(triton_python()),
            str(SCRIPT),
            f"127.0.0.1:{server.port}",
            f"127.0.0.1:{server.grpc_port}",
            API_KEY,
            str(wav),
            str(tmp / "wave.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    with Client(url_of(server, "http"), api_key=API_KEY) as client:
        result["v1"] = client.embed(wav).vector.astype(float).tolist()
    return result


@pytest.mark.parametrize(
    "way", ["http_binary_audio", "http_binary_waveform", "http_json_waveform", "grpc_audio", "grpc_waveform"]
)
def test_tritonclient_embeds_as_v1(triton_run: dict[str, Any], way: str) -> None:
    want = np.asarray(triton_run["v1"], np.float32)
    got = np.asarray(triton_run["vectors"][way], np.float32)
    assert got.shape == want.shape == (128,)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_tritonclient_reads_metadata_and_config(triton_run: dict[str, Any]) -> None:
    meta = triton_run["meta"]
    assert meta["http_ready"] and meta["grpc_ready"]
    assert meta["http_metadata"]["inputs"][0] == {"name": "WAVEFORM", "datatype": "FP32", "shape": [-1, -1]}
    assert meta["grpc_metadata"]["outputs"][0]["name"] == "EMBEDDING"
    assert meta["http_config"]["max_batch_size"] == 0
    assert meta["grpc_config"]["config"]["input"][1]["data_type"] == "TYPE_STRING"


@pytest.mark.parametrize(
    ("case", "http_status", "grpc_status", "words"),
    [
        ("shape", "400", "StatusCode.INVALID_ARGUMENT", "shape"),
        ("dtype", "400", "StatusCode.INVALID_ARGUMENT", "datatype FP64"),
        ("model", "404", "StatusCode.NOT_FOUND", "unknown model 'no_such_model'"),
        ("key", "401", "StatusCode.UNAUTHENTICATED", "API key"),
    ],
)
def test_tritonclient_gets_protocol_errors(
    triton_run: dict[str, Any], case: str, http_status: str, grpc_status: str, words: str
) -> None:
    errors = triton_run["errors"]
    assert errors[f"http_{case}"]["status"] == http_status, errors[f"http_{case}"]
    assert errors[f"grpc_{case}"]["status"] == grpc_status, errors[f"grpc_{case}"]
    assert words in errors[f"http_{case}"]["message"]
    assert words in errors[f"grpc_{case}"]["message"]


def test_not_imported_here() -> None:
    """tritonclient's stubs and sonovec.inference share protobuf names: never in one process."""
    assert "tritonclient" not in sys.modules
