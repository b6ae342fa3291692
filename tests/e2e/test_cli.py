"""The installed ``sonovec`` command as a new user meets it: help, version, and the health check
against a live server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from servers import ServerProcess, free_port

pytestmark = pytest.mark.e2e

SONOVEC = Path(sys.executable).parent / "sonovec"  # the console script of the installed distribution
COMMANDS = ("serve", "extract", "map", "health", "probe")


def sonovec(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SONOVEC), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("command", [(), *((c,) for c in COMMANDS)], ids=["sonovec", *COMMANDS])
def test_every_command_has_a_help(command: tuple[str, ...]) -> None:
    done = sonovec(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: sonovec {' '.join(command)}".rstrip())
    assert "`" not in done.stdout  # plain text, no RST markup


def test_the_top_level_help_lists_every_command() -> None:
    listed = sonovec("--help").stdout
    for command in ("serve", "extract", "map", "health (probe)"):
        assert f"\n    {command}" in listed, command


def test_version_is_the_installed_distributions() -> None:
    done = sonovec("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sonovec {version('sonovec-server')} ")


def test_extract_help_lists_only_what_extraction_uses() -> None:
    flags = sonovec("extract", "--help").stdout
    for flag in ("--model", "--backend", "--weights", "--device", "--max-batch-seconds", "--pooling"):
        assert flag in flags, flag
    server_only = ("--host", "--port", "--grpc-port", "--metrics-port", "--api-keys", "--redis-url")
    for flag in (*server_only, "--models", "--cache-entries", "--snapshot-interval-s"):
        assert f"{flag} " not in flags, flag


def test_health_and_its_alias_against_a_live_server(tmp_path: Path) -> None:
    with ServerProcess(tmp_path) as server:
        env = {"SONOVEC_PORT": str(server.port)}
        for command in ("health", "probe"):
            live = sonovec(command, "--live", env=env)
            assert live.returncode == 0, live.stderr
            assert live.stdout == "" and live.stderr == ""  # silent on success
            ready = sonovec(command, "-v", env=env)
            assert ready.returncode == 0, ready.stderr
            assert "/v1/health/ready: HTTP 200" in ready.stdout
        url = sonovec("health", "--url", f"{server.url}/v1/health/live", "-v")
        assert url.returncode == 0 and "HTTP 200" in url.stdout, url.stderr
        missing = sonovec("health", "--url", f"{server.url}/v1/nowhere")
        assert missing.returncode == 1 and "HTTP 404" in missing.stderr


@pytest.mark.parametrize("command", ["health", "probe"])
def test_health_fails_against_a_closed_port(command: str) -> None:
    done = sonovec(command, "--live", env={"SONOVEC_PORT": str(free_port())})
    assert done.returncode == 1
    assert "not healthy" in done.stderr and "unreachable" in done.stderr


def test_the_server_log_has_no_faiss_fallback_noise(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, log_level="info") as server:
        created = httpx.post(f"{server.url}/v1/collections", json={"name": "c"}, timeout=30)
        assert created.status_code == 201, created.text  # faiss is loaded by now
    log = server.log.read_text()
    assert "sonovec.server.serve: REST on" in log  # INFO lines do reach the log
    assert "swigfaiss" not in log and "faiss.loader" not in log


def test_docs_extract_md_describes_every_flag_of_extract() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "extract.md").read_text()
    flags = set(re.findall(r"(--[a-z][a-z-]+)", sonovec("extract", "--help").stdout)) - {"--help"}
    assert len(flags) > 15
    assert sorted(f for f in flags if f"`{f}`" not in docs) == []
