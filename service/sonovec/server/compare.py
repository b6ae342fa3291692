"""``sonovec compare FOLDER``: a learned embedding against classic features on labelled recordings.

Labels come from the first folder level (``FOLDER/<label>/.../file.wav``). Every recording is
embedded by every chosen model through one runtime (the same batcher, pooling and cache as the
server), then, per model, on the pooled vectors:

- a linear probe (standardised features, logistic regression) under stratified k-fold, repeated
  with different shuffles: accuracy mean +- std over every fold of every repeat;
- kNN accuracy (cosine, k neighbours, leave-one-out), and the chance level (the largest class);
- the confusion matrix of the probe (out-of-fold predictions of the first repeat);
- a PCA map of the vectors coloured by label.

Written to OUTPUT: ``report.md`` (a table, the confusion matrices), ``report.png`` (maps and
confusion matrices side by side), ``report.json``; the table is printed too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sonovec.models.features import FEATURE_SPECS
from sonovec.server.core import AudioSource, EmbedOptions, Service
from sonovec.server.errors import SonovecError
from sonovec.server.extract import find_recordings
from sonovec.server.runtime import Runtime
from sonovec.server.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("encodec_48khz", "mfcc", "logmel", "chroma")


@dataclass(frozen=True)
class CompareOptions:
    folder: Path
    output: Path
    models: tuple[str, ...] = DEFAULT_MODELS
    pooling: str = "mean_std"
    folds: int = 5
    repeats: int = 3
    neighbours: int = 5
    seed: int = 0
    extensions: tuple[str, ...] = ("wav", "flac", "ogg", "mp3", "aiff", "aif")


@dataclass
class ModelScore:
    model: str
    pretrained: bool
    dim: int
    probe_mean: float
    probe_std: float
    knn: float
    confusion: np.ndarray  # [L, L] rows: true label, columns: predicted
    map_points: np.ndarray  # [N, 2] PCA


def labelled_recordings(folder: Path, extensions: Sequence[str]) -> tuple[list[Path], list[str]]:
    paths = [p for p in find_recordings(folder, tuple(extensions)).recordings if len(p.parts) > 1]
    return paths, [p.parts[0] for p in paths]


async def run_compare(settings: Settings, options: CompareOptions) -> int:
    if not options.folder.is_dir():
        raise SystemExit(f"sonovec compare: {options.folder} is not a folder")
    paths, labels = labelled_recordings(options.folder, options.extensions)
    classes = sorted(set(labels))
    if len(classes) < 2 or min(labels.count(c) for c in classes) < options.folds:
        raise SystemExit(
            f"sonovec compare: need >= 2 labels (first-level folders) with >= {options.folds} recordings "
            f"each; found {dict((c, labels.count(c)) for c in classes)}"
        )
    async with Runtime(settings, models=list(options.models)).running() as runtime:
        vectors = {m: await embed_all(runtime.service, m, options, paths) for m in options.models}
        pretrained = {m: runtime.service.model(m).pretrained for m in options.models}
    scores = [score(m, pretrained[m], vectors[m], labels, classes, options) for m in options.models]
    write_report(options, scores, classes, labels, len(paths))
    return 0


async def embed_all(service: Service, model: str, options: CompareOptions, paths: list[Path]) -> np.ndarray:
    embed = EmbedOptions(model=model, pooling=options.pooling, normalize=False)
    slots = asyncio.Semaphore(8)

    async def one(rel: Path) -> np.ndarray:
        async with slots:
            data = await asyncio.to_thread((options.folder / rel).read_bytes)
            try:
                return (await service.embed(AudioSource(data=data), embed)).vector
            except SonovecError as exc:
                raise SystemExit(f"sonovec compare: {rel}: {exc}") from None

    return np.stack(await asyncio.gather(*(one(p) for p in paths)))


def score(
    model: str,
    pretrained: bool,
    x: np.ndarray,
    labels: list[str],
    classes: list[str],
    options: CompareOptions,
) -> ModelScore:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    accuracies, first_predictions = [], np.empty(len(y), dtype=object)
    for repeat in range(options.repeats):
        folds = StratifiedKFold(options.folds, shuffle=True, random_state=options.seed + repeat)
        for train, test in folds.split(x, y):
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            predicted = probe.fit(x[train], y[train]).predict(x[test])
            accuracies.append(float(np.mean(predicted == y[test])))
            if repeat == 0:
                first_predictions[test] = predicted
    confusion = confusion_matrix(y, first_predictions.astype(str), labels=classes)
    points = PCA(n_components=2, random_state=options.seed).fit_transform(StandardScaler().fit_transform(x))
    return ModelScore(
        model,
        pretrained,
        x.shape[1],
        float(np.mean(accuracies)),
        float(np.std(accuracies)),
        knn_accuracy(x, y, options.neighbours),
        confusion,
        points,
    )


def knn_accuracy(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Leave-one-out majority vote of the ``k`` nearest by cosine (standardised vectors)."""
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)
    z = z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)
    similarity = z @ z.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    correct = 0
    for i, row in enumerate(nearest):
        values, counts = np.unique(y[row], return_counts=True)
        correct += int(values[np.argmax(counts)] == y[i])
    return correct / len(y)


def write_report(
    options: CompareOptions, scores: list[ModelScore], classes: list[str], labels: list[str], count: int
) -> None:
    options.output.mkdir(parents=True, exist_ok=True)
    chance = max(labels.count(c) for c in classes) / len(labels)
    lines = [
        f"# sonovec compare: {options.folder.name}",
        "",
        f"{count} recordings, {len(classes)} labels ({', '.join(classes)}); chance (largest class) "
        f"{100 * chance:.1f} %. Linear probe: stratified {options.folds}-fold x {options.repeats} repeats, "
        f"mean +- std; kNN: leave-one-out, k = {options.neighbours}, cosine; {options.pooling} pooling.",
        "",
        "| model | dim | weights | linear probe | kNN |",
        "|---|---:|---|---:|---:|",
    ]
    for s in scores:
        weights = "features" if s.model in FEATURE_SPECS else "trained" if s.pretrained else "RANDOM-INIT"
        lines.append(
            f"| {s.model} | {s.dim} | {weights} | {100 * s.probe_mean:.1f} +- {100 * s.probe_std:.1f} % "
            f"| {100 * s.knn:.1f} % |"
        )
    table = "\n".join(lines[4:])
    for s in scores:
        lines += [
            "",
            f"## {s.model}: confusion matrix (rows true, columns predicted)",
            "",
            "| | " + " | ".join(classes) + " |",
            "|---|" + "---:|" * len(classes),
        ]
        lines += [
            f"| {c} | " + " | ".join(str(int(v)) for v in row) + " |"
            for c, row in zip(classes, s.confusion, strict=True)
        ]
    lines += ["", "![maps and confusion matrices](report.png)", ""]
    (options.output / "report.md").write_text("\n".join(lines))
    (options.output / "report.png").write_bytes(report_png(scores, classes, labels))
    (options.output / "report.json").write_text(json.dumps(_json(scores, classes, chance, options), indent=2))
    print(table)
    print(f"chance: {100 * chance:.1f} %")
    print(options.output / "report.md")


def _json(
    scores: list[ModelScore], classes: list[str], chance: float, options: CompareOptions
) -> dict[str, Any]:
    return {
        "labels": classes,
        "chance": chance,
        "protocol": {
            "folds": options.folds,
            "repeats": options.repeats,
            "neighbours": options.neighbours,
            "pooling": options.pooling,
        },
        "models": [
            {
                "model": s.model,
                "dim": s.dim,
                "pretrained": s.pretrained,
                "probe_mean": s.probe_mean,
                "probe_std": s.probe_std,
                "knn": s.knn,
                "confusion": s.confusion.tolist(),
            }
            for s in scores
        ],
    }


def report_png(scores: list[ModelScore], classes: list[str], labels: list[str]) -> bytes:
    from sonovec.server.plots import _png, _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(2, len(scores), figsize=(4.2 * len(scores), 8), squeeze=False)
    colours = plt.get_cmap("tab10")
    markers = "os^Dvp*hX<>"
    y = np.asarray(labels)
    for col, s in enumerate(scores):
        ax = axes[0][col]
        for i, c in enumerate(classes):
            mask = y == c
            ax.scatter(
                s.map_points[mask, 0],
                s.map_points[mask, 1],
                s=12,
                label=c,
                color=colours(i % 10),
                marker=markers[(i // 10) % len(markers)],
            )
        ax.set_title(f"{s.model}: probe {100 * s.probe_mean:.0f} %, kNN {100 * s.knn:.0f} %", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax = axes[1][col]
        ax.imshow(s.confusion, cmap="Blues")
        half = s.confusion.max() / 2
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        for (r, c), v in np.ndenumerate(s.confusion):
            ax.text(
                c,
                r,
                str(int(v)),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > half else "black",
            )
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.suptitle("PCA maps (standardised vectors) and linear-probe confusion matrices")
    return _png(fig)
