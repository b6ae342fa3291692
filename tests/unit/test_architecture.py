"""The architecture of docs/architecture.md, checked: the import contracts hold, and every
module of the server imports alone in a fresh interpreter (no import circle hides behind the
order in which a test session happens to import things)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sonovec.server

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _server_modules() -> list[str]:
    return sorted(
        info.name for info in pkgutil.walk_packages(sonovec.server.__path__, prefix="sonovec.server.")
    )


def test_every_server_module_imports_alone() -> None:
    modules = _server_modules()
    assert {"sonovec.server.runtime", "sonovec.server.core", "sonovec.server.http.app"} <= set(modules)

    def alone(module: str) -> tuple[str, int, str]:
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300
        )
        return module, done.returncode, done.stderr[-1500:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(m, err) for m, rc, err in pool.map(alone, modules) if rc != 0]
    assert not failed, failed
