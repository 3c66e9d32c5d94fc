"""Metrics come from scikit-learn; the report's numbers are the mean ± std of the records."""

import numpy as np
import pytest

from corekd.evaluation.metrics import classification_metrics
from corekd.reporting.run import render_report
from corekd.reporting.tables import FIXED_AVG, mean_std_table, records_frame

LABELS = ["a", "b", "c"]


def test_metrics_by_hand():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class: a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=0.8; c: P=1 R=1/2 F=2/3
    assert m["per_class_f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports
    assert m["uar"] == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_absent_class_scores_zero_but_does_not_enter_uar():
    m = classification_metrics(np.array([0, 0, 1]), np.array([0, 0, 1]), LABELS)
    assert m["per_class_f1"]["c"] == 0.0 and m["uar"] == 1.0 and m["macro_f1"] == 1.0


def _records():
    rows = []
    for seed, base in ((0, 0.5), (1, 0.7)):
        for k, cond in enumerate(["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]):
            rows.append({"method": "m", "variant": "m", "seed": seed, "condition": cond,
                         "accuracy": base + 0.01 * k, "weighted_f1": base + 0.01 * k, "macro_f1": 0, "uar": 0,
                         "per_class_f1": {"a": 0.1}, "missing_rate": 0.0})
        for cond, value in (("complete", base + 0.2), ("random:0.5", base)):
            rows.append({"method": "m", "variant": "m", "seed": seed, "condition": cond, "accuracy": value,
                         "weighted_f1": value, "macro_f1": 0, "uar": 0, "per_class_f1": {"a": 0.1}, "missing_rate": 0.5})
    return rows


def test_fixed_average_is_per_seed_mean_of_six_then_mean_std_over_seeds():
    frame = records_frame(_records())
    table = mean_std_table(frame, "weighted_f1", [FIXED_AVG, "complete"])
    mean, std, n = table.loc["m", FIXED_AVG]
    # per seed: base + 0.025 -> 0.525 and 0.725; mean 0.625, sample std 0.1414
    assert mean == pytest.approx(0.625) and std == pytest.approx(np.std([0.525, 0.725], ddof=1)) and n == 2
    assert table.loc["m", "complete"][0] == pytest.approx(0.8)


def test_rendered_report_shows_the_figures():
    meta = {"corpus": "c", "seeds": [0, 1], "selection": "dev", "mask_seed": 0, "random_scheme": "calibrated",
            "splits": {"test": {"dialogues": 1, "utterances": 6}}, "command": "corekd run x"}
    text = render_report(meta, _records(), [])
    assert "| m | 60.00 ± 14.14 | 61.00 ± 14.14 |" in text  # fixed:l, fixed:a: mean of 0.5 and 0.7
    assert "62.50 ± 14.14" in text and "80.00 ± 14.14" in text  # Avg, complete
    assert "Re-run: `corekd run x`" in text


def test_one_modality_report_says_which_protocols_do_not_apply():
    """A text-only corpus (MELD text): no fixed subset exists and no random rate removes anything; the report says
    so in words that fit one modality, and keeps the three-modality wording for three."""
    from corekd.reporting.run import render_report

    def recs(conditions):
        return [{"method": "teacher", "variant": "teacher", "seed": s, "split": "test", "condition": c,
                 "weighted_f1": 0.5, "accuracy": 0.5, "missing_rate": 0.0, "n_utterances": 10} for s in (0, 1)
                for c in conditions]

    meta = {"corpus": "c", "seeds": [0, 1], "mask_seed": 0, "random_scheme": "calibrated", "status": "complete"}
    text = render_report({**meta, "modalities": ["l"]}, recs(["complete", "random:0.0"]), [])
    assert "The corpus has 1 modality: no fixed-subset condition applies" in text
    assert "With one modality nothing can go missing" in text
    assert "mean of the six" not in text and "With three modalities" not in text
    three = render_report({**meta, "modalities": ["l", "a", "v"]},
                          recs(["complete", "random:0.0", "fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv",
                                "fixed:av"]), [])
    assert "Avg is the mean of the six" in three and "With 3 modalities" in three and "at most 2/3" in three
