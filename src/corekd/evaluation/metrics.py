"""Classification metrics (scikit-learn): accuracy, weighted F1, macro F1, UAR, per-class F1."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score

METRICS = ("accuracy", "weighted_f1", "macro_f1", "uar")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Scores over all utterances; classes absent from both truth and prediction score 0 in per-class F1.

    UAR (unweighted average recall) = macro-averaged recall over the classes present in ``y_true``.
    """
    labels = list(range(len(label_names)))
    present = sorted(set(np.asarray(y_true).tolist()))
    per_class = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "uar": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class_f1": {name: float(v) for name, v in zip(label_names, per_class)},
    }
