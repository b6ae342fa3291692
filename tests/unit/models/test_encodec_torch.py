"""The torch backend against the unmodified EnCodec path (random-init, seeded weights).

Equivalence is checked the way the service uses the backend: a file is cut by ``plan_windows``, full
windows of several files run as one batch, tails run alone at their exact length, and the
concatenated latents must equal ``EncodecModel.encode`` of each file alone.

Set ``SONOVEC_TEST_WEIGHTS_DIR`` to a directory holding the official checkpoints to run the same
checks on the trained weights too (needed to re-check the 24 kHz chunk context, see registry.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from sonovec.models import _compat
from sonovec.models.base import Backend, BackendOptions, ModelSpec, plan_windows
from sonovec.models.encodec_torch import TorchBackend
from sonovec.models.reference import reference_decode, reference_encode, reference_latents
from sonovec.models.registry import get_spec, load_backend
from sonovec.models.weights import (
    CHECKPOINTS,
    WeightsError,
    checkpoint_url,
    fingerprint,
    load_model,
    resolve_state_dict,
)

pytestmark = pytest.mark.model

MODELS = ("encodec_48khz", "encodec_24khz")
WEIGHTS = ["random", *filter(None, [os.environ.get("SONOVEC_TEST_WEIGHTS_DIR")])]
SECONDS = {"encodec_48khz": (0.3, 1.0, 1.5, 2.7), "encodec_24khz": (0.3, 2.7)}
LONG_24KHZ = (23.0, 10.5)  # longer than one 10 s chunk: chunked with left context
RTOL = 1e-5


@functools.cache
def cached_backend(model: str, weights: str = "random") -> TorchBackend:
    return load_backend("torch", BackendOptions(model=model, weights=weights))  # type: ignore[return-value]


@pytest.fixture(params=[(m, w) for w in WEIGHTS for m in MODELS], ids=lambda p: f"{p[0]}-{p[1][-12:]}")
def backend(request: pytest.FixtureRequest) -> TorchBackend:
    return cached_backend(*request.param)


def make_audio(spec: ModelSpec, seconds: float, seed: int) -> np.ndarray:
    """Noise plus a few sines, ``[C, T]`` float32."""
    rng = np.random.default_rng(seed)
    n = round(seconds * spec.sample_rate)
    t = np.arange(n) / spec.sample_rate
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(80, 4000, 3))
    x = 0.05 * rng.standard_normal((spec.channels, n)) + 0.2 * tones * rng.uniform(0.5, 1, (spec.channels, 1))
    return x.astype(np.float32)


def encode_files(backend: TorchBackend, spec: ModelSpec, files: list[np.ndarray]) -> list[np.ndarray]:
    """Latents ``[D, F]`` per file as the service computes them: windows of equal fed length batched
    across files, context frames dropped, concatenated in window order."""
    groups: dict[int, list[tuple[int, int, slice, int]]] = defaultdict(list)
    for i, wav in enumerate(files):
        for j, window in enumerate(plan_windows(spec, wav.shape[1])):
            fed = window.fed
            groups[fed.stop - fed.start].append((i, j, fed, window.context // spec.hop_length))
    pieces: dict[tuple[int, int], np.ndarray] = {}
    for members in groups.values():
        batch = np.stack([files[i][:, fed] for i, _, fed, _ in members])  # [B, C, W]
        latents = backend.encode(batch).latents
        for row, (i, j, _, drop) in enumerate(members):
            pieces[i, j] = latents[row, :, drop:]
    return [np.concatenate([pieces[key] for key in sorted(k for k in pieces if k[0] == i)], -1)
            for i in range(len(files))]


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def pooled_cosine(got: np.ndarray, want: np.ndarray) -> float:
    a, b = got.mean(-1), want.mean(-1)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --- torchaudio stand-in ------------------------------------------------------------------------


def test_package_imports_without_torchaudio() -> None:
    import sonovec.models.encodec_torch  # noqa: F401  (imported at the top already; explicit here)

    torchaudio = sys.modules["torchaudio"]
    if not _compat.is_stand_in(torchaudio):
        pytest.skip("a working torchaudio is installed here; the stand-in is not in use")
    with pytest.raises(RuntimeError, match="torchaudio is unavailable.*sonovec never needs"):
        torchaudio.load("x.wav")
    assert not hasattr(torchaudio, "__file__")  # dunders stay AttributeError: inspect, hasattr work


def test_broken_torchaudio_is_replaced_in_a_fresh_interpreter(tmp_path) -> None:
    """A torchaudio that fails with OSError (wheel built for another torch) gets the stand-in."""
    package = tmp_path / "torchaudio"
    package.mkdir()
    (package / "__init__.py").write_text("raise OSError('libtorchaudio.so: undefined symbol')\n")
    script = textwrap.dedent("""
        import sys
        from sonovec.models._compat import import_encodec, is_stand_in
        encodec = import_encodec()
        assert encodec.EncodecModel is not None
        assert is_stand_in(sys.modules["torchaudio"])
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compat_never_shadows_an_importable_torchaudio(monkeypatch: pytest.MonkeyPatch) -> None:
    real = types.ModuleType("torchaudio")
    monkeypatch.setitem(sys.modules, "torchaudio", real)
    assert _compat.ensure_torchaudio() is real
    assert _compat.import_encodec().EncodecModel is not None
    assert sys.modules["torchaudio"] is real


# --- encode: windows and batches equal the file alone ---------------------------------------------


def test_windows_batched_equal_reference(backend: TorchBackend) -> None:
    assert isinstance(backend, Backend) and backend.kind == "torch" and backend.device == "cpu"
    spec = backend.spec
    files = [make_audio(spec, s, seed) for seed, s in enumerate(SECONDS[spec.name])]
    assert all(len(plan_windows(spec, f.shape[1])) == 1 for f in files) or spec.segmented
    for wav, got in zip(files, encode_files(backend, spec, files), strict=True):
        want = reference_latents(backend.model, wav)
        assert got.shape == want.shape
        error = relative_error(got, want)
        print(f"{spec.name} {wav.shape[1] / spec.sample_rate:.1f} s: max relative error {error:.2e}")
        assert error < RTOL


def test_24khz_chunks_with_left_context(backend: TorchBackend) -> None:
    """Files longer than one chunk: the left context must hide the chunk boundary (LSTM state).

    Both files' first chunks run as one batch; the measured numbers are printed (``pytest -s``).
    Without context the same check fails, so it does test the context.
    """
    spec = backend.spec
    if spec.segmented:
        pytest.skip("24 kHz only: 48 kHz windows are the model's own segments")
    files = [make_audio(spec, s, 10 + seed) for seed, s in enumerate(LONG_24KHZ)]
    wants = [reference_latents(backend.model, wav) for wav in files]
    for wav, got, want in zip(files, encode_files(backend, spec, files), wants, strict=True):
        error, cosine = relative_error(got, want), pooled_cosine(got, want)
        seconds, context = wav.shape[1] / spec.sample_rate, spec.context / spec.sample_rate
        print(f"24 kHz {seconds:.1f} s, context {context:g} s, {backend.weights.source}: "
              f"max relative error {error:.2e}, pooled cosine {cosine:.8f}")
        assert cosine >= 0.9999
        if not backend.weights.pretrained:
            assert error < 1e-4
    (no_context,) = encode_files(backend, dataclasses.replace(spec, context=0), files[-1:])
    error = relative_error(no_context, wants[-1])
    print(f"24 kHz {LONG_24KHZ[-1]:.1f} s without context: max relative error {error:.2e}")
    assert error > 1e-3


# --- quantize and decode -----------------------------------------------------------------------------


def test_codes_agree_with_reference(backend: TorchBackend) -> None:
    spec = backend.spec
    wav = make_audio(spec, 1.2, 7)
    windows = plan_windows(spec, wav.shape[1])
    latents = [backend.encode(wav[None, :, w.fed]).latents for w in windows]
    for bandwidth in spec.bandwidths:
        want = reference_encode(backend.model, wav, bandwidth)
        got = [backend.quantize(lat, bandwidth)[0] for lat in latents]
        assert [g.shape for g in got] == [codes.shape for codes, _ in want]
        agree = np.mean(np.concatenate([(g == w).ravel() for g, (w, _) in zip(got, want, strict=True)]))
        print(f"{spec.name} {bandwidth:g} kbps: {got[0].shape[0]} codebooks, agreement {agree:.5f}")
        assert agree >= 0.999
        assert got[0].shape[0] == spec.num_codebooks(bandwidth)


def test_decode_equals_reference_per_segment(backend: TorchBackend) -> None:
    spec = backend.spec
    wav = make_audio(spec, 1.2, 8)
    segments = reference_encode(backend.model, wav, spec.bandwidths[1])
    full = [s for s in segments if s[0].shape[1] == segments[0][0].shape[1]]
    codes = np.stack([c for c, _ in full])  # full segments as one batch [B, K, F]
    scales = np.array([s for _, s in full], np.float32)
    got = list(backend.decode(codes, scales)) + [
        backend.decode(c[None], np.array([s], np.float32))[0] for c, s in segments[len(full):]
    ]
    for audio, (c, s) in zip(got, segments, strict=True):
        want = reference_decode(backend.model, c, s)
        assert audio.shape == want.shape == (spec.channels, c.shape[1] * spec.hop_length)
        assert relative_error(audio, want) < 1e-4


def test_random_codebooks_are_not_degenerate(backend: TorchBackend) -> None:
    """encodec leaves untrained codebooks at zero (k-means init): codes would all be 0."""
    spec = backend.spec
    latents = backend.encode(make_audio(spec, 0.5, 9)[None, :, : spec.window]).latents
    assert len(np.unique(backend.quantize(latents, spec.bandwidths[0]))) > 10


def test_invalid_inputs_are_clear(backend: TorchBackend) -> None:
    spec = backend.spec
    with pytest.raises(ValueError, match="not one of"):
        backend.quantize(np.zeros((1, spec.latent_dim, 3), np.float32), 5.0)
    with pytest.raises(ValueError, match=r"\[B, 2, T\]|\[B, 1, T\]"):
        backend.encode(np.zeros((1, 3, 960), np.float32))
    with pytest.raises(ValueError, match="codes must lie"):
        backend.decode(np.full((1, spec.num_codebooks(spec.bandwidths[0]), 2), 1024), np.ones(1, np.float32))


# --- options --------------------------------------------------------------------------------------


def test_bf16_close_to_fp32() -> None:
    fp32 = cached_backend("encodec_48khz")
    bf16 = TorchBackend(fp32.spec, fp32.model, fp32.weights, torch.device("cpu"), torch.bfloat16)
    wav = make_audio(fp32.spec, 1.0, 11)[None]
    a, b = fp32.encode(wav).latents, bf16.encode(wav).latents
    assert b.dtype == np.float32
    cosine = float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    print(f"bf16 vs fp32 latents cosine {cosine:.5f}")
    assert cosine > 0.99
    codes = bf16.quantize(b, 6.0)
    assert np.array_equal(bf16.decode(codes, np.ones(1, np.float32)).shape, (1, 2, codes.shape[2] * 320))


def test_full_precision_latents_ignore_reduced_precision() -> None:
    fp32 = cached_backend("encodec_48khz")
    bf16 = TorchBackend(fp32.spec, fp32.model, fp32.weights, torch.device("cpu"), torch.bfloat16)
    wav = make_audio(fp32.spec, 1.0, 12)[None]
    want = fp32.encode(wav).latents
    assert np.array_equal(bf16.encode(wav, full_precision=True).latents, want)
    assert not np.array_equal(bf16.encode(wav).latents, want)  # the flag, not the input, made the difference


def test_concurrent_calls_equal_sequential_ones() -> None:
    """The batcher's workers call one backend from several threads at once."""
    backend = cached_backend("encodec_48khz")
    spec = backend.spec
    batches = [np.stack([make_audio(spec, 1.0, seed), make_audio(spec, 1.0, seed + 1)]) for seed in range(6)]
    want = [backend.encode(batch).latents for batch in batches]
    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda batch: backend.encode(batch).latents, batches))
    for g, w in zip(got, want, strict=True):
        assert relative_error(g, w) <= 1e-6


def test_cpu_calls_run_as_parallel_single_thread_calls() -> None:
    """``threads`` single-thread model calls side by side (0: one per core), whatever the workers."""
    before = torch.get_num_threads()
    try:
        options = BackendOptions(model="encodec_24khz", weights="random", threads=2, workers=2)
        two = load_backend("torch", options)
        assert torch.get_num_threads() == 1 and two.threads == 2  # type: ignore[attr-defined]
        one = load_backend("torch", BackendOptions(model="encodec_24khz", weights="random", threads=1))
        assert one.threads == 1 and one._pool is None  # type: ignore[attr-defined]
        every = load_backend("torch", BackendOptions(model="encodec_24khz", weights="random"))
        assert every.threads == len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp16"}, "fp16 needs a CUDA device"),
        ({"precision": "int8"}, "unknown precision"),
        ({"device": "cuda:0"}, "no CUDA device"),
        ({"device": "tpu"}, "unknown device|unsupported device"),
    ],
)
def test_bad_options_fail_before_loading(options: dict[str, str], message: str) -> None:
    if torch.cuda.is_available() and ("cuda" in options.get("device", "") or "fp16" in options.values()):
        pytest.skip("this machine has CUDA")
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        TorchBackend.load(get_spec("encodec_48khz"), BackendOptions("encodec_48khz", "random", **options))
    assert time.perf_counter() - start < 0.1  # rejected before any model is built


# --- weights ------------------------------------------------------------------------------------


def test_random_weights_are_reproducible_and_distinct() -> None:
    fingerprints = set()
    for name in MODELS:
        first = cached_backend(name).weights
        before = torch.random.get_rng_state()
        _, again = load_model(name, "random")
        assert torch.equal(torch.random.get_rng_state(), before)  # seeding left the global RNG alone
        assert again == first
        assert first.fingerprint.startswith("random-") and len(first.fingerprint) == len("random-") + 16
        assert not first.pretrained and first.warning and "RANDOM-INIT WEIGHTS" in first.warning
        fingerprints.add(first.fingerprint)
    assert len(fingerprints) == len(MODELS)


def test_random_weights_do_not_depend_on_the_thread_count() -> None:
    """Replicas started with different --threads / --workers must share one embedding space."""
    before = torch.get_num_threads()
    try:
        seen = set()
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            seen.add(load_model("encodec_48khz", "random")[1].fingerprint)
            assert torch.get_num_threads() == threads  # restored after the single-threaded build
        assert len(seen) == 1
    finally:
        torch.set_num_threads(before)


def test_checkpoint_directory_loads_and_is_verified(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_name = "encodec_24khz"
    state_dict = cached_backend(model_name).model.state_dict()
    staging = tmp_path / "staging.th"
    torch.save(state_dict, staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    good = tmp_path / "good"
    good.mkdir()
    staging.rename(good / f"{model_name}-{digest}.th")
    monkeypatch.setitem(CHECKPOINTS, model_name, f"{model_name}-{digest}.th")

    loaded, info = resolve_state_dict(model_name, str(good))
    assert info.pretrained and info.source == f"pretrained:{good / CHECKPOINTS[model_name]}"
    assert info.fingerprint == f"{model_name}-{fingerprint(state_dict)}"
    assert resolve_state_dict(model_name, str(good))[1].fingerprint == info.fingerprint
    assert all(torch.equal(loaded[k], v) for k, v in state_dict.items())

    bad = tmp_path / "bad"
    bad.mkdir()
    (good / CHECKPOINTS[model_name]).rename(bad / f"{model_name}-0badc0de.th")
    monkeypatch.setitem(CHECKPOINTS, model_name, f"{model_name}-0badc0de.th")
    with pytest.raises(WeightsError, match=f"checksum mismatch .*0badc0de.*{digest}"):
        resolve_state_dict(model_name, str(bad))
    with pytest.raises(WeightsError, match="existing directory"):
        resolve_state_dict(model_name, str(tmp_path / "missing"))


def test_fingerprint_is_fast() -> None:
    state_dict = cached_backend("encodec_48khz").model.state_dict()
    start = time.process_time()  # CPU time: the hash is single-threaded; immune to a busy machine
    fingerprint(state_dict)
    assert time.process_time() - start < 0.5


def test_pretrained_without_network_fails_fast_naming_what_was_tried(tmp_path) -> None:
    model_name = "encodec_24khz"
    url = checkpoint_url(model_name)
    try:
        socket.getaddrinfo(url.split("/")[2], 443)
        pytest.skip("the checkpoint host resolves: this test checks the offline failure, not a download")
    except OSError:
        pass
    hub_dir = torch.hub.get_dir()
    outcome: list[BaseException | object] = []

    def attempt() -> None:
        try:
            outcome.append(resolve_state_dict(model_name, "pretrained"))
        except Exception as error:  # handed to the test thread
            outcome.append(error)

    torch.hub.set_dir(str(tmp_path))
    try:
        thread = threading.Thread(target=attempt, daemon=True)
        thread.start()
        thread.join(timeout=20)
    finally:
        torch.hub.set_dir(hub_dir)
    if not outcome:
        pytest.skip("the download attempt hangs (>20 s) instead of failing: network blackholed, not absent")
    (error,) = outcome
    assert isinstance(error, WeightsError)
    message = str(error)
    for needle in (str(tmp_path / "checkpoints" / CHECKPOINTS[model_name]), url, "--weights random"):
        assert needle in message
