"""The missingness study's report section: matched-rate families, ranking flips, context gains (hand-made records)."""

from __future__ import annotations

import pytest

from corekd.reporting.blocks import Heading, Paragraph, Table
from corekd.reporting.realistic import (
    context_gains,
    family_scores,
    flipped_pairs,
    kendall_tau,
    matched_rates,
    nominal_rate,
    ranking,
    realistic_blocks,
)
from corekd.reporting.tables import FIXED_ORDER


def _records(scores: dict[str, dict[str, list[float]]]) -> list[dict]:
    """variant -> condition -> one score per seed (seeds 0, 1, 2)."""
    return [
        {"variant": v, "method": v, "seed": seed, "condition": c, "split": "test", "weighted_f1": x}
        for v, by_condition in scores.items()
        for c, values in by_condition.items()
        for seed, x in enumerate(values)
    ]


def _variant(standard: float, burst: float, random_: float = None, imbalanced: float = None) -> dict:
    """Every fixed subset and random:0.3 at ``standard`` (or random at ``random_``), plus burst and imbalanced."""
    rows = {c: [standard, standard + 0.01, standard - 0.01] for c in FIXED_ORDER}
    r = standard if random_ is None else random_
    rows["random:0.3"] = [r, r + 0.01, r - 0.01]
    rows["burst:0.3"] = [burst, burst + 0.012, burst - 0.008]
    i = standard if imbalanced is None else imbalanced
    rows["imbalanced:0.7,0.1,0.1"] = [i, i, i]
    rows["imbalanced:0.1,0.1,0.7"] = [i + 0.02, i + 0.02, i + 0.02]
    return rows


def test_nominal_rates_of_the_three_families():
    assert nominal_rate("imbalanced:0.1,0.1,0.7") == ("imbalanced", 0.3)
    assert nominal_rate("burst:0.5") == ("burst", 0.5)
    assert nominal_rate("random:0.3") == ("random", 0.3)
    assert nominal_rate("fixed:la") is None and nominal_rate("frames:0.3") is None
    assert nominal_rate("complete") is None and nominal_rate("burst:x") is None


def test_family_scores_average_a_family_s_conditions_per_seed_and_skip_incomplete_seeds():
    records = _records({"A": _variant(0.6, 0.5, imbalanced=0.4)})
    records = [r for r in records if not (r["seed"] == 2 and r["condition"] == "imbalanced:0.1,0.1,0.7")]
    scores = family_scores(records, "weighted_f1")
    assert scores[("imbalanced", 0.3)]["A"] == pytest.approx({0: 0.41, 1: 0.41})  # (0.4 + 0.42) / 2; seed 2 lacks one
    assert scores[("burst", 0.3)]["A"] == pytest.approx({0: 0.5, 1: 0.512, 2: 0.492})
    # standard: the six fixed subsets and random:0.3, all at the same per-seed score here
    assert scores[("standard", None)]["A"] == pytest.approx({0: 0.6, 1: 0.61, 2: 0.59})
    assert matched_rates(scores) == [0.3]


def test_a_reversed_pair_is_found_with_its_paired_difference_and_tau():
    scores = family_scores(
        _records({"A": _variant(0.7, 0.40), "B": _variant(0.6, 0.50), "C": _variant(0.5, 0.30)}), "weighted_f1"
    )
    standard = ranking(scores[("standard", None)], lower_is_better=False)
    burst = ranking(scores[("burst", 0.3)], lower_is_better=False)
    assert standard == ["A", "B", "C"] and burst == ["B", "A", "C"]
    # pairs (A,B) discordant, (A,C) and (B,C) concordant: tau = (2 - 1) / 3
    assert kendall_tau(standard, burst) == pytest.approx(1 / 3)
    flips = flipped_pairs(standard, scores[("burst", 0.3)], lower_is_better=False)
    assert [(a, b) for a, b, _ in flips] == [("A", "B")]
    assert flips[0][2].mean == pytest.approx(-0.10) and flips[0][2].n == 3
    # lower is better (MAE): the same numbers read the other way round flip the other pairs
    assert {(a, b) for a, b, _ in flipped_pairs(["C", "B", "A"], scores[("burst", 0.3)], True)} == {("B", "A")}


def test_context_gain_under_bursts_minus_under_random_drops():
    scores = family_scores(
        _records(
            {
                "corekd": _variant(0.7, 0.60, random_=0.65),
                "corekd_no_context": _variant(0.6, 0.45, random_=0.60),
            }
        ),
        "weighted_f1",
    )
    gains = context_gains(scores, 0.3)
    extra, burst_gain = gains["corekd"]
    assert burst_gain.mean == pytest.approx(0.15)  # 0.60 - 0.45 on every seed
    assert extra.mean == pytest.approx(0.10)  # 0.15 under bursts - 0.05 under random drops
    assert set(gains) == {"corekd"}  # the twin itself has no twin


def test_the_section_appears_only_with_a_realistic_family_at_a_random_rate():
    plain = _records({"A": {c: [0.5, 0.5, 0.5] for c in (*FIXED_ORDER, "random:0.3")}})
    assert realistic_blocks(plain, "weighted_f1", False, ["A"]) == []
    records = _records({"A": _variant(0.7, 0.40), "B": _variant(0.6, 0.50), "C": _variant(0.5, 0.30)})
    only_a = _records({"D": {"fixed:a": [0.4, 0.4, 0.4], "burst:0.3": [0.3, 0.3, 0.3]}})
    blocks = realistic_blocks(records + only_a, "weighted_f1", False, ["A", "B", "C", "D"])
    assert isinstance(blocks[0], Heading)
    assert any(isinstance(b, Paragraph) and "no standard score" in b.text and "`D`" in b.text for b in blocks)
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].headers[-3:] == ("random @ 0.3", "imbalanced @ 0.3", "burst @ 0.3")
    assert tables[0].rows[0][1] == "70.00 ± 1.00"
    tau_rows = {row[0]: row for row in tables[1].rows}
    assert tau_rows["burst @ 0.3"][1:3] == ("0.33", "1") and tau_rows["random @ 0.3"][1:3] == ("1.00", "0")
    assert tables[2].rows[0][:2] == ("burst @ 0.3", "`A` over `B`")
