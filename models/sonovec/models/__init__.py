"""Model backends for sonovec: EnCodec in PyTorch (and ONNX Runtime), and a tiny fake for tests."""

from sonovec.models.base import (
    Backend,
    BackendOptions,
    Encoded,
    ModelSpec,
    WeightsInfo,
    Window,
    plan_windows,
)
from sonovec.models.registry import MODEL_SPECS, load_backend

__all__ = [
    "MODEL_SPECS",
    "Backend",
    "BackendOptions",
    "Encoded",
    "ModelSpec",
    "WeightsInfo",
    "Window",
    "load_backend",
    "plan_windows",
]
