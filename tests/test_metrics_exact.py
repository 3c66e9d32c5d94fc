"""``classification_metrics`` takes its averages from one per-class scikit-learn call: pin that they equal
scikit-learn's own ``accuracy_score`` / ``f1_score`` / ``recall_score`` exactly (not approximately), so that
records and tables do not move by a bit."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from corekd.evaluation.metrics import classification_metrics


def reference(y_true, y_pred, names):
    labels = list(range(len(names)))
    present = sorted(set(y_true.tolist()))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "uar": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class_f1": dict(zip(names, map(float, f1_score(y_true, y_pred, labels=labels, average=None,
                                                          zero_division=0)))),
    }


def cases():
    rng = np.random.default_rng(7)
    for i in range(60):
        c = int(rng.integers(2, 8))
        n = int(rng.integers(1, 200))
        y_true = rng.integers(0, c, n)
        if i % 3 == 0:  # some classes never true, never predicted, or a near-perfect model
            y_true = rng.choice(rng.choice(c, size=max(1, c // 2), replace=False), n)
        y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.integers(0, c, n))
        yield y_true, y_pred, [f"c{k}" for k in range(c)]
    yield np.array([2]), np.array([2]), ["a", "b", "c"]  # one utterance, right
    yield np.array([2]), np.array([0]), ["a", "b", "c"]  # one utterance, wrong
    yield np.array([1, 1, 1]), np.array([0, 0, 0]), ["a", "b"]  # the only true class never predicted


def test_equal_to_scikit_learns_own_averages_bit_for_bit():
    for y_true, y_pred, names in cases():
        assert classification_metrics(y_true, y_pred, names) == reference(y_true, y_pred, names)


def test_by_hand():
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c", "d"])
    # per class F1: a 2*1/(2+2) = 0.5, b 2*2/(3+2) = 0.8, c 0, d 0 (absent from both)
    assert m["per_class_f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0, "d": 0.0})
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 0) / 5)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)  # over the classes present in the truth
    assert m["uar"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


@pytest.mark.parametrize("y_true, y_pred", [([], []), ([0, 1], [0]), ([0, 3], [0, 1]), ([0, 1], [0, -1]),
                                            ([0, 1], [0, 3])])  # class 3 of 3: one past the end
def test_no_score_without_predictions_for_every_label_of_known_classes(y_true, y_pred):
    with pytest.raises(ValueError):
        classification_metrics(np.array(y_true, dtype=int), np.array(y_pred, dtype=int), ["a", "b", "c"])
