"""``sonovec map --html DIR``: an extract folder's map as one self-contained HTML file.

The same map as the explorer page (PCA to 50 dims then t-SNE, seed 0; SVG scatter coloured by
label, hover shows the path and the label), with plotly.js inlined from the installed ``plotly``
package: it opens offline, from a file, with nothing fetched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sonovec.server.collections.maps import MIN_NONLINEAR, MapOptions, Points, compute_map
from sonovec.server.http.explore import plotly_js
from sonovec.server.pooling import l2_normalize

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 0 }} #map {{ height: 94vh }}
.banner {{ background: #b00020; color: white; padding: 0.4em 1em; font-weight: bold }}</style>
<script>{plotly}</script></head>
<body>{banner}<div id="map"></div>
<script>
const data = {data};
const groups = {{}};
data.points.forEach((p) => {{ (groups[p.label] = groups[p.label] || []).push(p); }});
const traces = Object.keys(groups).sort().map((label) => ({{
  type: "scatter", mode: "markers", name: label, hoverinfo: "text",
  x: groups[label].map((p) => p.x), y: groups[label].map((p) => p.y),
  text: groups[label].map((p) => `<b>${{p.path}}</b><br>${{p.label}}`),
  marker: {{ size: 8, line: {{ width: 0.5, color: "#333" }} }},
}}));
Plotly.newPlot("map", traces, {{ title: {{ text: data.title }}, hovermode: "closest",
  xaxis: {{ zeroline: false }}, yaxis: {{ zeroline: false }} }}, {{ displaylogo: false, responsive: true }});
</script></body></html>
"""


def label_of(path: str, depth: int) -> str:
    parts = Path(path).parts
    return "/".join(parts[:depth]) if len(parts) > depth else "(top)"


def write_map_html(folder: Path, out: Path, label_depth: int) -> int:
    """Write ``out/map.html`` for the extract ``folder`` (embeddings.npy, paths.txt, model.json)."""
    vectors = np.load(folder / "embeddings.npy").astype(np.float32)
    paths = (folder / "paths.txt").read_text().split("\n")[: len(vectors)]
    labels = [label_of(p, label_depth) for p in paths]
    model = json.loads((folder / "model.json").read_text())
    points = Points(paths, [(lab,) for lab in labels], [{} for _ in paths], l2_normalize(vectors),
                    len(paths), 0)
    method = "tsne" if len(paths) >= MIN_NONLINEAR else "pca"
    result = compute_map(points, MapOptions(method=method, perplexity=30.0, seed=0, max_points=len(paths)))
    title = f"{len(paths)} recordings, {model['model']}, {model['pooling']} pooling, {method} (seed 0)"
    banner = "" if model["pretrained"] else (
        '<div class="banner">RANDOM-INIT WEIGHTS: this map carries little meaning.</div>'
    )
    data = {"title": title, "points": [
        {"path": p, "label": lab, "x": float(x), "y": float(y)}
        for p, lab, (x, y) in zip(paths, labels, result.coords.tolist(), strict=True)
    ]}
    out.mkdir(parents=True, exist_ok=True)
    page = _PAGE.format(title=title, plotly=plotly_js().decode(), banner=banner,
                        data=json.dumps(data).replace("</", "<\\/"))
    target = out / "map.html"
    target.write_text(page)
    print(target)
    return 0
