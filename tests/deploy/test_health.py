"""`sonovec health` (the container health check) against a tiny stdlib HTTP server on loopback."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from sonovec.server import health

pytestmark = pytest.mark.deploy


class _Handler(http.server.BaseHTTPRequestHandler):
    # path -> status; the ready route answers whatever the test sets on the server.
    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("x-api-key")))  # type: ignore[attr-defined]
        if self.path == health.LIVE_PATH:
            status = 200
        elif self.path == health.READY_PATH:
            status = self.server.ready_status  # type: ignore[attr-defined]
        elif self.path == "/slow":
            time.sleep(1)
            status = 200
        else:
            status = 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.ready_status = 200  # type: ignore[attr-defined]
    httpd.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def port_env(server: http.server.ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch) -> int:
    port = server.server_address[1]
    monkeypatch.setenv("SONOVEC_PORT", str(port))
    monkeypatch.delenv("SONOVEC_API_KEYS", raising=False)
    return port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ready_200_exits_0_silently(server, port_env, capsys) -> None:
    assert health.main([]) == 0
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert server.seen[-1][0] == health.READY_PATH


def test_ready_503_exits_1_with_reason(server, port_env, capsys) -> None:
    server.ready_status = 503
    assert health.main([]) == 1
    assert "503" in capsys.readouterr().err


def test_live_checks_live_route(server, port_env) -> None:
    server.ready_status = 503
    assert health.main(["--live"]) == 0
    assert server.seen[-1][0] == health.LIVE_PATH


def test_verbose_prints_on_success(server, port_env, capsys) -> None:
    assert health.main(["-v"]) == 0
    assert "HTTP 200" in capsys.readouterr().out


def test_explicit_url(server, capsys) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/nowhere"
    assert health.main(["--url", url]) == 1
    assert "404" in capsys.readouterr().err


def test_connection_refused_exits_1(monkeypatch, capsys) -> None:
    monkeypatch.setenv("SONOVEC_PORT", str(_free_port()))
    assert health.main([]) == 1
    assert "unreachable" in capsys.readouterr().err


def test_timeout_exits_1(server) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/slow"
    start = time.monotonic()
    assert health.main(["--url", url, "--timeout", "0.3"]) == 1
    assert time.monotonic() - start < 1.5


def test_default_url_and_timeout() -> None:
    assert health.default_url(False, {}) == "http://127.0.0.1:8000/v1/health/ready"
    assert health.default_url(True, {"SONOVEC_PORT": "9001"}) == "http://127.0.0.1:9001/v1/health/live"
    assert health.DEFAULT_TIMEOUT_S == 3.0


def test_api_key_sent_to_loopback_only(server, port_env, monkeypatch) -> None:
    monkeypatch.setenv("SONOVEC_API_KEYS", "k1,k2")
    assert health.main([]) == 0
    assert server.seen[-1][1] == "k1"
    assert health._headers("http://example.invalid/v1/health/ready", {"SONOVEC_API_KEYS": "k1"}) == {}


def test_proxy_env_is_ignored(server, port_env, monkeypatch) -> None:
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("no_proxy", "")
    assert health.main([]) == 0


def test_runs_as_module(server, port_env) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sonovec.server.health"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    server.ready_status = 503
    done = subprocess.run(
        [sys.executable, "-m", "sonovec.server.health"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
