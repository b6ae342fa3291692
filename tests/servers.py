"""Real servers on loopback for tests: ``sonovec serve`` in a subprocess, polled until ready."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``python -m sonovec.server.cli serve`` with ``SONOVEC_*`` settings; ``url`` once started."""

    def __init__(self, tmp: Path, *, grpc: bool = False, **settings: object) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.env = {
            **os.environ,
            "SONOVEC_HOST": "127.0.0.1",
            "SONOVEC_PORT": str(self.port),
            "SONOVEC_GRPC_PORT": str(self.grpc_port),
            "SONOVEC_DATA_DIR": str(tmp / "data"),
            "SONOVEC_BACKEND": "fake",
            "SONOVEC_WEIGHTS": "random",
            "SONOVEC_LOG_LEVEL": "warning",
        }
        self.env.update({f"SONOVEC_{k.upper()}": str(v) for k, v in settings.items()})
        self.grpc_port = int(self.env["SONOVEC_GRPC_PORT"])
        self.log = tmp / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ServerProcess:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sonovec.server.cli", "serve"], env=self.env, stdout=log, stderr=log
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
                )
            try:
                if httpx.get(f"{self.url}/v1/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready in {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
