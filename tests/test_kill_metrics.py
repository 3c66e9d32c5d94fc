"""Follow-up tests for mutation survivors in evaluation/metrics.py, evaluation/report.py and training.py.

Each test names the mutants it kills; every kill was checked by applying the mutant by hand.
"""

import math

import numpy as np
import pytest
import torch

from corekd.config import TrainingConfig
from corekd.data.protocols import TrainingMissing
from corekd.evaluation.metrics import better, regression_metrics
from corekd.methods import method_class
from corekd.models.model import ERCModel, ModelConfig
from corekd.reporting.run import SELECTED_ON_TEST, with_test_selection_banner
from corekd.training import Trainer


# ---------------------------------------------------------------- regression_metrics by hand
def test_regression_sign_classes_at_the_zero_boundary():
    """A true score of 0.5 is non-negative; a predicted 0 is non-negative (acc2) but not positive (acc2_nz).

    Kills metrics.py:46 `y_true >= 1`, `y_pred > 0`, `y_pred >= 1`; metrics.py:47 `y_pred[nz] >= 0`.
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
    mutant of the truth side, metrics.py:47 `y_true[nz] >= 0`, is equivalent: nz excludes 0)."""
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
    """std(truth) = 1 exactly is not "constant": kills metrics.py:49 `y_true.std() == 1`."""
    y_true = np.array([-1.0, 1.0])  # population std 1
    m = regression_metrics(y_true, np.array([-0.5, 2.0]))
    assert m["corr"] == pytest.approx(1.0)  # two points: r = 1 when they rise together
    assert m["mae"] == pytest.approx((0.5 + 1.0) / 2)


def test_acc7_clips_both_sides_to_minus_three_three():
    """Scores beyond +-3 count as +-3 before rounding, on the truth side and on the prediction side.

    (-3.6 unclipped rounds to -4, clipped to -4 also rounds to -4; clipped to [-3, 3] it is -3.)
    Kills metrics.py:57 `np.clip(y_true, None, 3)`, `np.clip(y_true, -3, None)`, `np.clip(y_true, -4, 3)`,
    `np.clip(y_true, -3, 4)`, `np.clip(y_pred, None, 3)`, `np.clip(y_pred, -4, 3)`.
    """
    y_true = np.array([-3.6, 3.6, -3.0, 1.0])
    y_pred = np.array([-3.0, 3.0, -3.6, 1.2])
    m = regression_metrics(y_true, y_pred)
    assert m["acc7"] == 1.0  # -3/-3, 3/3, -3/-3, 1/1
    assert regression_metrics(np.array([3.6]), np.array([2.4]))["acc7"] == 0.0  # 3 vs 2


def test_better_breaks_no_ties():
    """An equal score does not beat the best so far, on either direction. Kills metrics.py:70 `score <= than` (MAE)
    and `score >= than` (every other metric)."""
    assert not better("mae", 0.5, 0.5) and better("mae", 0.4, 0.5) and not better("mae", 0.6, 0.5)
    assert not better("weighted_f1", 0.5, 0.5) and better("weighted_f1", 0.6, 0.5) and not better("acc2", 0.4, 0.5)


# ---------------------------------------------------------------- the test-selection banner
def test_banner_above_the_title_block_and_every_table_exactly():
    """Kills report.py:393 `previous = None`; :395 `or`, `startswith("XX|XX")`; :396 `"XXXX"`; :398
    `startswith("XX# XX")`; :399 `out = [...]`, `"XXXX"`."""
    text = "\n".join(["| a |", "| 1 |", "# Title", "prose", "", "| x | y |", "|---|---|", "| 1 | 2 |", "end"])
    got = with_test_selection_banner(text).split("\n")
    assert got == [
        SELECTED_ON_TEST, "", "| a |", "| 1 |",  # a table that opens the text: banner first
        "# Title", "", SELECTED_ON_TEST,  # under the title
        "prose", "",
        SELECTED_ON_TEST, "", "| x | y |", "|---|---|", "| 1 | 2 |",  # once per table, not per row
        "end",
    ]
    assert with_test_selection_banner("plain\ntext") == "plain\ntext"  # no table, no title: unchanged


# ---------------------------------------------------------------- the weight average
def _ema_trainer(ema):
    torch.manual_seed(0)
    model = ERCModel(ModelConfig(hidden=8, heads=1, dropout=0.0), {"l": 2}, 2)
    cls = method_class("no_kd")
    return Trainer(cls(cls.Options(), TrainingMissing()), model, TrainingConfig(ema=ema), seed=0,
                   device=torch.device("cpu"))


@pytest.mark.parametrize("steps_done,ema,decay", [
    (1, 0.99, 2 / 11),  # warm-up: (1 + s) / (10 + s) below the configured decay
    (3, 0.99, 4 / 13),
    (1000, 0.9, 0.9),  # late: the configured decay
])
def test_weight_average_update_by_hand(steps_done, ema, decay):
    """average <- decay * average + (1 - decay) * weights, decay = min(ema, (1 + s) / (10 + s)) after s steps.

    Kills training.py:151 `(1 + s) * (10 + s)`, `(1 - s)`, `(2 + s)`, `(10 - s)`, `(11 + s)`; :155 `1.0 + decay`,
    `2.0 - decay`."""
    trainer = _ema_trainer(ema)
    with torch.no_grad():
        for i, (p, a) in enumerate(zip(trainer.model.parameters(), trainer.ema_model.parameters())):
            p.fill_(1.0 + i)  # the current weights
            a.fill_(-1.0)  # the average so far
    trainer.steps_done = steps_done
    trainer._update_average()
    for i, a in enumerate(trainer.ema_model.parameters()):
        expected = decay * -1.0 + (1 - decay) * (1.0 + i)
        assert torch.allclose(a, torch.full_like(a, expected), atol=1e-6), (i, float(a.flatten()[0]), expected)
    assert math.isclose(min(ema, (1 + steps_done) / (10 + steps_done)), decay)
