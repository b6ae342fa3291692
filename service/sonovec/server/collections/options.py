"""The options of collection requests: every default and bound, once.

REST schemas take their defaults from these types and gRPC fills absent fields from them; both
transports call ``check()`` through the core (``Collections``), so the same request is accepted
or refused, with the same error, over either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sonovec.server import pooling as pooling_ops
from sonovec.server.collections.spec import (
    MAX_K,
    WEIGHTINGS,
    IndexSpec,
    check_description,
    check_k,
    check_labels,
    check_name,
)
from sonovec.server.errors import invalid

EF_SEARCH_BOUNDS = (1, 4096)
NPROBE_BOUNDS = (1, 65536)
FOLDS_BOUNDS = (2, 20)
KEEP_AUDIO = ("none", "original", "codes")  # what a collection keeps of each recording, to play it
KEEP_AUDIO_MAX_BYTES = 64 * 1024 * 1024  # the highest per-recording cap a collection may set


def _check_between(name: str, value: int | None, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if value is not None and not low <= value <= high:
        raise invalid(f"{name} = {value}", field=name, allowed=f"{low} to {high}")


def _check_one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise invalid(f"unknown {name} {value!r}", field=name, allowed=", ".join(allowed))


@dataclass(frozen=True)
class CreateOptions:
    """A new collection: its model (None: the server's default), pooling, index, description;
    ``keep_audio``: keep each recording to play it ("original" bytes up to ``keep_audio_max_bytes``,
    or EnCodec "codes" at ``keep_audio_bandwidth`` kbps, played by decoding; "none": keep nothing)."""

    model: str | None = None
    pooling: str = "mean"
    normalize: bool = True
    index: IndexSpec = field(default_factory=IndexSpec)
    description: str = ""
    keep_audio: str = "none"
    keep_audio_max_bytes: int = 10 * 1024 * 1024
    keep_audio_bandwidth: float = 6.0

    def check(self) -> CreateOptions:
        _check_one_of("pooling", self.pooling, pooling_ops.POOLINGS)
        check_description(self.description)
        self.index.check()
        _check_one_of("keep_audio", self.keep_audio, KEEP_AUDIO)
        _check_between("keep_audio_max_bytes", self.keep_audio_max_bytes, (1, KEEP_AUDIO_MAX_BYTES))
        return self

    def audio_policy(self) -> dict[str, object]:
        """What the blob store records for the collection (the bandwidth is checked against the
        model when the collection is created)."""
        return {"keep_audio": self.keep_audio, "max_bytes": self.keep_audio_max_bytes,
                "bandwidth": self.keep_audio_bandwidth}


@dataclass(frozen=True)
class SearchOptions:
    """``k`` results; ``labels``: only items carrying any of them; ``ef_search`` (HNSW) and
    ``nprobe`` (IVF) for this search only (None: the collection's defaults)."""

    k: int = 10
    labels: tuple[str, ...] | None = None
    ef_search: int | None = None
    nprobe: int | None = None

    def check(self) -> SearchOptions:
        check_k(self.k)
        if self.labels is not None:
            check_labels(self.labels)
        _check_between("ef_search", self.ef_search, EF_SEARCH_BOUNDS)
        _check_between("nprobe", self.nprobe, NPROBE_BOUNDS)
        return self


@dataclass(frozen=True)
class ClassifyOptions:
    """kNN (a vote of the ``k`` nearest labelled items, ``uniform`` or ``distance`` weighting,
    ``classes`` only), or a trained ``probe`` (its ``version``, default the latest); ``top`` labels."""

    k: int = 10
    weighting: str = "distance"
    classes: tuple[str, ...] | None = None
    top: int = 5
    probe: str | None = None
    version: int | None = None

    def check(self) -> ClassifyOptions:
        check_k(self.k)
        _check_one_of("weighting", self.weighting, WEIGHTINGS)
        if self.classes is not None:
            check_labels(self.classes, "classes")
        _check_between("top", self.top, (1, MAX_K))
        if self.probe is not None:
            check_name(self.probe, "probe")
        _check_between("version", self.version, (1, 2**31 - 1))
        return self


@dataclass(frozen=True)
class ProbeOptions:
    """A logistic-regression probe on the labels in ``classes`` (default: all), inverse
    regularisation ``c``, cross-validated over ``folds`` folds."""

    classes: tuple[str, ...] | None = None
    c: float = 1.0
    folds: int = 5

    def check(self) -> ProbeOptions:
        if self.classes is not None:
            check_labels(self.classes, "classes")
        if not (math.isfinite(self.c) and self.c > 0):
            raise invalid(f"c = {self.c}", field="c", allowed="a finite number > 0")
        _check_between("folds", self.folds, FOLDS_BOUNDS)
        return self

