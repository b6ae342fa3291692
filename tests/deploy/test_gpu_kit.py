"""The GPU kit (``scripts/gpu-kit.sh``, ``scripts/gpu_kit.py``): what it plans for the GPU machine,
that its check names what a kit lacks, and (slow, needs PyPI) that a kit built for this Python
installs with ``--no-index`` and imports the service from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_kit  # noqa: E402

pytestmark = pytest.mark.deploy

GPU_PYTHON = "3.12.3"


def test_plan_for_the_gpu_machine_brings_what_it_lacks_and_only_that() -> None:
    plan = gpu_kit.plan(GPU_PYTHON, "gpu")
    lacking = {"encodec", "fastapi", "starlette", "pydantic", "pydantic-core", "pydantic-settings", "uvicorn",
               "python-multipart", "soundfile", "cffi", "soxr", "faiss-cpu", "redis", "hiredis",
               "grpcio-health-checking", "grpcio-reflection", "pytest-asyncio"}
    assert lacking <= set(plan)
    assert {"grpcio", "protobuf"} <= set(plan)  # on the machine, but the generated code needs these versions
    there = {"torch", "torchaudio", "numpy", "onnx", "onnxruntime", "scikit-learn", "scipy", "matplotlib",
             "httpx", "tqdm", "pytest", "pytest-timeout", "einops", "prometheus-client", "typing-extensions"}
    assert not there & set(plan)
    assert all(version for version in plan.values()), plan  # pinned to what this venv runs


def test_plan_full_is_everything_but_torch() -> None:
    plan = gpu_kit.plan(f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}", "full")
    assert {"numpy", "httpx", "pytest", "onnxruntime", "encodec", "grpcio"} <= set(plan)
    assert not {"torch", "sympy", "networkx", "ruff", "mypy", "sonovec-server"} & set(plan)


def _wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = (),
           tag: str = "py3-none-any") -> None:
    meta = [f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}"]
    meta += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(folder / f"{name}-{version}-{tag}.whl", "w") as wheel:
        wheel.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(meta) + "\n")


def test_check_names_what_a_kit_lacks(tmp_path: Path) -> None:
    requires = ("pydantic-core==2.1", "typing-extensions>=4", "colorama; sys_platform == 'win32'")
    _wheel(tmp_path, "pydantic", "2.0", requires)
    _wheel(tmp_path, "dup", "1.0")
    _wheel(tmp_path, "dup", "2.0")
    _wheel(tmp_path, "widget", "1.0", tag="cp39-cp39-win_amd64")
    problems = gpu_kit.check(tmp_path, GPU_PYTHON, "gpu")
    assert "pydantic needs pydantic-core==2.1: neither in the kit nor on the target" in problems
    assert "two versions of dup: 1.0 and 2.0" in problems
    assert any(p.startswith("widget-1.0-cp39-cp39-win_amd64.whl: no tag installable") for p in problems)
    assert "sonovec-server: a root requirement, neither in the kit nor on the target" in problems
    # on the machine (typing-extensions) or not for Linux (colorama): no problem
    assert not [p for p in problems if "typing-extensions" in p or "colorama" in p]

    _wheel(tmp_path, "pydantic_core", "2.0")
    assert "pydantic needs pydantic-core==2.1; the kit has pydantic-core 2.0" in gpu_kit.check(
        tmp_path, GPU_PYTHON, "gpu")


@pytest.mark.slow
def test_kit_for_this_python_installs_offline_and_serves_imports(tmp_path: Path) -> None:
    """Built for this interpreter (the GPU machine's kit is the same recipe for 3.12): the script's own
    check passes, it stays small, and the service imports from the installed wheels alone."""
    here = ".".join(str(x) for x in sys.version_info[:3])
    kit = tmp_path / "kit"
    command = ["bash", str(ROOT / "scripts" / "gpu-kit.sh"), "--python", here, "--out", str(kit)]
    build = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                           env={**os.environ, "PYTHON": sys.executable})
    if build.returncode != 0:
        probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "encodec"],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            pytest.skip(f"PyPI unreachable, the kit cannot be downloaded: {probe.stderr.strip()[-300:]}")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "complete for CPython" in build.stdout
    assert sum(p.stat().st_size for p in kit.iterdir()) < 48 * 2**20
    wheels = sorted(str(p) for p in kit.glob("*.whl"))
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                              "--no-compile", "--target", str(site), *wheels],
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
    assert install.returncode == 0, install.stderr[-3000:]
    script = ("import sonovec.server.http.app, sonovec.server.grpc.server, sonovec.v1.sonovec_pb2_grpc, "
              "sonovec.models.encodec_torch, encodec, fastapi, faiss\n"
              "print(sonovec.server.http.app.__file__, sonovec.v1.sonovec_pb2_grpc.__file__,"
              " fastapi.__file__)")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr[-3000:]
    assert all(path.startswith(str(site)) for path in run.stdout.split()), run.stdout
