"""Maps of an embedding space: PCA-n then t-SNE with a chosen perplexity, and labels beyond 20 kept
distinct (colour and marker) with a legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sonovec.server import plots


def test_map_of_many_labels_has_distinct_markers_and_a_legend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    labels = [f"label{i:02d}" for i in range(25) for _ in range(4)]
    vectors = rng.standard_normal((100, 64)) + np.repeat(rng.standard_normal((25, 64)) * 3, 4, axis=0)
    seen: dict[str, object] = {}
    real_png = plots._png

    def keep(fig: object) -> bytes:
        axes = fig.axes  # type: ignore[attr-defined]
        handles, names = axes[-1].get_legend_handles_labels()
        seen["legend"] = axes[-1].get_legend() is not None and len(names) == 25
        seen["styles"] = {(tuple(h.get_facecolor()[0]), h.get_paths()[0].vertices.shape) for h in handles}
        seen["title"] = axes[-1].get_title()
        return real_png(fig)

    monkeypatch.setattr(plots, "_png", keep)
    png = plots.embedding_map_png(vectors, labels, pca_components=10, perplexity=7)
    (tmp_path / "map.png").write_bytes(png)
    assert png[:4] == b"\x89PNG" and seen["legend"]
    assert len(seen["styles"]) == 25  # type: ignore[arg-type]  # 10 colours x 3 markers: no two alike
    assert seen["title"] == "t-SNE of PCA-10 (perplexity 7)"


def test_unknown_map_method_is_refused() -> None:
    with pytest.raises(ValueError, match="tsne or umap"):
        plots.embedding_map_png(np.eye(8), ["a"] * 8, method="mds")
