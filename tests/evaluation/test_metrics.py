"""``classification_metrics`` takes its averages from the confusion counts: pin that they equal scikit-learn's own
``accuracy_score`` / ``f1_score`` / ``recall_score`` exactly (not approximately), so that records and tables do not
move by a bit. ``macro_f1`` / ``uar`` are scikit-learn's ``average="macro"`` with its default ``labels=None`` (the
labels in the truth OR the predictions); ``macro_f1_present`` / ``uar_present`` average over the truth's classes.
The regression metrics follow MMSA's ``metricsTop`` (MOSI/MOSEI): Acc-5 and Acc-7 clip then round."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from corekd.evaluation.metrics import (
    better,
    classification_metrics,
    regression_metrics,
    task_metrics,
)


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
        "per_class_f1": dict(
            zip(names, map(float, f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)))
        ),
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


@pytest.mark.parametrize(
    "y_true, y_pred", [([], []), ([0, 1], [0]), ([0, 3], [0, 1]), ([0, 1], [0, -1]), ([0, 1], [0, 3])]
)  # class 3 of 3: one past the end
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


# ---------------------------------------------------------------- absent classes, macro averages, regression edges
def test_classes_never_predicted_or_never_true_score_zero():
    """Hand-computed scores with a present class never predicted (b) and a class predicted but never true (c).

    This pins the values; it does NOT kill metrics.classification_metrics `zero_division=1`: scikit-learn >= 1.4
    computes F1 as 2TP / (2TP + FP + FN), so zero_division only enters for a class with
    TP + FP + FN = 0 (absent from both truth and prediction), which weighs 0 in weighted F1 and is
    left out of macro F1 and UAR (those average over the classes present in the truth or the predictions, as
    scikit-learn's labels=None; the *_present pair over the truth's classes, whose recall always has TP + FN > 0). The mutants are equivalent on valid inputs.

    y_true = a a a b b, y_pred = a a c a a (d never occurs):
      a: TP 2, FP 2, FN 1 -> F1 = 4 / (4 + 2 + 1) = 4/7, recall 2/3
      b: TP 0, FP 0, FN 2 -> F1 = 0, recall 0 (precision 0 under zero_division=0)
      c: TP 0, FP 1, FN 0 -> F1 = 0
      d: TP 0, FP 0, FN 0 -> F1 = 0 (zero_division)
    weighted F1 = (3 * 4/7 + 2 * 0) / 5 = 12/35; macro F1 over {a, b, c} = 4/21; UAR = (2/3 + 0 + 0) / 3 = 2/9;
    over the truth's {a, b}: 2/7 and 1/3.
    """
    m = classification_metrics(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 2, 0, 0]), ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["weighted_f1"] == pytest.approx(12 / 35)
    assert m["macro_f1"] == pytest.approx(4 / 21)
    assert m["uar"] == pytest.approx(2 / 9)
    assert m["macro_f1_present"] == pytest.approx(2 / 7)
    assert m["uar_present"] == pytest.approx(1 / 3)
    assert m["per_class_f1"] == pytest.approx({"a": 4 / 7, "b": 0.0, "c": 0.0, "d": 0.0})


def test_macro_scores_average_as_scikit_learn_and_the_present_pair_over_the_truths_classes():
    # class 2 is predicted but absent from the truth: it enters macro F1 and UAR with 0 (scikit-learn's
    # average="macro", labels=None), not macro_f1_present / uar_present
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]), ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0) / 3)  # a: P=1 R=1/2; b: 1; c: 0
    assert m["uar"] == pytest.approx((0.5 + 1.0 + 0) / 3)
    assert m["macro_f1_present"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["uar_present"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["weighted_f1"] == pytest.approx((2 / 3 + 1.0) / 2)


# ---------------------------------------------------------------- regression_metrics by hand
def test_regression_sign_classes_at_the_zero_boundary():
    """A true score of 0.5 is non-negative; a predicted 0 is non-negative (acc2) but not positive (acc2_nz).

    Kills metrics.regression_metrics `y_true >= 1`, `y_pred > 0`, `y_pred >= 1`, `y_pred[nz] >= 0`.
    """
    y_true = np.array([0.5, 2.0, -1.0, 1.0])
    y_pred = np.array([0.3, 0.0, -2.0, -0.5])
    m = regression_metrics(y_true, y_pred)
    # acc2: truth (>= 0) T T F T, prediction T T F F -> 3 of 4 right
    assert m["acc2"] == pytest.approx(0.75)
    # weighted F1 of (T T F T) vs (T T F F): class T: tp 2, fp 0, fn 1 -> 4/5; class F: tp 1, fp 1, fn 0 -> 2/3;
    # weights 3/4 and 1/4
    assert m["f1_2"] == pytest.approx(0.75 * 0.8 + 0.25 * 2 / 3)
    # acc2_nz (every truth non-zero): truth (> 0) T T F T, prediction (> 0) T F F F -> 2 of 4
    assert m["acc2_nz"] == pytest.approx(0.5)
    # class T: tp 1, fp 0, fn 2 -> 1/2; class F: tp 1, fp 2, fn 0 -> 1/2
    assert m["f1_2_nz"] == pytest.approx(0.5)


def test_acc2_nz_leaves_out_only_the_zero_truths():
    """Truth exactly 0 is left out of the non-zero scores; a non-zero truth is positive iff > 0 (so the `>= 0`
    mutant of the truth side, metrics.regression_metrics `y_true[nz] >= 0`, is equivalent: nz excludes 0)."""
    m = regression_metrics(np.array([0.0, 1.0, -1.0]), np.array([-3.0, 1.0, 1.0]))
    assert m["acc2_nz"] == pytest.approx(0.5)  # (1 -> 1) right, (-1 -> 1) wrong; the 0 truth is not counted
    assert m["acc2"] == pytest.approx(1 / 3)  # over all three: 0 >= 0 but -3 < 0; 1 right; -1 vs 1 wrong


def test_regression_metrics_with_every_truth_zero_are_undefined_on_the_non_zero_subset():
    """Nothing to score: None (null in JSON, n/a in reports), not a 0.0 that reads as a real score."""
    m = regression_metrics(np.zeros(3), np.array([0.5, -0.5, 0.0]))
    assert m["acc2_nz"] is None and m["f1_2_nz"] is None
    assert m["corr"] is None  # constant truth: r undefined
    assert m["acc2"] == pytest.approx(2 / 3)


def test_correlation_of_a_truth_with_unit_spread():
    """std(truth) = 1 exactly is not "constant": kills metrics.regression_metrics `y_true.std() == 1`."""
    y_true = np.array([-1.0, 1.0])  # population std 1
    m = regression_metrics(y_true, np.array([-0.5, 2.0]))
    assert m["corr"] == pytest.approx(1.0)  # two points: r = 1 when they rise together
    assert m["mae"] == pytest.approx((0.5 + 1.0) / 2)


def test_acc7_clips_both_sides_to_minus_three_three():
    """Scores beyond +-3 count as +-3 before rounding, on the truth side and on the prediction side.

    (-3.6 unclipped rounds to -4, clipped to -4 also rounds to -4; clipped to [-3, 3] it is -3.)
    Kills metrics.regression_metrics `np.clip(y_true, None, 3)`, `np.clip(y_true, -3, None)`, `np.clip(y_true, -4, 3)`,
    `np.clip(y_true, -3, 4)`, `np.clip(y_pred, None, 3)`, `np.clip(y_pred, -4, 3)`.
    """
    y_true = np.array([-3.6, 3.6, -3.0, 1.0])
    y_pred = np.array([-3.0, 3.0, -3.6, 1.2])
    m = regression_metrics(y_true, y_pred)
    assert m["acc7"] == 1.0  # -3/-3, 3/3, -3/-3, 1/1
    assert regression_metrics(np.array([3.6]), np.array([2.4]))["acc7"] == 0.0  # 3 vs 2


def test_better_breaks_no_ties():
    """An equal score does not beat the best so far, on either direction. Kills metrics.better `score <= than` (MAE)
    and `score >= than` (every other metric)."""
    assert not better("mae", 0.5, 0.5) and better("mae", 0.4, 0.5) and not better("mae", 0.6, 0.5)
    assert not better("weighted_f1", 0.5, 0.5) and better("weighted_f1", 0.6, 0.5) and not better("acc2", 0.4, 0.5)


NAMES = ["a", "b", "c", "d", "e"]


# class 0: tp 2 fp 2 fn 0 (P 1/2, R 1, F1 2/3); class 1: tp 1 fp 0 fn 2 (P 1, R 1/3, F1 1/2); class 2: F1 0, R 0;
# class 3 only predicted (F1 0); class 4 in neither (F1 0 by zero_division=0)
Y_TRUE = np.array([0, 0, 1, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 0, 0, 3])


# ---------------------------------------------------------------- classification_metrics and task_metrics by hand
def test_classification_metrics_by_hand():
    m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    assert set(m) == {"accuracy", "weighted_f1", "macro_f1", "uar", "macro_f1_present", "uar_present", "per_class_f1"}
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["weighted_f1"] == pytest.approx((2 * 2 / 3 + 3 * 1 / 2) / 6)  # supports 2, 3, 1
    # scikit-learn's labels=None: over the classes in the truth or the predictions (a, b, c, d)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0 + 0) / 4)
    assert m["uar"] == pytest.approx((1 + 1 / 3 + 0 + 0) / 4)
    assert m["macro_f1_present"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)  # over the classes in the truth only
    assert m["uar_present"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert m["per_class_f1"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 0.0, "d": 0.0, "e": 0.0})
    assert list(m["per_class_f1"]) == NAMES
    assert all(type(v) is float for k, v in m.items() if k != "per_class_f1")
    assert all(type(v) is float for v in m["per_class_f1"].values())


def test_classification_metrics_from_lists_and_a_perfect_prediction():
    m = classification_metrics([2, 2, 0], [2, 2, 0], ["x", "y", "z"])
    assert m["accuracy"] == m["weighted_f1"] == m["macro_f1"] == m["uar"] == 1.0
    assert m["per_class_f1"] == {"x": 1.0, "y": 0.0, "z": 1.0}


def test_task_metrics_dispatches_on_the_task():
    assert task_metrics(Y_TRUE, Y_PRED, NAMES, "classification") == classification_metrics(Y_TRUE, Y_PRED, NAMES)
    t, p = np.array([-1.0, 0.5, 2.0]), np.array([-0.5, -0.2, 2.5])
    assert task_metrics(t, p, [], "regression") == regression_metrics(t, p)
    assert task_metrics(t, p, [], "regression")["mae"] == pytest.approx((0.5 + 0.7 + 0.5) / 3)


def test_classification_metrics_scores_absent_classes_zero_without_warnings():
    """A class never predicted (c), only predicted (d) or in neither (e): zero_division=0, so sklearn stays silent."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(Y_TRUE, Y_PRED, NAMES)
    assert m["per_class_f1"]["e"] == 0.0 and m["per_class_f1"]["c"] == 0.0


REPORT_LABELS = ["a", "b", "c"]


def test_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, REPORT_LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=0.8; c: P=1 R=1/2 F=2/3
    assert m["per_class_f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports
    assert m["uar"] == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_absent_class_scores_zero_but_does_not_enter_uar():
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 0, 1]), REPORT_LABELS)
    assert m["per_class_f1"]["c"] == 0.0 and m["uar"] == 1.0 and m["macro_f1"] == 1.0
