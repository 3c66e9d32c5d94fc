"""The issue-32 report tables: condition order, per-protocol averages computed per seed (hand-computed), columns
named by modality, realised rates printed."""

from __future__ import annotations

import pytest

from corekd.reporting.blocks import Heading, Paragraph, Table
from corekd.reporting.missingness import imbalanced_header, missingness_blocks
from corekd.reporting.tables import TABLE_METRICS, condition_order, kind_average_frame, kind_columns, records_frame


def _rec(variant, seed, condition, f1, **extra):
    return {
        "method": variant,
        "variant": variant,
        "seed": seed,
        "split": "test",
        "condition": condition,
        "weighted_f1": f1,
        "accuracy": f1,
        **extra,
    }


IMB_A, IMB_B = "imbalanced:0.6,0.15,0.15", "imbalanced:0.15,0.6,0.15"
RECORDS = [
    _rec("no_kd", 0, "complete", 0.8),
    _rec("no_kd", 0, "random:0.0", 0.8),
    _rec("no_kd", 0, "random:0.5", 0.6),
    _rec("no_kd", 0, IMB_A, 0.5, missing_rate_by_modality={"l": 0.597, "a": 0.145, "v": 0.146}),
    _rec("no_kd", 0, IMB_B, 0.7, missing_rate_by_modality={"l": 0.144, "a": 0.6, "v": 0.145}),
    _rec("no_kd", 0, "burst:0.3", 0.4, missing_rate=0.29, missing_rate_by_modality={"l": 0.3, "a": 0.28, "v": 0.29}),
    _rec("no_kd", 0, "burst:0.5", 0.2, missing_rate=0.46, missing_rate_by_modality={"l": 0.5, "a": 0.44, "v": 0.44}),
    _rec("no_kd", 1, "complete", 0.9),
    _rec("no_kd", 1, "random:0.0", 0.9),
    _rec("no_kd", 1, "random:0.5", 0.7),
    _rec("no_kd", 1, IMB_A, 0.6),
    _rec("no_kd", 1, IMB_B, 0.8),
    _rec("no_kd", 1, "burst:0.3", 0.5),
    _rec("no_kd", 1, "burst:0.5", 0.3),
    _rec("no_kd", 0, "features:0.5", 0.55, feature_missing_rate=0.5),
    _rec("no_kd", 1, "features:0.5", 0.65, feature_missing_rate=0.5),
]


def test_condition_order_places_the_new_kinds_after_the_old_ones():
    got = condition_order(["burst:0.5", "features:0.3", IMB_B, "random:0.5", "complete", IMB_A, "burst:0.3"])
    assert got == ["complete", "random:0.5", IMB_B, IMB_A, "burst:0.3", "burst:0.5", "features:0.3"]


def test_kind_columns_keep_the_run_order_for_imbalanced_and_sort_rates():
    assert kind_columns([IMB_B, "burst:0.5", IMB_A, "burst:0.3", "burst:avg"], "imbalanced") == [IMB_B, IMB_A]
    assert kind_columns([IMB_B, "burst:0.5", IMB_A, "burst:0.3", "burst:avg"], "burst") == ["burst:0.3", "burst:0.5"]


def test_kind_average_is_per_seed_by_hand():
    """Seed 0: (0.5 + 0.7) / 2 = 0.6; seed 1: (0.6 + 0.8) / 2 = 0.7."""
    frame = records_frame(RECORDS)
    avg = kind_average_frame(frame, RECORDS, [IMB_A, IMB_B], "imbalanced:avg")
    assert sorted(avg.weighted_f1.round(6).tolist()) == [0.6, 0.7]
    assert set(avg.condition) == {"imbalanced:avg"}


def test_kind_average_leaves_out_a_variant_not_scored_under_one_condition():
    records = RECORDS + [
        _rec("other", 0, IMB_A, 0.9),
        {**_rec("other", 0, IMB_B, None), "applicable": False, "reason": "not its subset"},
    ]
    avg = kind_average_frame(records_frame(records), records, [IMB_A, IMB_B], "imbalanced:avg")
    assert set(avg.variant) == {"no_kd"}


def test_imbalanced_header_names_the_modalities():
    assert imbalanced_header(IMB_A, ["l", "a", "v"]) == "l 0.6 · a 0.15 · v 0.15"
    assert imbalanced_header(IMB_A, []) == "0.6,0.15,0.15"  # names unknown: the rates as they are


def test_missingness_blocks_by_hand():
    blocks = missingness_blocks(
        records_frame(RECORDS), RECORDS, 2, TABLE_METRICS["classification"], ["l", "a", "v"], burst_length=4.0
    )
    headings = [b.text for b in blocks if isinstance(b, Heading)]
    assert headings == [
        "Imbalanced missing rates (weighted F1)",
        "Imbalanced missing rates (accuracy)",
        "Missing runs across turns, burst rate p (weighted F1)",
        "Missing runs across turns, burst rate p (accuracy)",
        "Feature missing, rate p (weighted F1)",
        "Feature missing, rate p (accuracy)",
        "Averages per missingness protocol (weighted F1)",
    ]
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].headers == ("method", "l 0.6 · a 0.15 · v 0.15", "l 0.15 · a 0.6 · v 0.15", "mean")
    # mean over seeds of (0.5, 0.6) = 55.00, sample std 7.07; the per-seed imbalanced means 0.6, 0.7 -> 65.00 ± 7.07
    assert tables[0].rows == (("no_kd", "55.00 ± 7.07", "75.00 ± 7.07", "65.00 ± 7.07"),)
    # burst: per-seed means (0.4 + 0.2) / 2 = 0.3 and (0.5 + 0.3) / 2 = 0.4
    assert tables[2].rows == (("no_kd", "45.00 ± 7.07", "25.00 ± 7.07", "35.00 ± 7.07"),)
    # averages: random above 0 is random:0.5 only (0.6, 0.7); complete (0.8, 0.9)
    assert tables[-1].headers == ("method", "random Avg", "imbalanced Avg", "burst Avg", "complete")
    assert tables[-1].rows == (("no_kd", "65.00 ± 7.07", "65.00 ± 7.07", "35.00 ± 7.07", "85.00 ± 7.07"),)
    text = " ".join(b.text for b in blocks if isinstance(b, Paragraph))
    assert "l 0.6 · a 0.15 · v 0.15: l 0.597, a 0.145, v 0.146" in text
    assert "p=0.3: 0.290 (l 0.300, a 0.280, v 0.290)" in text
    assert "mean missing run 4 utterances" in text
    assert "p=0.5: 0.500" in text


def test_no_blocks_without_the_new_conditions():
    old = [r for r in RECORDS if r["condition"] in ("complete", "random:0.5")]
    assert missingness_blocks(records_frame(old), old, 2, TABLE_METRICS["classification"], ["l", "a", "v"]) == []


@pytest.mark.parametrize("kind", ["imbalanced", "burst", "features"])
def test_kind_average_of_nothing_is_empty(kind):
    assert kind_average_frame(records_frame(RECORDS), RECORDS, [], f"{kind}:avg").empty
