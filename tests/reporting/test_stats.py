"""corekd.reporting.stats by hand: the paired difference and its one zero-variance rule, Holm, the curve AUC."""

import math

import pytest

from corekd.reporting.stats import (
    PairedDifference,
    curve_auc,
    format_difference,
    format_p,
    holm,
    paired_difference,
)


def test_paired_difference_by_hand():
    # differences 0.2, 0.1, 0.3: mean 0.2, sample std 0.1, t = 0.2 / (0.1 / sqrt 3) = 3.4641; two-sided, 2 df
    d = paired_difference({0: 0.7, 1: 0.6, 2: 0.8}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert d.n == 3
    assert d.mean == pytest.approx(0.2)
    assert d.std == pytest.approx(0.1)
    t = 0.2 / (0.1 / math.sqrt(3))
    assert d.p == pytest.approx(1 - t / math.sqrt(2 + t * t))  # the t distribution with 2 df, two-sided


def test_paired_difference_common_seeds_only():
    d = paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {1: 1.5, 2: 0.0})
    assert d == PairedDifference(0.5, None, 1, None)  # one common seed: no std, no p
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_differences_that_do_not_vary_have_no_p():
    # 0.9 - 1.0 and 1.0 - 1.1 differ in the last bits only: scipy alone would call this p ~ 4e-16
    d = paired_difference({0: 0.9, 1: 1.0}, {0: 1.0, 1: 1.1})
    assert d.p is None
    assert d.mean == pytest.approx(-0.1)
    assert d.std is not None and d.std < 1e-15
    exact = paired_difference({0: 0.5, 1: 0.7}, {0: 0.5, 1: 0.7})
    assert exact.p is None and exact.std == 0.0


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 over m = 3: 0.03, max(0.03, 0.04) = 0.04, max(0.04, 0.04) = 0.04
    assert holm([0.04, 0.01, None, 0.02]) == pytest.approx([0.04, 0.03, None, 0.04])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([None]) == [None]


def test_curve_auc_by_hand():
    # trapezoids over 0, 0.5, 1: (0.8 + 0.6) / 2 * 0.5 + (0.6 + 0.2) / 2 * 0.5 = 0.55, over a span of 1
    assert curve_auc([1.0, 0.0, 0.5], [0.2, 0.8, 0.6]) == pytest.approx(0.55)
    assert curve_auc([0.2, 0.4], [0.5, 0.7]) == pytest.approx(0.6)  # divided by the span 0.2
    with pytest.raises(ValueError, match="two distinct rates"):
        curve_auc([0.1, 0.1], [1.0, 2.0])


def test_formats():
    assert format_p(None) == "–"
    assert format_p(0.0004) == "4.0e-04"
    assert format_p(0.0123) == "0.012"
    assert format_difference(PairedDifference(0.0123, 0.004, 3, None), "weighted_f1") == "+1.23 ± 0.40 (n=3, p=n/a)"
    assert format_difference(PairedDifference(-0.5, None, 1, None), "mae") == "-0.500 (n=1, p=n/a)"
    assert format_difference(None, "mae") == "–"
