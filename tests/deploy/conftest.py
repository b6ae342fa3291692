"""Deployment checks: the chart, the Dockerfile and the container probe (marker ``deploy``)."""

from __future__ import annotations


def pytest_configure(config):  # type: ignore[no-untyped-def]
    config.addinivalue_line(
        "markers", "deploy: deployment checks (helm chart, Dockerfile, probe)"
    )
