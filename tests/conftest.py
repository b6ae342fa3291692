"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fakes import fake_settings

from sonovec.server.core import Service
from sonovec.server.http.app import create_app


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator:
    """Build and start services on the fake backend; each is drained at the end of the test."""
    started: list[Service] = []

    def make(**overrides: object) -> Service:
        service = Service.from_settings(fake_settings(tmp_path, **overrides))
        service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        if not service.draining:
            service.batcher.stop(timeout=10)


@pytest.fixture
async def rest(make_service) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """An in-process REST client over the fake backend (the same app ``sonovec serve`` runs)."""
    service = make_service()
    app = create_app(service.settings, service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sonovec") as client:
        yield client
