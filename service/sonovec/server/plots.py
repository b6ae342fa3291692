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


MARKERS = "os^Dvp*hX<>P8"


def embedding_map_png(
    vectors: np.ndarray,
    labels: Sequence[str],
    title: str = "",
    seed: int = 0,
    *,
    pca_components: int = 50,
    perplexity: float | None = None,
    method: str = "tsne",
) -> bytes:
    """PCA and a neighbour map of ``[N, D]`` vectors side by side, coloured by label.

    The neighbour map follows the MAESTRO study's protocol: PCA to ``pca_components`` first, then
    t-SNE (``perplexity``; default min(30, (N - 1) / 3)) or UMAP (``method="umap"``, needs the
    ``umap-learn`` package). Labels beyond 10 cycle colours *and* markers, so 20+ labels stay distinct;
    the legend is drawn beside the maps whatever the count (in columns beyond 25)."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    pca = PCA(n_components=2, random_state=seed).fit(vectors)
    maps = {"PCA (%.0f%% of variance)" % (100 * pca.explained_variance_ratio_.sum()): pca.transform(vectors)}
    if len(vectors) >= 5:
        name, points = _neighbour_map(vectors, seed, pca_components, perplexity, method)
        maps[name] = points
    fig, axes = plt.subplots(1, len(maps), figsize=(6 * len(maps), 5), squeeze=False)
    names = sorted(set(labels))
    colours = plt.get_cmap("tab10")
    for ax, (name, points) in zip(axes[0], maps.items(), strict=True):
        for i, label in enumerate(names):
            mask = np.asarray([lab == label for lab in labels])
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=14,
                color=colours(i % 10),
                marker=MARKERS[(i // 10) % len(MARKERS)],
                label=label,
            )
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    columns = 1 + len(names) // 25
    axes[0][-1].legend(
        loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, ncol=columns, markerscale=1.3
    )
    fig.suptitle(title or f"{len(vectors)} recordings, {len(names)} labels")
    return _png(fig)


def _neighbour_map(
    vectors: np.ndarray, seed: int, pca_components: int, perplexity: float | None, method: str
) -> tuple[str, np.ndarray]:
    from sklearn.decomposition import PCA

    components = max(2, min(pca_components, vectors.shape[1], len(vectors) - 1))
    reduced = PCA(n_components=components, random_state=seed).fit_transform(vectors)
    if method == "umap":
        import umap  # optional: pip install umap-learn

        return f"UMAP of PCA-{components}", umap.UMAP(random_state=seed).fit_transform(reduced)
    if method != "tsne":
        raise ValueError(f"unknown map method {method!r}: tsne or umap")
    from sklearn.manifold import TSNE

    chosen = perplexity if perplexity is not None else min(30.0, max(2.0, (len(vectors) - 1) / 3))
    chosen = float(min(chosen, len(vectors) - 1))
    points = TSNE(n_components=2, perplexity=chosen, random_state=seed, init="pca").fit_transform(reduced)
    return f"t-SNE of PCA-{components} (perplexity {chosen:g})", points


def matrix_png(
    values: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str, ranked: Sequence[int] = ()
) -> bytes:
    """A ``[R, C]`` table of values in [-1, 1] as a heat map (the latent lab's dimension x
    descriptor sensitivity), with the ``ranked`` rows listed beside it."""
    plt = _pyplot()
    height = min(24.0, 2.0 + 0.12 * len(rows))
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(columns), height))
    image = ax.imshow(values, cmap="coolwarm", vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(columns)), list(columns), rotation=45, ha="right")
    step = max(1, len(rows) // 40)
    ax.set_yticks(range(0, len(rows), step), list(rows)[::step], fontsize=7)
    ax.set_ylabel("latent dimension")
    fig.colorbar(image, ax=ax, label="effect (scaled per column)")
    if ranked:
        ax.set_title(f"{title}\nmost influential: {', '.join(map(str, ranked))}", fontsize=9)
    else:
        ax.set_title(title, fontsize=9)
    return _png(fig)


def space_statistics_png(
    std: np.ndarray, correlation: np.ndarray, explained: np.ndarray, title: str
) -> bytes:
    """Per-dimension std, the correlation matrix and PCA explained variance, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    axes[0].bar(range(len(std)), std, width=1.0)
    axes[0].set_xlabel("dimension")
    axes[0].set_ylabel("std over frames")
    image = axes[1].imshow(correlation, cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
    axes[1].set_title("correlation between dimensions")
    fig.colorbar(image, ax=axes[1])
    cumulative = np.cumsum(explained)
    axes[2].plot(np.arange(1, len(explained) + 1), cumulative, marker=".")
    axes[2].axhline(0.9, color="grey", linestyle=":")
    axes[2].set_xlabel("principal components")
    axes[2].set_ylabel("cumulative explained variance")
    axes[2].set_ylim(0, 1.02)
    fig.suptitle(title)
    return _png(fig)
