"""Settings for tests on the tiny deterministic ``fake`` backend (no torch, no weights)."""

from __future__ import annotations

from pathlib import Path

from sonovec.server.settings import Settings


def fake_settings(tmp: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "backend": "fake",
        "weights": "random",
        "grpc_port": 0,
        "data_dir": tmp / "data",
    }
    return Settings(**{**values, **overrides})
