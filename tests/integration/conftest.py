"""Integration fixtures: a real redis-server per test (``redis_server``). Where redis-server is not
installed the tests that need it are skipped, with the reason; under CI (``CI`` set) they fail,
since ``make system-deps`` installs it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer, available


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (make system-deps)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer(tmp_path / "redis") as server:
        yield server
