"""Pictures of results: similarity matrices and maps of an embedding space (PNG bytes).

matplotlib is imported lazily, with the Agg backend, so the server pays for it only when asked.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def similarity_png(matrix: np.ndarray, starts_s: np.ndarray | None = None, title: str = "") -> bytes:
    """An [S, S] cosine-similarity matrix as a heat map; axes in seconds when the [S] segment starts
    are given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    extent = None
    if starts_s is not None and len(starts_s) > 1:
        step = float(starts_s[1] - starts_s[0])
        end = float(starts_s[-1]) + step
        extent = (float(starts_s[0]), end, end, float(starts_s[0]))
        ax.set_xlabel("time (s)")
        ax.set_ylabel("time (s)")
    image = ax.imshow(matrix, cmap="magma", vmin=-1.0, vmax=1.0, extent=extent, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_title(title or "self-similarity")
    return _png(fig)


def embedding_map_png(vectors: np.ndarray, labels: Sequence[str], title: str = "", seed: int = 0) -> bytes:
    """PCA and t-SNE of ``[N, D]`` vectors side by side, coloured by label."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    plt = _pyplot()
    pca = PCA(n_components=2, random_state=seed).fit(vectors)
    maps = {"PCA (%.0f%% of variance)" % (100 * pca.explained_variance_ratio_.sum()): pca.transform(vectors)}
    if len(vectors) >= 5:
        perplexity = float(min(30, max(2, (len(vectors) - 1) // 3)))
        maps["t-SNE"] = TSNE(
            n_components=2, perplexity=perplexity, random_state=seed, init="pca"
        ).fit_transform(vectors)
    fig, axes = plt.subplots(1, len(maps), figsize=(6 * len(maps), 5), squeeze=False)
    names = sorted(set(labels))
    colours = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for ax, (name, points) in zip(axes[0], maps.items(), strict=True):
        for i, label in enumerate(names):
            mask = np.asarray([lab == label for lab in labels])
            ax.scatter(points[mask, 0], points[mask, 1], s=14, color=colours(i % colours.N), label=label)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(names) <= 20:
        axes[0][-1].legend(loc="best", fontsize=8, markerscale=1.5)
    fig.suptitle(title or f"{len(vectors)} recordings, {len(names)} labels")
    return _png(fig)
