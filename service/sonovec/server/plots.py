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


def colour_range(matrix: np.ndarray) -> tuple[float, float]:
    """The colour scale of an [S, S] similarity matrix: its off-diagonal minimum and maximum.

    Embeddings of one recording are alike (a cosine of 0.95-1.0 is typical), so a fixed -1..1 scale
    paints them one colour; the diagonal (1 by definition) would set the top and is left out."""
    off_diagonal = matrix[~np.eye(len(matrix), dtype=bool)] if matrix.ndim == 2 else matrix.ravel()
    values = off_diagonal if off_diagonal.size else matrix.ravel()
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:  # all equal: a small band around the value, so the bar still has a scale
        low, high = low - 1e-3, high + 1e-3
    return low, high


def similarity_png(matrix: np.ndarray, starts_s: np.ndarray | None = None, title: str = "") -> bytes:
    """An [S, S] cosine-similarity matrix as a heat map, coloured over the matrix's own off-diagonal
    range (``colour_range``, said on the colour bar); axes in seconds when the [S] segment starts
    are given."""
    return _png(similarity_figure(matrix, starts_s, title))


def similarity_figure(matrix: np.ndarray, starts_s: np.ndarray | None = None, title: str = "") -> Figure:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    extent = None
    if starts_s is not None and len(starts_s) > 1:
        step = float(starts_s[1] - starts_s[0])
        end = float(starts_s[-1]) + step
        extent = (float(starts_s[0]), end, end, float(starts_s[0]))
        ax.set_xlabel("time (s)")
        ax.set_ylabel("time (s)")
    low, high = colour_range(matrix)
    image = ax.imshow(matrix, cmap="magma", vmin=low, vmax=high, extent=extent, interpolation="nearest")
    extend = "max" if float(matrix.max()) > high else "neither"  # the diagonal, above the scale
    fig.colorbar(
        image,
        ax=ax,
        extend=extend,
        label=f"cosine similarity (colours span this matrix: {low:.3f} to {high:.3f})",
    )
    ax.set_title(title or "self-similarity")
    return fig


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
