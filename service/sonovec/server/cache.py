"""Content-addressed embedding cache.

Key: sha256 over the canonical PCM digest, the model, its weights fingerprint and the pipeline
version. Value: the ``[2D]`` float32 mean+std statistics of the recording's latent frames, from
which every pooling option is derived. A cache failure is never a request failure: it is counted
and bypassed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Protocol

import numpy as np

from sonovec.server.metrics import Metrics

PIPELINE_VERSION = "1"  # bump when windowing, pooling or ingestion changes what a key maps to


def cache_key(digest: str, model: str, fingerprint: str, precision: str) -> str:
    """Names one recording's statistics under one model, weights and precision (bf16 latents differ
    from fp32 ones by ~1 %: a replica running fp32 must not serve a bf16 replica's vectors)."""
    text = f"sonovec/v{PIPELINE_VERSION}|{model}|{fingerprint}|{precision}|{digest}"
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCache(Protocol):
    name: str

    async def get(self, key: str) -> np.ndarray | None: ...

    async def put(self, key: str, value: np.ndarray) -> None: ...

    async def close(self) -> None: ...


class LruCache:
    """Bounded in-process LRU; the embedded default."""

    name = "memory"

    def __init__(self, max_entries: int, metrics: Metrics) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._metrics = metrics

    async def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            payload = self._items.get(key)
            if payload is not None:
                self._items.move_to_end(key)
        self._metrics.cache.labels(self.name, "hit" if payload is not None else "miss").inc()
        if payload is None:
            return None
        self._metrics.cache_bytes.labels(self.name, "read").inc(len(payload))
        return np.frombuffer(payload, dtype=np.float32).copy()

    async def put(self, key: str, value: np.ndarray) -> None:
        if self.max_entries == 0:
            return
        payload = value.astype(np.float32).tobytes()
        with self._lock:
            self._items[key] = payload
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        self._metrics.cache_bytes.labels(self.name, "write").inc(len(payload))

    async def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._items)
