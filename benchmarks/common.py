"""Shared by the speed benchmarks: the machine and how busy it is, a musical test corpus, a
``sonovec serve`` subprocess, and writing results (JSON + PNG under ``benchmarks/results/``).

Timing on a shared machine: every run records the load average and, from ``/proc/stat``, how much
CPU *other* processes took while it ran (``others_cpu``: cores' worth). Wall-clock figures are
what was measured; ``cpu_s`` (this process, its threads, and the server subprocess) gives the
throughput per CPU-second, which other processes disturb much less (they still share caches and
memory bandwidth). Compare methods by their ratio within one run.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

RESULTS = Path(__file__).resolve().parent / "results"
SCRATCH = RESULTS / "tmp"  # ignored by git: corpora, extract outputs, ONNX exports
RANDOM_NOTE = "random-init weights (--weights random): EnCodec's pretrained weights cannot be downloaded here"


# ---- the machine ------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import onnxruntime
    import torch

    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "weights": RANDOM_NOTE,
    }


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (all its threads)."""
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Measurement:
    wall_s: float
    cpu_s: float  # ours: this process plus the watched subprocesses
    others_cpu: float  # mean cores' worth of CPU used by everything else on the machine
    load_avg: float  # mean 1-minute load average during the run

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "others_cpu": round(self.others_cpu, 2), "load_avg": round(self.load_avg, 2)}


@dataclass
class Meter:
    """``with Meter([server_pid]) as m: ...`` then ``m.result``: wall, our CPU, the others' CPU."""

    pids: list[int] = field(default_factory=list)
    result: Measurement | None = None

    def __enter__(self) -> Meter:
        self._loads: list[float] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._busy0, self._total0 = _busy_jiffies()
        self._cpu0 = own_cpu_s() + sum(process_cpu_s(p) for p in self.pids)
        self._t0 = time.perf_counter()
        self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(1.0):
            self._loads.append(os.getloadavg()[0])

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        cpu = own_cpu_s() + sum(process_cpu_s(p) for p in self.pids) - self._cpu0
        busy, total = _busy_jiffies()
        self._stop.set()
        self._sampler.join()
        cores = len(os.sched_getaffinity(0))
        busy_s = (busy - self._busy0) / max(total - self._total0, 1) * cores * wall
        loads = self._loads or [os.getloadavg()[0]]
        self.result = Measurement(wall, cpu, max(0.0, busy_s - cpu) / wall, float(np.mean(loads)))


# ---- a musical corpus: piano-like additive synthesis -----------------------------------------------

A4 = 440.0
CHORDS = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 5, 7), (0, 4, 7, 9))


@functools.lru_cache(maxsize=512)
def _note(freq: float, seconds: float, sample_rate: int) -> np.ndarray:
    """One struck string at unit velocity: 12 slightly inharmonic partials, each decaying faster
    the higher it is. Cached: a recording reuses a few dozen pitches and note lengths."""
    rng = np.random.default_rng(int(freq * 1000))
    n = int(seconds * sample_rate)
    t = np.arange(n, dtype=np.float32) / sample_rate
    inharmonicity = 1e-4 * rng.uniform(0.5, 2.0)
    tone = np.zeros(n, np.float32)
    for k in range(1, 13):
        fk = freq * k * np.sqrt(1 + inharmonicity * k * k)
        if fk > 0.45 * sample_rate:
            break
        decay = (0.6 + 0.25 * k) * (freq / 261.6) ** 0.5
        tone += (1 / k**1.3) * np.exp(-decay * t) * np.sin(2 * np.pi * fk * t + rng.uniform(0, 6.28))
    attack = np.minimum(1.0, t / 0.004)  # 4 ms hammer attack
    return (tone * attack).astype(np.float32)


def piano_recording(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """``[2, T]`` float32: chords and a melody over them, panned notes, a little room noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros((2, n + 4 * sample_rate), np.float32)
    beat = 60.0 / rng.uniform(70, 140)
    root = rng.integers(-14, -2)  # semitones from A4
    t = 0.0
    while t < seconds:
        chord = CHORDS[rng.integers(len(CHORDS))]
        for interval in chord:  # the chord, held for two beats
            _add(out, A4 * 2 ** ((root + interval - 12) / 12), t, 2.5 * beat, rng, sample_rate)
        for step in range(4):  # a melody line, half beats
            pitch = root + chord[rng.integers(len(chord))] + 12 * rng.integers(0, 2)
            _add(out, A4 * 2 ** (pitch / 12), t + step * beat / 2, 1.2 * beat, rng, sample_rate)
        t += 2 * beat
        root = (root + rng.choice([-5, -3, 2, 5, 7]) + 24) % 24 - 20
    out = out[:, :n] + 1e-3 * rng.standard_normal((2, n)).astype(np.float32)
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def _add(out: np.ndarray, freq: float, start: float, seconds: float, rng: np.random.Generator,
         sample_rate: int) -> None:
    note = rng.uniform(0.4, 1.0) * _note(round(freq, 3), round(seconds, 3), sample_rate)
    pan = rng.uniform(0.2, 0.8)
    i = int(start * sample_rate)
    j = min(out.shape[1], i + len(note))
    out[0, i:j] += (1 - pan) * note[: j - i]
    out[1, i:j] += pan * note[: j - i]


def make_corpus(
    folder: Path, count: int, seconds: float, sample_rate: int = 44_100, fmt: str = "FLAC"
) -> list[Path]:
    """``count`` stereo recordings of ``seconds`` at ``sample_rate`` in ``folder`` (kept between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".flac" if fmt == "FLAC" else ".wav"
    paths = []
    for i in range(count):
        path = folder / f"recording_{i:04d}{suffix}"
        if not path.exists():
            audio = piano_recording(seconds, sample_rate, seed=i)
            tmp = path.with_name(path.name + ".tmp")
            soundfile.write(tmp, audio.T, sample_rate, format=fmt, subtype="PCM_16")
            os.replace(tmp, path)
        paths.append(path)
    return paths


def cut_fragments(recordings: list[Path], folder: Path, seconds: float) -> list[Path]:
    """The first ``seconds`` of every recording as its own FLAC file (what a client uploads)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in recordings:
        target = folder / path.name
        if not target.exists():
            with soundfile.SoundFile(path) as f:
                audio = f.read(int(seconds * f.samplerate), dtype="int16")
                rate = f.samplerate
            soundfile.write(target, audio, rate, format="FLAC", subtype="PCM_16")
        paths.append(target)
    return paths


# ---- a server subprocess -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A backend configuration named on the command line: ``BACKEND[-PRECISION][-wWORKERS]``, e.g.
    ``torch``, ``torch-bf16``, ``torch-w2`` (two batcher workers), ``torch-fp16-w2``, ``onnx``."""

    name: str
    backend: str
    precision: str = "fp32"
    workers: int = 1

    @classmethod
    def parse(cls, name: str) -> Variant:
        backend, *parts = name.split("-")
        precision, workers = "fp32", 1
        for part in parts:
            if part[:1] == "w" and part[1:].isdigit():
                workers = int(part[1:])
            elif part in ("fp32", "bf16", "fp16", "int8"):
                precision = part
            else:
                raise ValueError(f"{name!r}: expected BACKEND[-fp32|bf16|fp16|int8][-wN], e.g. torch-bf16-w2")
        return cls(name, backend, precision, workers)

    def serve_args(self) -> list[str]:
        return ["--backend", self.backend, "--precision", self.precision, "--workers", str(self.workers)]


def variants(text: str) -> list[Variant]:
    return [Variant.parse(name) for name in text.split(",") if name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``sonovec serve`` in a subprocess on free loopback ports; ready when ``/v1/health/ready`` is."""

    def __init__(self, *args: str, grpc: bool = True, log: Path | None = None) -> None:
        self.port = free_port()
        self.grpc_port = free_port() if grpc else 0
        self.args = ["serve", "--host", "127.0.0.1", "--port", str(self.port),
                     "--grpc-port", str(self.grpc_port), "--log-level", "warning", *args]
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str | None:
        return f"grpc://127.0.0.1:{self.grpc_port}" if self.grpc_port else None

    def __enter__(self) -> Server:
        import httpx

        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "sonovec.server.cli", *self.args], stdout=out,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600  # a first ONNX export takes a minute on two busy cores
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sonovec serve exited with {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(self.url + "/v1/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError("sonovec serve did not become ready in 600 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def metrics(self) -> str:
        import httpx

        return httpx.get(self.url + "/metrics", timeout=10).text


def grpc_client_available() -> bool:
    try:
        import grpc  # noqa: F401

        from sonovec.client import AsyncClient  # noqa: F401
        from sonovec.v1 import sonovec_pb2  # noqa: F401
    except ImportError:
        return False
    return True


# ---- results -----------------------------------------------------------------------------------------


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format). Returns the table as printed (markdown)."""
    headers = [h for _, h, _ in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        cells = [format(row[k], f) if row.get(k) is not None else "-" for k, _, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    print(f"wrote {path}")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Variant):
        return value.name
    raise TypeError(type(value).__name__)


def save_figure(name: str, figure: object) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    print(f"wrote {path}")
    return path
