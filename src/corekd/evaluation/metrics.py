"""Classification metrics (accuracy, weighted F1, macro F1, UAR, per-class F1) and sentiment-regression metrics.

A metric that is undefined on the data (e.g. ``acc2_nz`` when every true score is 0, ``corr`` when one side is
constant) is ``None`` (``null`` in JSON, "n/a" in reports), never a number that reads as a real score.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

METRICS = ("accuracy", "weighted_f1", "macro_f1", "uar")
# Truth-only averages (over the classes present in y_true), kept beside scikit-learn's macro averages.
PRESENT_METRICS = ("macro_f1_present", "uar_present")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str]) -> dict:
    """Scores over all utterances; classes absent from both truth and prediction score 0 in per-class F1.

    - ``macro_f1`` / ``uar``: scikit-learn's ``f1_score`` / ``recall_score`` with ``average="macro"`` and its
      default ``labels=None``: the unweighted mean over the labels present in ``y_true`` OR ``y_pred`` (a class
      only ever predicted, never true, enters with recall 0 and F1 0);
    - ``macro_f1_present`` / ``uar_present``: the same means over the classes present in ``y_true`` only
      (UAR as the speech-emotion literature often defines it).

    Computed from the confusion counts with scikit-learn's formulas and zero-division rule (0), because this
    runs for every dev epoch and every condition and scikit-learn's input checks cost about 5 ms a call;
    ``tests/evaluation/test_metrics.py`` pins every value to scikit-learn's ``accuracy_score`` / ``f1_score`` /
    ``recall_score``, bit for bit.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    c = len(label_names)
    if len(y_true) != len(y_pred) or not len(y_true):
        raise ValueError(
            f"need as many predictions as labels, at least one ({len(y_true)} labels, {len(y_pred)} predictions)"
        )
    if min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= c:
        raise ValueError(f"labels and predictions must be class indices in [0, {c})")
    counts = np.bincount(y_true * c + y_pred, minlength=c * c).reshape(c, c)  # [C true, C predicted]
    tp = np.diagonal(counts)  # [C]
    support, predicted = counts.sum(1), counts.sum(0)  # [C] true and predicted per class
    recall = _divide(tp, support)
    per_class = _divide(2.0 * tp, support + predicted)  # F1 = 2 tp / (true + predicted)
    present = support > 0
    seen = present | (predicted > 0)  # scikit-learn's labels=None: unique_labels(y_true, y_pred)
    return {
        "accuracy": float(np.mean(y_true == y_pred)),
        "weighted_f1": float(np.average(per_class, weights=support)),
        "macro_f1": float(np.mean(per_class[seen])),
        "uar": float(np.mean(recall[seen])),
        "macro_f1_present": float(np.mean(per_class[present])),
        "uar_present": float(np.mean(recall[present])),
        "per_class_f1": {name: float(v) for name, v in zip(label_names, per_class)},
    }


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise ``numerator / denominator``, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    safe = np.where(denominator == 0, 1, denominator)
    return np.where(denominator == 0, 0.0, numerator / safe)


# Regression (sentiment in [-3, 3]), with MMSA's conventions for MOSI/MOSEI.
REGRESSION_METRICS = ("mae", "corr", "acc2", "f1_2", "acc2_nz", "f1_2_nz", "acc5", "acc7")
PLAIN_METRICS = frozenset({"mae", "corr"})  # shown as they are in tables; every other metric in percent
LOWER_IS_BETTER = frozenset({"mae"})


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Sentiment scores as the field reports them (MMSA's ``metricsTop`` conventions for MOSI/MOSEI).

    - ``acc2``/``f1_2``: negative (< 0) vs non-negative (>= 0), over all utterances;
    - ``acc2_nz``/``f1_2_nz``: negative vs positive over the utterances whose true score is not 0
      (``None`` when every true score is 0: there is nothing to score);
    - F1s are weighted over the two classes;
    - ``acc5`` / ``acc7``: both scores clipped to [-2, 2] / [-3, 3] and rounded to the nearest integer
      (numpy's round-half-to-even, as MMSA), 5 / 7 classes;
    - ``mae``: mean absolute error; ``corr``: Pearson r (``None`` when either side is constant, where r is undefined).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    nz = y_true != 0
    t2, p2 = y_true >= 0, y_pred >= 0
    tnz, pnz = y_true[nz] > 0, y_pred[nz] > 0
    has_nz = bool(nz.any())
    constant = y_true.std() == 0 or y_pred.std() == 0
    return {
        "mae": float(np.abs(y_true - y_pred).mean()),
        "corr": None if constant else float(np.corrcoef(y_true, y_pred)[0, 1]),
        "acc2": float(accuracy_score(t2, p2)),
        "f1_2": float(f1_score(t2, p2, average="weighted", zero_division=0)),
        "acc2_nz": float(accuracy_score(tnz, pnz)) if has_nz else None,
        "f1_2_nz": float(f1_score(tnz, pnz, average="weighted", zero_division=0)) if has_nz else None,
        "acc5": _rounded_accuracy(y_true, y_pred, 2),
        "acc7": _rounded_accuracy(y_true, y_pred, 3),
    }


def _rounded_accuracy(y_true: np.ndarray, y_pred: np.ndarray, bound: int) -> float:
    """Share of utterances whose scores, clipped to [-bound, bound] and rounded, agree (2 * bound + 1 classes)."""
    return float(accuracy_score(np.round(np.clip(y_true, -bound, bound)), np.round(np.clip(y_pred, -bound, bound))))


def task_metrics(y_true: np.ndarray, y_pred: np.ndarray, label_names: list[str], task: str) -> dict:
    """The metrics of ``task``: :func:`classification_metrics` or :func:`regression_metrics` (one evaluation for both)."""
    if task == "regression":
        return regression_metrics(y_true, y_pred)
    return classification_metrics(y_true, y_pred, label_names)


def better(metric: str, score: float | None, than: float | None) -> bool:
    """Whether ``score`` beats ``than`` on ``metric`` (lower is better for MAE, higher for the rest).

    An undefined score (``None``) is the worst: it beats nothing, and every defined score beats it.
    """
    if score is None:
        return False
    if than is None:
        return True
    return score < than if metric in LOWER_IS_BETTER else score > than
