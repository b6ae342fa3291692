"""Classification over a labelled collection: a k-nearest-neighbour vote, and linear probes.

A probe is a scikit-learn ``StandardScaler`` + ``LogisticRegression`` trained on the items that
carry exactly one of the chosen classes. It is stored as plain numbers (scaler mean and scale,
coefficients, intercepts, classes) in JSON, not as a pickle: any replica and any later
scikit-learn version reads it back, and predicting is a few lines of numpy.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sonovec.server.collections.spec import Hit, ProbeInfo
from sonovec.server.errors import invalid

_EPS = 1e-6


def knn_vote(
    hits: Sequence[Hit], weighting: str, classes: Sequence[str] | None = None
) -> list[tuple[str, float]]:
    """Labels of ``hits`` (the k nearest neighbours) by vote, best first, scores summing to 1.

    ``uniform``: one vote per neighbour. ``distance``: a vote of 1 / (1 - cosine similarity),
    as scikit-learn's ``weights="distance"`` with the cosine distance. A neighbour with several
    labels votes for each."""
    wanted = None if classes is None else set(classes)
    votes: dict[str, float] = {}
    for hit in hits:
        weight = 1.0 if weighting == "uniform" else 1.0 / max(1.0 - hit.score, _EPS)
        for label in hit.labels:
            if wanted is None or label in wanted:
                votes[label] = votes.get(label, 0.0) + weight
    total = sum(votes.values())
    if total <= 0:
        return []
    return sorted(((label, vote / total) for label, vote in votes.items()), key=lambda lv: (-lv[1], lv[0]))


@dataclass(frozen=True)
class Probe:
    """A trained probe, as stored."""

    info: ProbeInfo
    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    coef: np.ndarray  # [C, D], or [1, D] for two classes
    intercept: np.ndarray  # [C] or [1]

    def predict(self, vector: np.ndarray) -> list[tuple[str, float]]:
        """Class probabilities for one ``[D]`` vector, best first."""
        z = self.coef @ ((vector - self.mean) / self.scale) + self.intercept
        if len(self.info.classes) == 2:
            p1 = 1.0 / (1.0 + np.exp(-z[0]))
            probs = np.array([1.0 - p1, p1])
        else:
            e = np.exp(z - z.max())
            probs = e / e.sum()
        pairs = zip(self.info.classes, probs.tolist(), strict=True)
        return sorted(pairs, key=lambda cp: (-cp[1], cp[0]))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.info), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Probe:
        arrays = {key: np.asarray(body[key], np.float64) for key in ("mean", "scale", "coef", "intercept")}
        info = ProbeInfo(**{key: value for key, value in body.items() if key not in arrays})
        return cls(info, **arrays)


def train_probe(
    vectors: np.ndarray,
    targets: list[str],
    *,
    collection: str,
    name: str,
    weights_fingerprint: str,
    c: float = 1.0,
    folds: int = 5,
) -> Probe:
    """Cross-validate (stratified, ``folds`` folds or fewer when a class is small), then fit
    on everything. ``vectors`` ``[N, D]``; ``targets`` one class per row. Version 0 until stored."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import confusion_matrix
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = Counter(targets)
    classes = sorted(counts)
    if len(classes) < 2 or min(counts.values()) < 2:
        raise invalid(
            f"classes and items per class: {dict(sorted(counts.items()))}", field="classes",
            allowed="at least 2 classes, each on at least 2 items that carry exactly one of the classes",
        )
    n_folds = min(folds, min(counts.values()))
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    y = np.array(targets)
    cv = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=0)
    predicted = cross_val_predict(pipeline, vectors, y, cv=cv)
    matrix = confusion_matrix(y, predicted, labels=classes)
    pipeline.fit(vectors, y)
    scaler, model = pipeline[0], pipeline[1]
    info = ProbeInfo(
        collection=collection, name=name, version=0, classes=[str(x) for x in model.classes_],
        num_items=len(targets), folds=n_folds, cv_accuracy=float(np.mean(predicted == y)),
        confusion_matrix=matrix.tolist(), c=c, weights_fingerprint=weights_fingerprint,
        trained_at=time.time(),
    )
    return Probe(info, scaler.mean_, scaler.scale_, model.coef_, model.intercept_)
