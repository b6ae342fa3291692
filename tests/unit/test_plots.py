"""The pictures: a typical self-similarity matrix (cosines of 0.95-1.0) must not be one flat colour."""

from __future__ import annotations

import numpy as np
import pytest

from sonovec.server import plots


def typical_matrix(size: int = 16, seed: int = 0) -> np.ndarray:
    """[S, S] cosines of one recording's segments: all between 0.95 and 1, two sections, diagonal 1."""
    rng = np.random.default_rng(seed)
    section = np.arange(size) >= size // 2
    matrix = np.where(section[:, None] == section[None, :], 0.99, 0.955) + rng.uniform(0, 0.008, (size, size))
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    return matrix


def test_the_colour_scale_spans_the_off_diagonal_values() -> None:
    matrix = typical_matrix()
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    assert plots.colour_range(matrix) == (pytest.approx(off.min()), pytest.approx(off.max()))
    assert plots.colour_range(np.ones((3, 3))) == (pytest.approx(0.999), pytest.approx(1.001))
    assert plots.colour_range(np.ones((1, 1)))[0] < 1.0 < plots.colour_range(np.ones((1, 1)))[1]


def test_a_typical_matrix_gets_many_colours_and_the_bar_says_how_it_is_scaled() -> None:
    matrix = typical_matrix()
    fig = plots.similarity_figure(matrix, np.arange(16.0), "t")
    image = fig.axes[0].images[0]
    colours = {tuple(c) for c in image.to_rgba(matrix, bytes=True).reshape(-1, 4)}
    assert len(colours) > 30  # 59 here; on a fixed -1..1 scale these 0.95-1.0 values take 4
    colour_bar = fig.axes[1]
    assert "colours span this matrix" in colour_bar.get_ylabel()
    low, high = image.get_clim()
    assert 0.95 < low < 0.96 and 0.99 < high < 1.0


def test_the_png_is_a_png() -> None:
    png = plots.similarity_png(typical_matrix(), np.arange(16.0))
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
