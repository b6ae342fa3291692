"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fakes import fake_settings

from sonovec.server.core import Service
from sonovec.server.http.app import create_app
from sonovec.server.runtime import Runtime


@pytest.fixture
def make_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """Build and start runtimes on the fake backend; each is stopped at the end of the test."""
    started: list[Runtime] = []

    def make(**overrides: object) -> Runtime:
        runtime = Runtime(fake_settings(tmp_path, **overrides)).start_sync()
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        runtime.stop(timeout=10)


@pytest.fixture
def make_service(make_runtime: Callable[..., Runtime]) -> Callable[..., Service]:
    """The core service of a runtime from ``make_runtime``."""
    return lambda **overrides: make_runtime(**overrides).service


@pytest.fixture
async def rest(make_runtime: Callable[..., Runtime]) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process REST client over the fake backend (the same app ``sonovec serve`` runs)."""
    app = create_app(make_runtime())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sonovec") as client:
        yield client
