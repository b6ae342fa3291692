"""The models sonovec serves, and the one place backends are built from options."""

from __future__ import annotations

from sonovec.models.base import Backend, BackendOptions, ModelSpec
from sonovec.models.features import FEATURE_SPECS

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

BACKEND_KINDS = ("torch", "onnx", "fake")


def get_spec(model: str) -> ModelSpec:
    try:
        return MODEL_SPECS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODEL_SPECS)}") from None


def load_backend(kind: str, options: BackendOptions) -> Backend:
    """Build the backend ``kind`` for ``options.model``. Heavy imports happen only here."""
    spec = get_spec(options.model)
    if spec.name in FEATURE_SPECS:  # librosa on the CPU, for every backend kind
        from sonovec.models.features import FeaturesBackend

        return FeaturesBackend(spec)
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
