"""Import ``encodec`` where torchaudio is missing or broken.

``encodec`` imports torchaudio at import time (``encodec/utils.py``, ``encodec/msstftd.py``) but uses it
only for file I/O, resampling and the training discriminator; sonovec calls none of those. The PyPI
torchaudio wheel does not load against the CPU torch we pin, so where ``import torchaudio`` fails we
register a stand-in module that raises a clear error if anything ever touches it. A torchaudio that
imports is always used as is.
"""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import types

logger = logging.getLogger(__name__)

STUB_MARKER = "__sonovec_stub__"


def _unavailable(name: str) -> object:
    # Dunder lookups (``__file__``, ``__path__``, ...) must stay AttributeError so that hasattr(),
    # inspect and the import system treat the stand-in as an ordinary module without that attribute.
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    raise RuntimeError(
        f"torchaudio is unavailable (torchaudio.{name} was requested): sonovec registered a stand-in "
        "because `import torchaudio` failed. sonovec never needs torchaudio; encodec only uses it for "
        "file I/O and resampling helpers that sonovec does not call."
    )


def _stand_in() -> types.ModuleType:
    module = types.ModuleType("torchaudio", "Stand-in for a missing or broken torchaudio (see sonovec).")
    module.__getattr__ = _unavailable  # type: ignore[method-assign]  # PEP 562 module __getattr__
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None, origin="sonovec stand-in")
    setattr(module, STUB_MARKER, True)
    return module


def is_stand_in(module: object) -> bool:
    return bool(getattr(module, STUB_MARKER, False))


def ensure_torchaudio() -> types.ModuleType:
    """Return the importable torchaudio, or register and return the stand-in."""
    existing = sys.modules.get("torchaudio")
    if existing is not None:
        return existing
    try:
        import torchaudio
    except Exception as error:  # ImportError, OSError from a bad shared library, RuntimeError...
        stand_in = _stand_in()
        sys.modules["torchaudio"] = stand_in
        logger.debug("torchaudio does not import (%r); registered a stand-in", error)
        return stand_in
    return torchaudio


def import_encodec() -> types.ModuleType:
    """``import encodec``, with torchaudio replaced by a stand-in if it does not import."""
    ensure_torchaudio()
    import encodec

    return encodec
