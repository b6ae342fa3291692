"""Named vector collections (FAISS), kNN classification and linear probes.

``Collections`` (built by the runtime: ``runtime.collections``) is the API; the types it takes
and returns are in ``spec``. See docs/collections.md for the design, its guarantees and its limits.
"""

from sonovec.server.collections.manager import Collections, Embedder, Store, store_for
from sonovec.server.collections.spec import (
    Classification,
    CollectionInfo,
    EmbeddingSpace,
    Hit,
    IndexSpec,
    Item,
    NewItem,
    ProbeInfo,
    Query,
    SearchResult,
    SpaceClaim,
)

__all__ = [
    "Classification",
    "CollectionInfo",
    "Collections",
    "Embedder",
    "EmbeddingSpace",
    "Hit",
    "IndexSpec",
    "Item",
    "NewItem",
    "ProbeInfo",
    "Query",
    "SearchResult",
    "SpaceClaim",
    "Store",
    "store_for",
]
