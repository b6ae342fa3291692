"""The models sonovec serves, and the one place backends are built from options."""

from __future__ import annotations

import importlib.util
import logging

from sonovec.models.base import Backend, BackendOptions, ModelSpec
from sonovec.models.features import FEATURE_SPECS

logger = logging.getLogger(__name__)

HOP = 320  # both EnCodec encoders downsample by 8 * 5 * 4 * 2

MODEL_SPECS: dict[str, ModelSpec] = {
    "encodec_24khz": ModelSpec(
        name="encodec_24khz",
        sample_rate=24_000,
        channels=1,
        hop_length=HOP,
        latent_dim=128,
        bandwidths=(1.5, 3.0, 6.0, 12.0, 24.0),
        codebook_size=1024,
        window=10 * 24_000,  # chunk length for long files; 750 frames
        stride=10 * 24_000,
        context=2 * 24_000,  # left context per chunk; 150 frames, dropped
        causal=True,
        batch_seconds=64.0,  # 16 s held one or two chunks: 1.24x over by-length; 64 s: 1.9x (issue 11)
    ),
    "encodec_48khz": ModelSpec(
        name="encodec_48khz",
        sample_rate=48_000,
        channels=2,
        hop_length=HOP,
        latent_dim=128,
        bandwidths=(3.0, 6.0, 12.0, 24.0),
        codebook_size=1024,
        window=48_000,  # EncodecModel.segment = 1 s
        stride=47_520,  # EncodecModel.segment_stride = int((1 - 0.01) * 48000)
        normalize=True,
        segmented=True,
    ),
}

MODEL_SPECS.update(FEATURE_SPECS)  # log-mel, MFCC, chroma: baselines, whatever --backend says

BACKEND_KINDS = ("auto", "torch", "onnx", "fake")


def get_spec(model: str) -> ModelSpec:
    try:
        return MODEL_SPECS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODEL_SPECS)}") from None


def resolve_kind(kind: str, options: BackendOptions) -> str:
    """The runtime ``auto`` means for ``options``: ONNX Runtime on CPU, torch on CUDA.

    On CPU, ONNX Runtime runs EnCodec's encoder ~5x faster than PyTorch here (benchmarks/README.md);
    on CUDA, torch (cuDNN) is the tested path. ``--precision bf16`` on CPU needs torch (ONNX
    Runtime's CPU EP has no bf16 conv kernels); so does a machine without onnxruntime installed.
    """
    if kind != "auto":
        return kind
    device = options.device
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    if device != "cpu":
        return "torch"
    if importlib.util.find_spec("onnxruntime") is None:
        logger.warning("backend auto: onnxruntime is not installed, using torch "
                       "(pip install 'sonovec-models[onnx]')")
        return "torch"
    return "onnx" if options.precision in _onnx_precisions() else "torch"


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _onnx_precisions() -> tuple[str, ...]:
    from sonovec.models.encodec_onnx import PRECISIONS

    return PRECISIONS


def load_backend(kind: str, options: BackendOptions) -> Backend:
    """Build the backend ``kind`` for ``options.model`` (``auto``: see ``resolve_kind``).
    Heavy imports happen only here."""
    spec = get_spec(options.model)
    if spec.name in FEATURE_SPECS:  # librosa on the CPU, for every backend kind
        from sonovec.models.features import FeaturesBackend

        return FeaturesBackend(spec)
    if kind == "auto":
        kind = resolve_kind(kind, options)
        logger.info("backend auto: %s for %s on device %s", kind, spec.name, options.device)
    if kind == "fake":
        from sonovec.models.fake import FakeBackend

        return FakeBackend(spec, delay=float(options.extra.get("seconds_per_audio_second", 0.0)))
    if kind == "torch":
        from sonovec.models.encodec_torch import TorchBackend

        return TorchBackend.load(spec, options)
    if kind == "onnx":
        from sonovec.models.encodec_onnx import OnnxBackend

        return OnnxBackend.load(spec, options)
    raise ValueError(f"unknown backend {kind!r}; known: {', '.join(BACKEND_KINDS)}")
