"""The plain types of the collections API: what a collection is bound to, items, hits, results.

Transports (REST, gRPC) build these and read them back; nothing here touches FAISS or storage.
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from sonovec.server.errors import ErrorKind, SonovecError, invalid

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_ID_CHARS = 256
MAX_LABELS = 64
MAX_LABEL_CHARS = 128
MAX_METADATA_BYTES = 16 * 1024
MAX_K = 1000

IndexKind = Literal["flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")
WEIGHTINGS: tuple[str, ...] = ("uniform", "distance")


@dataclass(frozen=True)
class EmbeddingSpace:
    """Where a collection's vectors come from. Vectors of two different spaces never mix."""

    model: str
    weights_fingerprint: str
    pooling: str  # "mean" [D] or "mean_std" [2D]
    normalize: bool
    dim: int

    def describe(self) -> str:
        norm = "L2-normalised" if self.normalize else "unnormalised"
        return (f"{self.model} weights {self.weights_fingerprint}, pooling {self.pooling} "
                f"({norm}, {self.dim}-d)")

    def conflict(self, other: EmbeddingSpace, what: str) -> SonovecError:
        return SonovecError(
            ErrorKind.CONFLICT,
            f"{what} is in another embedding space: collection is [{self.describe()}], "
            f"{what} is [{other.describe()}]",
            field="space",
            allowed=f"vectors of [{self.describe()}]",
        )


@dataclass(frozen=True)
class SpaceClaim:
    """What a caller says about vectors it sends (all optional). Any stated part must match."""

    model: str | None = None
    weights_fingerprint: str | None = None
    pooling: str | None = None
    normalize: bool | None = None

    def check(self, space: EmbeddingSpace) -> None:
        stated = EmbeddingSpace(
            model=self.model or space.model,
            weights_fingerprint=self.weights_fingerprint or space.weights_fingerprint,
            pooling=self.pooling or space.pooling,
            normalize=space.normalize if self.normalize is None else self.normalize,
            dim=space.dim,
        )
        if stated != space:
            raise space.conflict(stated, "the vectors")


@dataclass(frozen=True)
class IndexSpec:
    """A collection's FAISS index. ``ef_search`` and ``nprobe`` are defaults; a search may pass
    its own (per call, never written into the shared index)."""

    kind: IndexKind = "flat"
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 64
    nlist: int = 256
    nprobe: int = 16

    def check(self) -> IndexSpec:
        if self.kind not in INDEX_KINDS:
            raise invalid(f"unknown index type {self.kind!r}", field="index.type",
                          allowed=", ".join(INDEX_KINDS))
        bounds = {"hnsw_m": (4, 128), "ef_construction": (8, 4096), "ef_search": (1, 4096),
                  "nlist": (1, 65536), "nprobe": (1, 65536)}
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise invalid(f"{name} = {value}", field=f"index.{name}", allowed=f"{low} to {high}")
        return self

    # The wire's names (REST IndexIn, gRPC IndexSpec) of the fields: one mapping for both.
    WIRE_NAMES = {"type": "kind", "m": "hnsw_m", "ef_construction": "ef_construction",
                  "ef_search": "ef_search", "nlist": "nlist", "nprobe": "nprobe"}

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> IndexSpec:
        """From wire names; absent fields keep their defaults (checked by ``check``)."""
        return cls(**{cls.WIRE_NAMES[name]: value for name, value in fields.items()})

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, ours) for name, ours in self.WIRE_NAMES.items()}

    @property
    def ivf_train_size(self) -> int:
        """IVF trains once the collection holds this many items (FAISS wants ~39 per list);
        until then it searches exactly."""
        return 39 * self.nlist


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    space: EmbeddingSpace
    index: IndexSpec
    description: str = ""
    created_at: float = field(default_factory=time.time)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)  # one incarnation of the name
    count: int = 0  # filled in by whoever reports it

    def to_json(self) -> str:
        body = asdict(self)
        body.pop("count")
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> CollectionInfo:
        body = json.loads(text)
        return cls(
            name=body["name"], space=EmbeddingSpace(**body["space"]), index=IndexSpec(**body["index"]),
            description=body.get("description", ""), created_at=body["created_at"], uid=body["uid"],
        )


@dataclass(frozen=True)
class NewItem:
    """An item to add or replace: a vector, or audio (embedded through the batcher)."""

    id: str
    vector: np.ndarray | None = None
    audio: Any = None  # core.AudioSource
    labels: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    id: str
    vector: np.ndarray  # [dim] float32, as added
    labels: tuple[str, ...]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Query:
    """Exactly one of: a vector, audio (a ``core.AudioSource``), or a stored item's id."""

    vector: np.ndarray | None = None
    audio: Any = None
    item_id: str | None = None
    space: SpaceClaim | None = None  # what the caller says about ``vector``

    def check(self) -> Query:
        given = [name for name, v in (("vector", self.vector), ("audio", self.audio), ("id", self.item_id))
                 if v is not None]
        if len(given) != 1:
            raise invalid(f"got {', '.join(given) or 'nothing'}", field="query",
                          allowed="exactly one of vector, audio, id")
        return self


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine similarity (inner product of L2-normalised vectors)
    labels: tuple[str, ...]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    collection: str
    space: EmbeddingSpace
    hits: list[Hit]
    exact: bool  # False when an approximate index (HNSW, trained IVF) answered


@dataclass(frozen=True)
class Classification:
    collection: str
    method: str  # "knn" or "probe"
    labels: list[tuple[str, float]]  # best first; scores sum to 1 over all labels
    neighbours: list[Hit] = field(default_factory=list)  # knn only
    probe: str | None = None
    probe_version: int | None = None


@dataclass(frozen=True)
class ProbeInfo:
    collection: str
    name: str
    version: int
    classes: list[str]
    num_items: int
    folds: int
    cv_accuracy: float
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted, in ``classes`` order
    c: float
    weights_fingerprint: str
    trained_at: float


# ---- validation shared by every entry point ----
#
# One rule for everything stored: what is accepted can be written, read back, served over both
# transports and replayed after a restart. Names become directories and URL path segments; ids,
# labels and metadata are stored as JSON and sent back as UTF-8.

NAME_RULE = "1-64 characters: letters, digits, '_', '.', '-' (not first)"
ID_RULE = (f"1 to {MAX_ID_CHARS} characters of valid Unicode: no control characters, no lone "
           "surrogates, no '.' or '..' path segments")
MAX_METADATA_DEPTH = 16
METADATA_RULE = (f"a JSON object of at most {MAX_METADATA_BYTES} bytes, nested at most {MAX_METADATA_DEPTH} "
                 "deep, strings of valid Unicode (no lone surrogates), finite numbers")


def _unservable_char(text: str, *, controls: bool = True) -> str | None:
    """The first character that cannot be stored and served back (a lone surrogate, or with
    ``controls`` a control or line/paragraph separator character), as a description; else None."""
    for position, char in enumerate(text):
        category = unicodedata.category(char)
        if category == "Cs":
            return f"a lone surrogate U+{ord(char):04X} at position {position}"
        if controls and (category == "Cc" or category in ("Zl", "Zp")):
            return f"a control character U+{ord(char):04X} at position {position}"
    return None


def check_name(name: str, field_name: str = "name") -> str:
    if not isinstance(name, str) or NAME_PATTERN.fullmatch(name) is None:
        raise invalid(f"bad name {name!r}", field=field_name, allowed=NAME_RULE)
    return name


def check_item_id(item_id: str, field_name: str = "id") -> str:
    """An id to store: ``ID_RULE``."""
    check_lookup_id(item_id, field_name)
    bad = _unservable_char(item_id)
    if bad is not None:
        raise invalid(f"id has {bad}", field=field_name, allowed=ID_RULE)
    if any(segment in (".", "..") for segment in item_id.split("/")):
        raise invalid(f"id {item_id!r} has a '.' or '..' path segment", field=field_name, allowed=ID_RULE)
    return item_id


def check_lookup_id(item_id: str, field_name: str = "id") -> str:
    """An id to look up or delete: only bounded, so that items stored before ``ID_RULE`` can
    still be removed."""
    if not isinstance(item_id, str) or not item_id or len(item_id) > MAX_ID_CHARS:
        size = len(item_id) if isinstance(item_id, str) else 0
        raise invalid(f"id of {size} characters", field=field_name, allowed=ID_RULE)
    return item_id


MAX_DESCRIPTION_CHARS = 1000


def check_description(text: str, field_name: str = "description") -> str:
    allowed = f"at most {MAX_DESCRIPTION_CHARS} characters of valid Unicode (no lone surrogates)"
    if not isinstance(text, str) or len(text) > MAX_DESCRIPTION_CHARS:
        raise invalid("description is too long or not a string", field=field_name, allowed=allowed)
    bad = _unservable_char(text, controls=False)
    if bad is not None:
        raise invalid(f"description has {bad}", field=field_name, allowed=allowed)
    return text


def check_labels(labels: tuple[str, ...] | list[str], field_name: str = "labels") -> tuple[str, ...]:
    allowed = (f"at most {MAX_LABELS} labels of 1 to {MAX_LABEL_CHARS} characters of valid Unicode "
               "(no control characters, no lone surrogates)")
    if len(labels) > MAX_LABELS:
        raise invalid(f"{len(labels)} labels", field=field_name, allowed=allowed)
    for i, label in enumerate(labels):
        if not isinstance(label, str) or not label or len(label) > MAX_LABEL_CHARS:
            raise invalid(f"label {i} is empty, too long or not a string", field=f"{field_name}[{i}]",
                          allowed=allowed)
        bad = _unservable_char(label)
        if bad is not None:
            raise invalid(f"label {i} has {bad}", field=f"{field_name}[{i}]", allowed=allowed)
    return tuple(dict.fromkeys(labels))  # unique, in order


def check_metadata(metadata: dict[str, Any], field_name: str = "metadata") -> dict[str, Any]:
    """``METADATA_RULE``, checked without recursion (a deep document cannot overflow the stack)."""
    if not isinstance(metadata, dict):
        raise invalid("metadata is not a JSON object", field=field_name, allowed=METADATA_RULE)
    problem = _metadata_problem(metadata)
    if problem is not None:
        raise invalid(f"metadata {problem}", field=field_name, allowed=METADATA_RULE)
    size = len(json.dumps(metadata, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise invalid(f"metadata of {size} bytes", field=field_name, allowed=METADATA_RULE)
    return metadata


def _metadata_problem(metadata: dict[str, Any]) -> str | None:
    """What makes ``metadata`` unstorable, or None. Walks it with an explicit stack."""
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_METADATA_BYTES:  # every JSON value takes at least one byte
            return f"has more than {MAX_METADATA_BYTES} values"
        if isinstance(value, dict | list):
            if depth > MAX_METADATA_DEPTH:
                return f"is nested more than {MAX_METADATA_DEPTH} deep"
            if isinstance(value, dict) and not all(isinstance(key, str) for key in value):
                return "has a key that is not a string"
            children = [*value, *value.values()] if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
            continue
        problem = _scalar_problem(value)
        if problem is not None:
            return problem
    return None


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, str):
        bad = _unservable_char(value, controls=False)
        return None if bad is None else f"has a string with {bad}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"has a non-finite number ({value})"
    if value is not None and not isinstance(value, bool | int | float):
        return f"has a value of type {type(value).__name__}, which is not JSON"
    return None


def check_vector(vector: np.ndarray, dim: int, field_name: str = "vector") -> np.ndarray:
    """A caller's vector as ``[dim]`` float32; finite and not all zeros."""
    array = np.asarray(vector, dtype=np.float32)
    if array.shape != (dim,):
        raise invalid(f"vector of shape {list(array.shape)}", field=field_name, allowed=f"{dim} numbers")
    if not np.all(np.isfinite(array)) or not math.isfinite(float(np.dot(array, array))) or not array.any():
        raise invalid("vector has non-finite values or is all zeros", field=field_name,
                      allowed="finite numbers, not all zero")
    return array


def check_k(k: int, field_name: str = "k") -> int:
    if not 1 <= k <= MAX_K:
        raise invalid(f"k = {k}", field=field_name, allowed=f"1 to {MAX_K}")
    return k
