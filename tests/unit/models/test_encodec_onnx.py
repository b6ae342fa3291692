"""The ONNX Runtime backend against the PyTorch fp32 backend, graph by graph, at many lengths.

Exports are slow (seconds per graph), so each model is exported once per session into a temporary
cache folder and shared. Measured numbers are printed (``pytest -s``). Also here: the reduced
precision modes of the torch backend against its fp32 (the issue's accuracy bar for every mode).
"""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from audiofiles import chord_batch

from sonovec.models import onnx_export, onnx_latents
from sonovec.models.base import Backend, BackendOptions, ModelSpec, plan_windows, tail_groups
from sonovec.models.encodec_onnx import OnnxBackend
from sonovec.models.encodec_torch import TorchBackend
from sonovec.models.reference import reference_latents
from sonovec.models.registry import get_spec, load_backend, resolve_kind
from sonovec.server.batcher import BatchKey
from sonovec.server.engine import EncodeIn, Engine

pytestmark = pytest.mark.model

SECONDS = {
    "encodec_48khz": (1.0, 0.01, 0.3, 0.77),  # the full window (batched), then tails
    "encodec_24khz": (0.5, 3.0, 10.0),  # 10 s: the fixed chunk graph; the others the dynamic one
}
LATENT_RTOL = 5e-5  # max |a - b| / max |b|
CODE_AGREEMENT = 0.99  # and every disagreement must be a near tie (see assert_only_near_ties)
TIE_RTOL = 1e-5  # of |x|^2 + |e|^2: fp32 rounding of the expanded distance |x|^2 - 2 x.e + |e|^2
SNR_DB = 60.0


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@functools.cache
def torch_backend(model: str) -> TorchBackend:
    return load_backend("torch", BackendOptions(model=model, weights="random"))  # type: ignore[return-value]


@pytest.fixture(scope="session")
def onnx_backends(cache_dir: Path) -> dict[str, OnnxBackend]:
    return {
        model: load_backend("onnx", BackendOptions(model=model, weights="random", cache_dir=str(cache_dir)))
        for model in SECONDS
    }  # type: ignore[return-value]


@pytest.fixture(params=list(SECONDS))
def pair(
    request: pytest.FixtureRequest, onnx_backends: dict[str, OnnxBackend]
) -> tuple[OnnxBackend, TorchBackend]:
    return onnx_backends[request.param], torch_backend(request.param)


def make_audio(spec: ModelSpec, seconds: float, batch: int, seed: int) -> np.ndarray:
    return chord_batch(seconds, spec.sample_rate, spec.channels, batch, seed)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def snr_db(got: np.ndarray, want: np.ndarray) -> float:
    return float(10 * np.log10((want**2).sum() / max(((got - want) ** 2).sum(), 1e-30)))


def assert_only_near_ties(reference: TorchBackend, latents: np.ndarray, got: np.ndarray,
                          want: np.ndarray) -> None:
    """Where two quantizers disagree, the first differing codebook's two codewords must be equally
    near in exact (float64) arithmetic, up to the rounding of fp32's expanded distance (random-init
    latents sit far from the origin, so that rounding is large next to the gap between codewords).
    Later codebooks quantize different residuals after such a flip and may differ freely."""
    layers = reference.model.quantizer.vq.layers
    for b, f in {(int(b), int(f)) for b, _, f in np.argwhere(got != want)}:
        k = int(np.argmax(got[b, :, f] != want[b, :, f]))
        residual = latents[b, :, f].astype(np.float64)
        for level in range(k):
            residual -= layers[level]._codebook.embed[want[b, level, f]].double().numpy()
        embed = layers[k]._codebook.embed.double().numpy()
        d_got, d_want = (float(((embed[c] - residual) ** 2).sum()) for c in (got[b, k, f], want[b, k, f]))
        scale = float((residual**2).sum() + (embed[want[b, k, f]] ** 2).sum())
        assert abs(d_got - d_want) <= TIE_RTOL * scale, (
            f"item {b} frame {f} codebook {k}: {got[b, k, f]} vs {want[b, k, f]} is no tie "
            f"(distances {d_got:.6g} vs {d_want:.6g})")


def pooled_cosine(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Per item cosine of the time-pooled latents ``[B, D, F]`` -> ``[B]``."""
    a, b = got.mean(-1), want.mean(-1)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --- the three graphs against PyTorch ------------------------------------------------------------


def test_is_a_backend(pair: tuple[OnnxBackend, TorchBackend]) -> None:
    onnx, reference = pair
    assert isinstance(onnx, Backend) and onnx.kind == "onnx" and onnx.device == "cpu"
    assert onnx.weights == reference.weights  # same seeded weights, same fingerprint


def test_encoder_matches_torch_at_many_lengths(pair: tuple[OnnxBackend, TorchBackend]) -> None:
    onnx, reference = pair
    spec = onnx.spec
    for seed, seconds in enumerate(SECONDS[spec.name]):
        batch = 3 if seconds == 1.0 else 1  # full windows run batched in the service
        audio = make_audio(spec, seconds, batch, seed)
        got, want = onnx.encode(audio), reference.encode(audio)
        frames = spec.num_frames(audio.shape[-1])
        assert got.latents.shape == want.latents.shape == (batch, spec.latent_dim, frames)
        assert got.latents.dtype == np.float32 and got.scales.shape == (batch,)
        error = relative_error(got.latents, want.latents)
        print(f"{spec.name} {seconds:g} s x{batch}: latents max relative error {error:.2e}")
        assert error < LATENT_RTOL
        np.testing.assert_allclose(got.scales, want.scales, rtol=1e-5)


def test_codes_and_decoded_audio_match_torch(pair: tuple[OnnxBackend, TorchBackend]) -> None:
    onnx, reference = pair
    spec = onnx.spec
    for seed, seconds in enumerate(SECONDS[spec.name][:3]):
        audio = make_audio(spec, seconds, 2, 10 + seed)
        encoded = reference.encode(audio)  # the same latents into both quantizers
        for bandwidth in spec.bandwidths:
            got = onnx.quantize(encoded.latents, bandwidth)
            want = reference.quantize(encoded.latents, bandwidth)
            assert got.shape == want.shape and got.dtype == np.int64
            agreement = float((got == want).mean())
            assert agreement >= CODE_AGREEMENT, f"{seconds} s, {bandwidth} kbps: {agreement:.5f}"
            assert_only_near_ties(reference, encoded.latents, got, want)
        decoded = onnx.decode(want, encoded.scales)
        snr = snr_db(decoded, reference.decode(want, encoded.scales))
        print(f"{spec.name} {seconds:g} s: codes agree at every bandwidth; decoded audio SNR {snr:.1f} dB")
        assert decoded.shape == (2, spec.channels, want.shape[-1] * spec.hop_length)
        assert snr > SNR_DB


def test_service_windows_equal_the_reference_file_path(onnx_backends: dict[str, OnnxBackend]) -> None:
    """A 48 kHz file cut by ``plan_windows``, full windows batched, tail alone, equals
    ``EncodecModel.encode`` of the file (the path the service takes)."""
    onnx = onnx_backends["encodec_48khz"]
    spec = onnx.spec
    wav = make_audio(spec, 2.6, 1, 5)[0]
    windows = plan_windows(spec, wav.shape[1])
    full = onnx.encode(np.stack([wav[:, w.fed] for w in windows[:-1]])).latents
    tail = onnx.encode(wav[None, :, windows[-1].fed]).latents
    got = np.concatenate([*full, tail[0]], axis=-1)
    want = reference_latents(torch_backend(spec.name).model, wav)
    assert got.shape == want.shape
    assert relative_error(got, want) < LATENT_RTOL


def test_parallel_workers_give_the_same_result(onnx_backends: dict[str, OnnxBackend]) -> None:
    many = onnx_backends["encodec_48khz"]
    one = OnnxBackend(many.spec, many.weights, many.directory, "cpu", ["CPUExecutionProvider"], workers=1)
    audio = make_audio(many.spec, 1.0, 5, 3)
    np.testing.assert_array_equal(one.encode(audio).latents, many.encode(audio).latents)
    one.close()


@pytest.mark.parametrize("model", list(SECONDS))
def test_mixed_lengths_in_one_call_equal_each_window_alone(onnx_backends: dict[str, OnnxBackend],
                                                           model: str) -> None:
    """``encode_windows``: fronts one window each, tails of 24 kHz windows right-padded together,
    each equal to the unmodified EncodecModel encoder on that window alone."""
    onnx = onnx_backends[model]
    spec = onnx.spec
    seconds = (1.0, 1.0, 0.01, 0.3, 0.77)
    if spec.causal:
        seconds = (0.02, 0.075, 0.09, 0.5, 3.0, 2.6, 10.0, 12.0)
    wavs = [make_audio(spec, s, 1, seed)[0] for seed, s in enumerate(seconds)]
    frames = [spec.num_frames(w.shape[-1]) for w in wavs]
    if spec.causal:
        assert len(tail_groups(spec, frames)) < len(set(frames))  # lengths really share padded calls
    reference = torch_backend(model)
    for wav, (latents, scale) in zip(wavs, onnx.encode_windows(wavs), strict=True):
        with torch.inference_mode():
            x = torch.from_numpy(wav[None])
            want_scale = torch.ones(())
            if spec.normalize:
                want_scale = 1e-8 + x.mean(1, keepdim=True).pow(2).mean(2, keepdim=True).sqrt()
            want = reference.model.encoder(x / want_scale)[0].numpy()
        assert latents.shape == want.shape
        assert relative_error(latents, want) < LATENT_RTOL
        assert scale == pytest.approx(float(want_scale), rel=1e-5)


def test_auto_is_onnx_on_the_cpu_and_torch_for_what_onnx_cannot_run(cache_dir: Path) -> None:
    options = BackendOptions(model="encodec_24khz", weights="random", device="cpu", cache_dir=str(cache_dir))
    assert resolve_kind("auto", options) == "onnx"
    assert load_backend("auto", options).kind == "onnx"  # reuses the session's export
    bf16 = BackendOptions(model="encodec_24khz", precision="bf16", device="cpu")
    assert resolve_kind("auto", bf16) == "torch"
    assert resolve_kind("auto", BackendOptions(model="encodec_24khz", device="cuda:0")) == "torch"
    assert resolve_kind("torch", options) == "torch"


# --- the export and its cache --------------------------------------------------------------------


def test_export_cache_is_reused(onnx_backends: dict[str, OnnxBackend], cache_dir: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    first = onnx_backends["encodec_48khz"]
    assert first.directory.parent == cache_dir / "onnx"
    assert first.weights.fingerprint in first.directory.name and ort.__version__ in first.directory.name
    graphs = sorted(p.stem for p in first.directory.glob("*.onnx"))
    assert graphs == sorted([*onnx_export.graph_names(first.spec), onnx_latents.GRAPH])  # + the lab's

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again instead of reusing the cache")

    monkeypatch.setattr(onnx_export, "export_graph", no_export)
    options = BackendOptions(model="encodec_48khz", weights="random", cache_dir=str(cache_dir))
    again = load_backend("onnx", options)
    assert again.directory == first.directory
    audio = make_audio(first.spec, 0.3, 1, 4)
    np.testing.assert_array_equal(again.encode(audio).latents, first.encode(audio).latents)


def test_cache_key_names_everything_the_graphs_depend_on() -> None:
    key = onnx_export.cache_key("random-0123abcd", "1.31.1")
    assert "random-0123abcd" in key and f"opset{onnx_export.OPSET}" in key and "ort1.31.1" in key
    assert key != onnx_export.cache_key("encodec_48khz-ffff", "1.31.1")
    assert key != onnx_export.cache_key("random-0123abcd", "1.32.0")
    assert "/" not in onnx_export.cache_key("a/b", "1")


def test_naive_export_bakes_the_length_in() -> None:
    """Why ``onnx_export`` exists: the plain export, declared with a dynamic time axis, silently
    returns the traced number of frames for any other length."""
    spec = get_spec("encodec_24khz")
    encoder = onnx_export.prepare(torch_backend(spec.name).model, spec).encoder
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(encoder, (torch.zeros(1, 1, 24_000),), buffer, dynamo=False, input_names=["audio"],
                          dynamic_axes={"audio": {0: "batch", 2: "samples"}})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    longer = np.zeros((1, 1, 48_000), np.float32)
    assert session.run(None, {"audio": longer})[0].shape[-1] == 75  # traced at 1 s: 75 frames
    assert spec.num_frames(longer.shape[-1]) == 150


# --- options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "bf16"}, "fp32 or int8"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_options_fail_before_exporting(options: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        load_backend("onnx", BackendOptions(model="encodec_24khz", weights="random", cache_dir=str(tmp_path),
                                            **options))
    assert not (tmp_path / "onnx").exists()


def test_cuda_without_the_gpu_provider_is_a_clear_error(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        load_backend("onnx", BackendOptions(model="encodec_24khz", weights="random", device="cuda",
                                            cache_dir=str(tmp_path)))


def test_cuda_provider_that_does_not_start(onnx_backends: dict[str, OnnxBackend], cache_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime-gpu on a machine whose CUDA does not start runs on the CPU: ``auto`` says so and
    runs the CPU configuration; an explicit ``cuda`` is an error, never a silent CPU run."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    options = {"model": "encodec_48khz", "weights": "random", "cache_dir": str(cache_dir)}
    backend = load_backend("onnx", BackendOptions(device="auto", **options))
    assert backend.device == "cpu" and backend.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="could not start its CUDA provider"):
        load_backend("onnx", BackendOptions(device="cuda", **options))


def test_invalid_inputs_are_clear(onnx_backends: dict[str, OnnxBackend]) -> None:
    onnx = onnx_backends["encodec_48khz"]
    with pytest.raises(ValueError, match="not one of"):
        onnx.quantize(np.zeros((1, 128, 3), np.float32), 5.0)
    with pytest.raises(ValueError, match=r"\[B, 2, T\]"):
        onnx.encode(np.zeros((1, 3, 960), np.float32))
    with pytest.raises(ValueError, match="codes must lie"):
        onnx.decode(np.full((1, 2, 2), 1024), np.ones(1, np.float32))


# --- reduced precision of the torch backend against its fp32 -------------------------------------


@pytest.mark.parametrize("model", list(SECONDS))
def test_torch_bf16_pooled_embeddings_close_to_fp32(model: str) -> None:
    fp32 = torch_backend(model)
    bf16 = TorchBackend(fp32.spec, fp32.model, fp32.weights, torch.device("cpu"), torch.bfloat16)
    audio = make_audio(fp32.spec, 1.0, 4, 21)
    cosine = pooled_cosine(bf16.encode(audio).latents, fp32.encode(audio).latents)
    print(f"{model} bf16 vs fp32: pooled cosine min {cosine.min():.6f}")
    assert cosine.min() >= 0.999


@pytest.mark.xfail(strict=True, reason="bf16 encoder latents differ ~1% from fp32 and flip RVQ codes: "
                   "measured 94-97% (48 kHz, 3 kbps) and 75-83% (24 kHz, 1.5 kbps), below the 99% bar; "
                   "hence the service quantizes fp32 latents (next test)")
@pytest.mark.parametrize("model", list(SECONDS))
def test_torch_bf16_codes_close_to_fp32(model: str) -> None:
    fp32 = torch_backend(model)
    bf16 = TorchBackend(fp32.spec, fp32.model, fp32.weights, torch.device("cpu"), torch.bfloat16)
    audio = make_audio(fp32.spec, 1.0, 4, 22)
    bandwidth = fp32.spec.bandwidths[0]
    agreement = float((bf16.quantize(bf16.encode(audio).latents, bandwidth)
                       == fp32.quantize(fp32.encode(audio).latents, bandwidth)).mean())
    print(f"{model} bf16 vs fp32 at {bandwidth:g} kbps: codes agree {agreement:.4f}")
    assert agreement >= 0.99


@pytest.mark.parametrize("model", list(SECONDS))
def test_torch_bf16_service_codes_equal_fp32(model: str) -> None:
    """The engine asks for fp32 latents whenever it quantizes: a bf16 service's codes are the fp32
    ones, at every bandwidth (its embeddings stay bf16: see the pooled-cosine test)."""
    fp32 = torch_backend(model)
    bf16 = TorchBackend(fp32.spec, fp32.model, fp32.weights, torch.device("cpu"), torch.bfloat16)
    items = [EncodeIn(window, 0) for window in make_audio(fp32.spec, 1.0, 3, 23)]
    for bandwidth in (fp32.spec.bandwidths[0], fp32.spec.bandwidths[-1]):
        key = BatchKey(model, "quantize", bandwidth)
        got = Engine({model: bf16})(key, items)
        want = Engine({model: fp32})(key, items)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g.codes, w.codes)  # type: ignore[attr-defined]
