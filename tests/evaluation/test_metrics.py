"""``classification_metrics`` takes its averages from the confusion counts: pin that they equal scikit-learn's own
``accuracy_score`` / ``f1_score`` / ``recall_score`` exactly (not approximately), so that records and tables do not
move by a bit. ``macro_f1`` / ``uar`` are scikit-learn's ``average="macro"`` with its default ``labels=None`` (the
labels in the truth OR the predictions); ``macro_f1_present`` / ``uar_present`` average over the truth's classes.
The regression metrics follow MMSA's ``metricsTop`` (MOSI/MOSEI): Acc-5 and Acc-7 clip then round."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from corekd.evaluation.metrics import classification_metrics, regression_metrics


def reference(y_true, y_pred, names):
    labels = list(range(len(names)))
    present = sorted(set(y_true.tolist()))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "uar": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "macro_f1_present": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "uar_present": float(recall_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "per_class_f1": dict(zip(names, map(float, f1_score(y_true, y_pred, labels=labels, average=None,
                                                          zero_division=0)))),
    }


def cases():
    rng = np.random.default_rng(7)
    for i in range(300):
        c = int(rng.integers(2, 8))
        n = int(rng.integers(1, 200))
        y_true = rng.integers(0, c, n)
        if i % 3 == 0:  # some classes never true, never predicted, or a near-perfect model
            y_true = rng.choice(rng.choice(c, size=max(1, c // 2), replace=False), n)
        y_pred = np.where(rng.random(n) < rng.random(), y_true, rng.integers(0, c, n))
        if i % 5 == 1:  # predictions of classes the truth never holds
            y_pred = rng.integers(0, c, n)
        yield y_true, y_pred, [f"c{k}" for k in range(c)]
    yield np.array([2]), np.array([2]), ["a", "b", "c"]  # one utterance, right
    yield np.array([2]), np.array([0]), ["a", "b", "c"]  # one utterance, wrong
    yield np.array([1, 1, 1]), np.array([0, 0, 0]), ["a", "b"]  # the only true class never predicted


def test_equal_to_scikit_learns_own_averages_bit_for_bit():
    differ = 0
    for y_true, y_pred, names in cases():
        got = classification_metrics(y_true, y_pred, names)
        assert got == reference(y_true, y_pred, names)
        differ += got["macro_f1"] != got["macro_f1_present"]
    assert differ > 50  # the cases exercise classes predicted but never true, where the two averages part


def test_the_issues_case_equals_scikit_learn_default_macro():
    """y = [0,0,1,1], p = [0,2,1,1], 3 classes: scikit-learn 0.556 / 0.50 (class 2 only predicted enters with 0)."""
    y, p = np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1])
    m = classification_metrics(y, p, ["a", "b", "c"])
    assert m["macro_f1"] == f1_score(y, p, average="macro") == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["uar"] == recall_score(y, p, average="macro", zero_division=0) == pytest.approx(0.5)
    assert m["macro_f1_present"] == pytest.approx((2 / 3 + 1) / 2)  # the truth-only average: 0.833
    assert m["uar_present"] == pytest.approx(0.75)


def test_by_hand():
    m = classification_metrics(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0]), ["a", "b", "c", "d"])
    # per class F1: a 2*1/(2+2) = 0.5, b 2*2/(3+2) = 0.8, c 0, d 0 (absent from both)
    assert m["per_class_f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0, "d": 0.0})
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 2 * 0.8 + 0) / 5)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0) / 3)  # over a, b, c (d is in neither)
    assert m["uar"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


@pytest.mark.parametrize("y_true, y_pred", [([], []), ([0, 1], [0]), ([0, 3], [0, 1]), ([0, 1], [0, -1]),
                                            ([0, 1], [0, 3])])  # class 3 of 3: one past the end
def test_no_score_without_predictions_for_every_label_of_known_classes(y_true, y_pred):
    with pytest.raises(ValueError):
        classification_metrics(np.array(y_true, dtype=int), np.array(y_pred, dtype=int), ["a", "b", "c"])


def mmsa_multiclass_acc(y_pred, y_true):
    """MMSA's ``MetricsTop.__multiclass_acc``: rounded predictions equal to rounded truths."""
    return np.sum(np.round(y_pred) == np.round(y_true)) / float(len(y_true))


def test_acc5_and_acc7_equal_mmsas_clip_then_round():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        y_true = np.round(rng.uniform(-3, 3, n) * 3) / 3  # MOSI-like thirds, some exactly on .5 after scaling
        y_pred = rng.normal(0, 2, n)
        m = regression_metrics(y_true, y_pred)
        assert m["acc5"] == pytest.approx(mmsa_multiclass_acc(np.clip(y_pred, -2, 2), np.clip(y_true, -2, 2)))
        assert m["acc7"] == pytest.approx(mmsa_multiclass_acc(np.clip(y_pred, -3, 3), np.clip(y_true, -3, 3)))
    # by hand: 2.6 -> 2 (clipped), -2.4 -> -2, 0.5 -> 0 (half to even), 1.5 -> 2
    assert regression_metrics(np.array([2.0, -2.0, 0.0, 2.0]), np.array([2.6, -2.4, 0.5, 1.5]))["acc5"] == 1.0
    assert regression_metrics(np.array([3.0]), np.array([2.4]))["acc5"] == 1.0  # both clip to 2


def test_undefined_regression_metrics_are_none_never_zero():
    m = regression_metrics(np.zeros(4), np.array([0.5, -0.5, 0.0, 1.0]))  # every truth 0: no non-zero subset
    assert m["acc2_nz"] is None and m["f1_2_nz"] is None and m["corr"] is None
    assert m["acc2"] == pytest.approx(0.75) and m["acc5"] == pytest.approx(0.75)
    m = regression_metrics(np.array([-1.0, 1.0, 2.0]), np.full(3, 0.3))  # constant prediction: r undefined
    assert m["corr"] is None and m["acc2_nz"] == pytest.approx(2 / 3)
