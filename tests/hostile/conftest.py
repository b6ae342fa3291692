"""One live server (``sonovec serve``, REST and gRPC on loopback, fake backend) with small limits,
for the hostile-input suite; and a reading of its memory from /proc.

Limits are small so that every case runs in seconds: 2 MiB uploads, 60 s recordings (the bombs
below stay within 60 s but at 384 kHz and 8 channels), a 96 MiB memory budget.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from servers import ServerProcess

MiB = 2**20
MAX_REQUEST_BYTES = 2 * MiB
MAX_AUDIO_SECONDS = 60.0
MAX_INFLIGHT_BYTES = 96 * MiB
SETTINGS = {
    "max_request_bytes": MAX_REQUEST_BYTES,
    "max_audio_seconds": MAX_AUDIO_SECONDS,
    "max_inflight_bytes": MAX_INFLIGHT_BYTES,
    "max_wait_ms": 2,
    "models": "encodec_48khz",
    "cache_entries": 0,
}


@dataclass
class Memory:
    rss: int  # bytes resident now
    hwm: int  # peak resident bytes since start, or since ``reset_peak``


class Live:
    """The server process, a client of it, and its memory."""

    def __init__(self, process: ServerProcess) -> None:
        self.process = process
        self.url = process.url
        self.grpc = f"127.0.0.1:{process.grpc_port}"
        self.http = httpx.Client(base_url=process.url, timeout=60.0)

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def memory(self) -> Memory:
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
        return Memory(fields["VmRSS"], fields["VmHWM"])

    def reset_peak(self) -> None:
        """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM to the current RSS)."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")

    def assert_serving(self) -> None:
        assert self.http.get("/v1/health/ready").status_code == 200
        assert self.http.get("/v1/models").status_code == 200


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc (VmHWM and clear_refs)")
    tmp = tmp_path_factory.mktemp("hostile")
    process = ServerProcess(tmp, grpc=True, **SETTINGS).start()
    server = Live(process)
    warm_up(server)
    yield server
    server.http.close()
    process.stop()


def warm_up(server: Live) -> None:
    """One request down every path first, so that first-use costs (imports, thread pools) are not
    counted against the first hostile case."""
    from audiofiles import encode, tone

    for fmt in ("wav", "flac", "ogg", "mp3"):
        clip = encode(tone(5.0, 44_100, 2, seed=99), 44_100, fmt)
        assert server.http.post("/v1/embed", files={"audio": ("a", clip)}).status_code == 200


@pytest.fixture
def peak(live: Live) -> Iterator[PeakProbe]:
    """Peak RSS growth of the server during the test, and after it the server must still serve."""
    probe = PeakProbe(live)
    yield probe
    live.assert_serving()


class PeakProbe:
    def __init__(self, live: Live) -> None:
        self.live = live
        live.reset_peak()
        self.start = live.memory().rss

    def growth(self) -> int:
        """Bytes the peak RSS rose above the RSS at the start of the test."""
        return self.live.memory().hwm - self.start

    def assert_below(self, bound: int) -> None:
        grown = self.growth()
        print(f"peak RSS growth {grown / MiB:.1f} MiB (bound {bound / MiB:.0f} MiB)")
        assert grown < bound, f"server peak RSS grew by {grown / MiB:.1f} MiB (bound {bound / MiB:.0f} MiB)"
