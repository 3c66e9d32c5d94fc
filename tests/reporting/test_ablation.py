"""Exact pins of the report's "Ablations" section: which variants it lists and the text it writes.

Tiny hand-made records frames; every expected figure is worked out by hand in the comments.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from corekd.reporting.blocks import render_markdown
from corekd.reporting.run import ablation_section, ablation_variants, render_report
from corekd.reporting.stats import PairedDifference, format_difference, paired_difference, per_seed
from corekd.reporting.tables import records_frame


def section_lines(frames, metric):
    """The Ablations section's Markdown, line by line (nothing when it has no block)."""
    blocks = ablation_section(frames, metric)
    return render_markdown(blocks).split("\n") if blocks else []


def _rows(method, variant, condition, values):
    """One row per seed (0, 1, ...) of ``values``; ``mae`` mirrors ``weighted_f1`` so either metric can be asked."""
    return [
        {"method": method, "variant": variant, "seed": s, "condition": condition, "weighted_f1": x, "mae": x}
        for s, x in enumerate(values)
    ]


def _test_frame() -> pd.DataFrame:
    rows = []
    rows += _rows("teacher", "teacher", "complete", [0.9, 0.9])
    rows += _rows("corekd", "corekd", "complete", [0.60, 0.70])
    rows += _rows("corekd", "corekd", "random:0.5", [0.5, 0.25])
    rows += _rows("corekd", "corekd", "fixed:avg", [0.40, 0.50])
    rows += _rows("corekd", "corekd", "fixed:l", [0.1, 0.1])  # not an ablation column
    rows += _rows("corekd", "wo_nce", "complete", [0.63, 0.71])
    rows += _rows("corekd", "wo_nce", "random:0.5", [0.5, 0.25])  # equal to the reference: differences 0, 0
    rows += _rows("corekd", "wo_nce", "fixed:avg", [0.45])  # seed 0 only
    rows += _rows("corekd", "wo_state", "complete", [0.55])  # seed 0 only
    rows += _rows("no_kd", "no_kd", "complete", [0.3, 0.3])  # another method: never an ablation variant
    return pd.DataFrame(rows)


def _reference_only_frame() -> pd.DataFrame:
    return pd.DataFrame(
        _rows("corekd", "corekd", "complete", [0.5, 0.6]) + _rows("teacher", "teacher", "complete", [0.7, 0.7])
    )


# complete: wo_nce - corekd = 0.03, 0.01 -> mean 0.02 (+2.00 pp), sample std sqrt(2 * 0.01^2) = 0.01414 (1.41 pp);
# t = 0.02 / (0.01414 / sqrt 2) = 2 with one degree of freedom: p = 1 - (2/pi) atan 2 = 0.2952 -> "0.295"
P_T2_DF1 = 1 - 2 / math.pi * math.atan(2)
PARAGRAPH = (
    "Each CoRe-KD variant minus full CoRe-KD (variant `corekd`) on the {SPLIT} split, {metric} {unit} ({better} is "
    "better): mean ± sample std of the per-seed paired differences, the number of seeds paired (n) and the p-value "
    "of a paired t-test over seeds (scipy.stats.ttest_rel; n/a with fewer than two seeds or differences that do not "
    "vary)."
)


def test_ablation_variants_are_the_corekd_variants_besides_the_reference_in_first_seen_order():
    assert ablation_variants(_test_frame()) == ["wo_nce", "wo_state"]
    frame = pd.DataFrame(
        _rows("corekd", "b", "complete", [0.1])
        + _rows("corekd", "corekd", "complete", [0.1])
        + _rows("corekd", "a", "complete", [0.1])
        + _rows("corekd", "b", "complete", [0.2])
    )
    assert ablation_variants(frame) == ["b", "a"]


def test_ablation_variants_empty_without_the_reference_or_records():
    assert ablation_variants(pd.DataFrame()) == []
    no_reference = pd.DataFrame(
        _rows("corekd", "wo_nce", "complete", [0.5]) + _rows("teacher", "teacher", "complete", [0.5])
    )
    assert ablation_variants(no_reference) == []
    assert ablation_variants(_reference_only_frame()) == []


def test_ablation_section_exact_text_in_percentage_points():
    assert f"{P_T2_DF1:.3g}" == "0.295"
    # dev first and without variants: it is skipped and the later split still reported
    parts = section_lines({"dev": _reference_only_frame(), "test": _test_frame()}, "weighted_f1")
    assert parts == [
        "## Ablations",
        "",
        "### Test split (weighted_f1)",
        "",
        PARAGRAPH.format(SPLIT="TEST", metric="weighted_f1", unit="in percentage points", better="higher"),
        "",
        "| variant | fixed Avg | random 0.5 | complete |",
        "|---|---|---|---|",
        # fixed Avg: one paired seed, 0.45 - 0.40; random 0.5: differences 0, 0 (no p: they do not vary);
        # wo_state: one seed 0.55 - 0.60, nothing under fixed Avg or random 0.5
        "| wo_nce | +5.00 (n=1, p=n/a) | +0.00 ± 0.00 (n=2, p=n/a) | +2.00 ± 1.41 (n=2, p=0.295) |",
        "| wo_state | – | – | -5.00 (n=1, p=n/a) |",
        "",
    ]


def test_ablation_section_plain_lower_is_better_metric_and_two_splits():
    val = pd.DataFrame(
        _rows("corekd", "corekd", "complete", [1.0, 1.5]) + _rows("corekd", "v", "complete", [1.25, 1.5])
    )
    parts = section_lines({"test": _test_frame(), "val": val}, "mae")
    assert parts.count("## Ablations") == 1 and parts[:3] == ["## Ablations", "", "### Test split (mae)"]
    assert parts[4] == PARAGRAPH.format(SPLIT="TEST", metric="mae", unit="as they are", better="lower")
    assert "| wo_nce | +0.050 (n=1, p=n/a) | +0.000 ± 0.000 (n=2, p=n/a) | +0.020 ± 0.014 (n=2, p=0.295) |" in parts
    # val: only the complete condition is present; differences 0.25, 0 -> mean 0.125, std 0.177, t = 1 -> p = 0.5
    assert parts[parts.index("### Val split (mae)") :] == [
        "### Val split (mae)",
        "",
        PARAGRAPH.format(SPLIT="VAL", metric="mae", unit="as they are", better="lower"),
        "",
        "| variant | complete |",
        "|---|---|",
        "| v | +0.125 ± 0.177 (n=2, p=0.5) |",
        "",
    ]


def test_ablation_section_empty_when_no_split_has_a_variant():
    assert section_lines({"test": _reference_only_frame(), "dev": pd.DataFrame()}, "weighted_f1") == []
    assert section_lines({}, "weighted_f1") == []


def test_paired_difference_by_hand():
    # candidate - reference per seed: 0.02, 0.04, 0.06 -> mean 0.04, sample std 0.02 (ddof=1)
    cand = {0: 0.52, 1: 0.54, 2: 0.56, 7: 0.9}  # seed 7 has no partner: left out
    ref = {0: 0.50, 1: 0.50, 2: 0.50}
    d = paired_difference(cand, ref)
    assert d.n == 3
    assert d.mean == pytest.approx(0.04)
    assert d.std == pytest.approx(0.02)
    # t = 0.04 / (0.02 / sqrt 3) = 2 sqrt 3, two-sided with 2 degrees of freedom
    assert d.p == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2))
    assert d.p == pytest.approx(stats.ttest_rel([0.52, 0.54, 0.56], [0.5, 0.5, 0.5]).pvalue)
    assert format_difference(d, "weighted_f1") == f"+4.00 ± 2.00 (n=3, p={d.p:.3g})"


def test_paired_difference_one_seed_and_none():
    d = paired_difference({0: 0.4}, {0: 0.5})
    assert d == PairedDifference(pytest.approx(-0.1), None, 1, None)
    assert format_difference(d, "weighted_f1") == "-10.00 (n=1, p=n/a)"
    assert format_difference(paired_difference({0: 1.2, 1: 1.0}, {0: 1.0, 1: 1.1}), "mae").startswith(
        "+0.050 ± 0.212 (n=2, p="
    )
    assert paired_difference({0: 0.4}, {1: 0.5}) is None
    assert format_difference(None, "weighted_f1") == "–"


def _records(variants: dict[str, list[float]], split: str = "test") -> list[dict]:
    """One complete-view record per (variant, seed); the value list gives weighted F1 per seed."""
    return [
        {
            "method": "teacher" if v == "teacher" else "corekd",
            "variant": v,
            "seed": s,
            "split": split,
            "condition": "complete",
            "weighted_f1": x,
            "accuracy": x,
            "missing_rate": 0.0,
            "n_utterances": 10,
            "per_class_f1": {"a": x},
        }
        for v, xs in variants.items()
        for s, x in enumerate(xs)
    ]


META = {"corpus": "c", "seeds": [0, 1, 2], "mask_seed": 0, "random_scheme": "calibrated", "status": "complete"}


def test_ablation_section_present_with_variants():
    records = _records({"teacher": [0.7, 0.7, 0.7], "corekd": [0.5, 0.5, 0.5], "wo_nce": [0.52, 0.54, 0.56]})
    records += _records({"corekd": [0.4, 0.4, 0.4], "wo_nce": [0.4, 0.3, 0.2]}, split="dev")
    text = render_report({**META, "methods": ["teacher", "corekd", "wo_nce"]}, records, [])
    assert "## Ablations" in text
    test_part = text.split("### Test split")[1].split("### Dev split")[0]
    p = stats.ttest_rel([0.52, 0.54, 0.56], [0.5, 0.5, 0.5]).pvalue
    assert f"| wo_nce | +4.00 ± 2.00 (n=3, p={p:.3g}) |" in test_part
    dev_part = text.split("### Dev split")[1]
    assert "| wo_nce | -10.00 ± 10.00 (n=3, p=" in dev_part


def test_ablation_section_absent_without_variants_or_reference():
    plain = _records({"teacher": [0.7, 0.7], "corekd": [0.5, 0.6]})
    base = render_report({**META, "seeds": [0, 1]}, plain, [])
    assert "Ablations" not in base
    # variants without the reference `corekd`: no table either
    no_ref = _records({"teacher": [0.7, 0.7], "wo_nce": [0.5, 0.6]})
    assert "Ablations" not in render_report({**META, "seeds": [0, 1]}, no_ref, [])
    assert records_frame(plain).shape[0] == 4


def test_paired_difference_without_variation_has_no_p_value():
    """Equal per-seed values: the differences do not vary, the t-test is undefined: p is None, not NaN, and prints
    as n/a. Kills stats.paired_difference `math.isnan(p) and False`."""
    d = paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert d == PairedDifference(0.0, 0.0, 2, None)
    assert format_difference(d, "mae") == "+0.000 ± 0.000 (n=2, p=n/a)"


def test_per_seed_of_a_metric_the_records_lack_is_empty():
    """Kills stats.per_seed `frame.empty and metric not in frame` (a KeyError on the missing column)."""
    frame = pd.DataFrame({"variant": ["corekd"], "condition": ["complete"], "seed": [0], "acc": [0.5]})
    assert per_seed(frame, "corekd", "complete", "wf1") == {}
    assert per_seed(frame, "corekd", "complete", "acc") == {0: 0.5}
