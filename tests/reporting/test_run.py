"""A run's report (corekd.reporting.run) and the tables it is built from (corekd.reporting.tables): the numbers are
the mean ± std of the records."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from corekd.reporting.blocks import md, render_markdown
from corekd.reporting.run import (
    SELECTED_ON_TEST,
    analyses_section,
    card_section,
    coverage,
    dev_value,
    render_report,
    with_test_selection_banner,
    write_report,
)
from corekd.reporting.tables import (
    FIXED_AVG,
    FIXED_ORDER,
    NOT_APPLICABLE,
    applicable,
    fixed_header,
    format_cell,
    mark_not_applicable,
    markdown_table,
    mean_std_table,
    method_not_applicable,
    rate_columns,
    records_frame,
    split_records,
    students_above_teacher,
)


def _records():
    rows = []
    for seed, base in ((0, 0.5), (1, 0.7)):
        for k, cond in enumerate(["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]):
            rows.append(
                {
                    "method": "m",
                    "variant": "m",
                    "seed": seed,
                    "condition": cond,
                    "accuracy": base + 0.01 * k,
                    "weighted_f1": base + 0.01 * k,
                    "macro_f1": 0,
                    "uar": 0,
                    "per_class_f1": {"a": 0.1},
                    "missing_rate": 0.0,
                }
            )
        for cond, value in (("complete", base + 0.2), ("random:0.5", base)):
            rows.append(
                {
                    "method": "m",
                    "variant": "m",
                    "seed": seed,
                    "condition": cond,
                    "accuracy": value,
                    "weighted_f1": value,
                    "macro_f1": 0,
                    "uar": 0,
                    "per_class_f1": {"a": 0.1},
                    "missing_rate": 0.5,
                }
            )
    return rows


def test_fixed_average_is_per_seed_mean_of_six_then_mean_std_over_seeds():
    frame = records_frame(_records())
    table = mean_std_table(frame, "weighted_f1", [FIXED_AVG, "complete"])
    mean, std, n = table.loc["m", FIXED_AVG]
    # per seed: base + 0.025 -> 0.525 and 0.725; mean 0.625, sample std 0.1414
    assert mean == pytest.approx(0.625) and std == pytest.approx(np.std([0.525, 0.725], ddof=1)) and n == 2
    assert table.loc["m", "complete"][0] == pytest.approx(0.8)


def test_rendered_report_shows_the_figures():
    meta = {
        "corpus": "c",
        "seeds": [0, 1],
        "selection": "dev",
        "mask_seed": 0,
        "random_scheme": "calibrated",
        "splits": {"test": {"dialogues": 1, "utterances": 6}},
        "command": "corekd run x",
    }
    text = render_report(meta, _records(), [])
    assert "| m | 60.00 ± 14.14 | 61.00 ± 14.14 |" in text  # fixed:l, fixed:a: mean of 0.5 and 0.7
    assert "62.50 ± 14.14" in text and "80.00 ± 14.14" in text  # Avg, complete
    assert "Re-run: `corekd run x`" in text


def test_one_modality_report_says_which_protocols_do_not_apply():
    """A text-only corpus (MELD text): no fixed subset exists and no random rate removes anything; the report says
    so in words that fit one modality, and keeps the three-modality wording for three."""

    def recs(conditions):
        return [
            {
                "method": "teacher",
                "variant": "teacher",
                "seed": s,
                "split": "test",
                "condition": c,
                "weighted_f1": 0.5,
                "accuracy": 0.5,
                "missing_rate": 0.0,
                "n_utterances": 10,
            }
            for s in (0, 1)
            for c in conditions
        ]

    meta = {"corpus": "c", "seeds": [0, 1], "mask_seed": 0, "random_scheme": "calibrated", "status": "complete"}
    text = render_report({**meta, "modalities": ["l"]}, recs(["complete", "random:0.0"]), [])
    assert "The corpus has 1 modality: no fixed-subset condition applies" in text
    assert "With one modality nothing can go missing" in text
    assert "mean of the six" not in text and "With three modalities" not in text
    three = render_report(
        {**meta, "modalities": ["l", "a", "v"]},
        recs(["complete", "random:0.0", "fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]),
        [],
    )
    assert "Avg is the mean of the six" in three and "With 3 modalities" in three and "at most 2/3" in three


# ---------------------------------------------------------------- small helpers: md, applicable, splits, headers
def test_md_escapes_pipes_and_backslashes_and_flattens_whitespace():
    assert md("a|b") == "a\\|b"
    assert md("c\\d") == "c\\\\d"
    assert md("x\\|y") == "x\\\\\\|y"  # the backslash is doubled first, then the pipe escaped
    assert md("  one\ntwo\t three  ") == "one two three"
    assert md(3) == "3" and md(None) == "None" and md("") == ""


def test_applicable_keeps_records_without_the_field_and_drops_false():
    recs = [{"v": 1}, {"v": 2, "applicable": True}, {"v": 3, "applicable": False}]
    assert applicable(recs) == [{"v": 1}, {"v": 2, "applicable": True}]
    assert applicable([]) == []


def test_split_records_defaults_to_test():
    recs = [{"i": 0}, {"i": 1, "split": "test"}, {"i": 2, "split": "dev"}, {"i": 3, "split": "train"}]
    assert split_records(recs, "test") == [{"i": 0}, {"i": 1, "split": "test"}]
    assert split_records(recs, "dev") == [{"i": 2, "split": "dev"}]
    assert split_records(recs, "other") == []


def test_fixed_header_names_the_kept_modalities():
    assert fixed_header("fixed:la") == "{l,a}"
    assert fixed_header("fixed:v") == "{v}"
    assert fixed_header("fixed:lav") == "{l,a,v}"


def test_rate_columns_by_numeric_rate_and_kind():
    conds = {"frames:0.5", "frames:.3", "frames:0.25", "random:0.1", "complete", "framesx:0.1", "fixed:l"}
    # by float: 0.25 < .3 < 0.5 (as strings ".3" would sort first)
    assert rate_columns(conds, "frames") == ["frames:0.25", "frames:.3", "frames:0.5"]
    assert rate_columns(conds, "random") == ["random:0.1"]
    assert rate_columns(["complete"], "frames") == []


def test_dev_value_plain_metrics_as_they_are_the_rest_in_percent():
    assert dev_value("dev_mae", 0.12345) == "0.123"
    assert dev_value("dev_corr", 0.5) == "0.500"
    assert dev_value("mae", 1.0) == "1.000"
    assert dev_value("dev_weighted_f1", 0.12345) == "12.35"
    assert dev_value("dev_accuracy", 0.5) == "50.00"
    assert dev_value("dev_dev_mae", 0.5) == "50.00"  # only one prefix is removed


# ---------------------------------------------------------------- cells and Markdown tables
def test_cell_texts():
    assert format_cell(NOT_APPLICABLE) == "n/a"
    assert format_cell(float("nan")) == "–" and format_cell(None) == "–" and format_cell("other") == "–"
    assert format_cell((0.5, None, 1)) == "50.00"
    assert format_cell((0.12344, 0.0456, 3)) == "12.34 ± 4.56"
    assert format_cell((0.12344, 0.0456, 3), 3) == "12.34 ± 4.56"
    assert format_cell((0.12344, 0.0456, 2), 3) == "12.34 ± 4.56 (n=2)"
    assert format_cell((0.5, None, 1), 3) == "50.00 (n=1)"
    assert format_cell((0.5, None, 1), None, "weighted_f1") == "50.00"
    assert format_cell((1.23456, None, 1), metric="mae") == "1.235"
    assert format_cell((1.23456, 0.1, 2), metric="corr") == "1.235 ± 0.100"
    assert format_cell((1.23456, 0.1, 1), 2, "mae") == "1.235 ± 0.100 (n=1)"


def _object_table(index, columns, cells):
    table = pd.DataFrame(index=index, columns=columns, dtype=object)
    for (r, c), v in cells.items():
        table.loc[r, c] = v
    return table


def test_markdown_table_exact_text():
    table = _object_table(
        ["a|b", "c"],
        ["x", "y"],
        {("a|b", "x"): (0.5, None, 1), ("a|b", "y"): (0.25, 0.125, 2), ("c", "y"): NOT_APPLICABLE},
    )
    assert markdown_table(table, ["h|1", "y"]) == (
        "| method | h\\|1 | y |\n|---|---|---|\n| a\\|b | 50.00 | 25.00 ± 12.50 |\n| c | – | n/a |"
    )
    assert markdown_table(table, ["h", "y"], "m \\ p", 2, "mae") == (
        "| m \\\\ p | h | y |\n|---|---|---|\n| a\\|b | 0.500 (n=1) | 0.250 ± 0.125 |\n| c | – | n/a |"
    )
    assert markdown_table(table, ["x", "y"], first="f", n_expected=1) == (
        "| f | x | y |\n|---|---|---|\n| a\\|b | 50.00 | 25.00 ± 12.50 (n=2) |\n| c | – | n/a |"
    )
    assert markdown_table(table.iloc[:0], ["only"]) == "| method | only |\n|---|---|"


# ---------------------------------------------------------------- not-applicable conditions
def _na(variant, condition, reason=None, seed=0):
    r = {"method": variant, "variant": variant, "seed": seed, "condition": condition, "applicable": False}
    if reason is not None:
        r["reason"] = reason
    return r


def _rec(variant, condition, value, seed=0, method=None, **extra):
    return {
        "method": method or variant,
        "variant": variant,
        "seed": seed,
        "condition": condition,
        "weighted_f1": value,
        **extra,
    }


def test_method_not_applicable_lists_only_conditions_another_variant_is_scored_under():
    records = [
        _rec("full", "fixed:l", 0.5),
        _rec("full", "complete", 0.6),
        _na("sub", "fixed:l", "needs audio"),
        _na("sub", "fixed:l", "other reason", seed=1),  # first reason kept
        _na("sub", "complete"),  # no reason recorded: empty
        _na("sub", "fixed:a", "x"),
        _na("full", "fixed:a", "y"),  # nobody is scored: the data rules it out
        _rec("sub", "fixed:v", 0.4, applicable=True),
        _na("other", "fixed:l", "z"),
    ]
    out = method_not_applicable(records)
    assert out == {"sub": {"fixed:l": "needs audio", "complete": ""}, "other": {"fixed:l": "z"}}
    assert list(out) == ["sub", "other"] and list(out["sub"]) == ["fixed:l", "complete"]
    assert method_not_applicable([_na("a", "fixed:l", "r")]) == {}
    assert method_not_applicable([]) == {}


def test_mark_not_applicable_marks_cells_whose_every_record_is_not_applicable():
    records = [
        _rec("full", "fixed:l", 0.5),
        _rec("full", "complete", 0.5),
        _na("sub", "fixed:l", "r"),
        _rec("sub", "complete", 0.5),
        _na("mixed", "complete", "r", seed=0),
        _rec("mixed", "complete", 0.5, seed=1),  # one seed scored: not n/a
        _na("ghost", "complete", "r"),  # not a row of the table
        _na("full", "random:0.5", "r"),  # not a column of the table
        _na("data", "fixed:a", "r"),
    ]
    table = _object_table(
        ["full", "sub", "mixed", "data"],
        ["fixed:l", "fixed:a", FIXED_AVG, "complete"],
        {("full", "complete"): (0.5, None, 1), ("mixed", "complete"): (0.5, None, 1)},
    )
    out = mark_not_applicable(table, records)
    assert out is table
    assert list(out.index) == ["full", "sub", "mixed", "data"]
    assert list(out.columns) == ["fixed:l", "fixed:a", FIXED_AVG, "complete"]
    as_text = {(r, c): format_cell(out.loc[r, c]) for r in out.index for c in out.columns}
    assert as_text == {
        ("full", "fixed:l"): "–",
        ("full", "fixed:a"): "–",
        ("full", FIXED_AVG): "–",
        ("full", "complete"): "50.00",
        # sub is not scored under fixed:l (full is): that cell and its fixed Avg read n/a
        ("sub", "fixed:l"): "n/a",
        ("sub", "fixed:a"): "–",
        ("sub", FIXED_AVG): "n/a",
        ("sub", "complete"): "–",
        ("mixed", "fixed:l"): "–",
        ("mixed", "fixed:a"): "–",
        ("mixed", FIXED_AVG): "–",
        ("mixed", "complete"): "50.00",
        # data's fixed:a record is not applicable (nobody is scored there): n/a, but no fixed-Avg mark
        ("data", "fixed:l"): "–",
        ("data", "fixed:a"): "n/a",
        ("data", FIXED_AVG): "–",
        ("data", "complete"): "–",
    }


# ---------------------------------------------------------------- records_frame and mean_std_table
def _fixed_records(variant, method, seed, b, conditions=FIXED_ORDER):
    """weighted_f1 = b + 0.02 k, accuracy = b, macro_f1 = 0.5 k, uar = 1, mae = k under the k-th fixed condition:
    fixed averages b + 0.05, b, 1.25, 1.0 and 2.5."""
    return [
        {
            "method": method,
            "variant": variant,
            "seed": seed,
            "condition": c,
            "accuracy": b,
            "weighted_f1": b + 0.02 * k,
            "macro_f1": 0.5 * k,
            "uar": 1.0,
            "mae": float(k),
            "missing_rate": 0.3,
            "per_class_f1": {"a": 0.1},
        }
        for k, c in enumerate(conditions)
    ]


def test_records_frame_adds_the_per_seed_fixed_average():
    records = (
        _fixed_records("z", "zm", 1, 0.5)
        + _fixed_records("a", "am", 1, 0.25)
        + _fixed_records("z", "zm", 0, 0.75)
        + [_rec("z", "complete", 0.9, seed=1, method="zm", missing_rate=0.0), _na("z", "random:0.5", "r")]
    )
    frame = records_frame(records)
    assert "per_class_f1" not in frame
    n_rows = 18 + 1  # the applicable records
    assert len(frame) == n_rows + 3 and list(frame.index) == list(range(n_rows + 3))
    assert list(frame.columns[:4]) == ["method", "variant", "seed", "condition"]
    assert not (frame.condition == "random:0.5").any()
    avg = frame[frame.condition == FIXED_AVG]
    assert list(avg.index) == [19, 20, 21]  # appended after the records, first-seen order
    got = avg[["method", "variant", "seed", "accuracy", "weighted_f1", "macro_f1", "uar", "mae"]].to_dict("records")
    want = [
        {
            "method": "zm",
            "variant": "z",
            "seed": 1,
            "accuracy": 0.5,
            "weighted_f1": 0.55,
            "macro_f1": 1.25,
            "uar": 1.0,
            "mae": 2.5,
        },
        {
            "method": "am",
            "variant": "a",
            "seed": 1,
            "accuracy": 0.25,
            "weighted_f1": 0.30,
            "macro_f1": 1.25,
            "uar": 1.0,
            "mae": 2.5,
        },
        {
            "method": "zm",
            "variant": "z",
            "seed": 0,
            "accuracy": 0.75,
            "weighted_f1": 0.80,
            "macro_f1": 1.25,
            "uar": 1.0,
            "mae": 2.5,
        },
    ]
    assert len(got) == 3
    for g, w in zip(got, want):
        assert g == {k: (pytest.approx(v) if isinstance(v, float) else v) for k, v in w.items()}
    assert avg.missing_rate.isna().all()  # not a metric: not averaged


def test_records_frame_fixed_average_needs_all_six_conditions_present():
    only_fixed = records_frame(_fixed_records("v", "m", 0, 0.5))  # present is exactly the six
    assert list(only_fixed.condition).count(FIXED_AVG) == 1
    assert only_fixed[only_fixed.condition == FIXED_AVG].weighted_f1.tolist() == [pytest.approx(0.55)]
    five = records_frame(_fixed_records("v", "m", 0, 0.5, FIXED_ORDER[:5]))
    assert FIXED_AVG not in set(five.condition) and len(five) == 5
    # a not-applicable record still counts as present: the average is over the applicable ones
    with_na = records_frame(_fixed_records("v", "m", 0, 0.5, FIXED_ORDER[:5]) + [_na("v", FIXED_ORDER[5], "r")])
    # weighted_f1 0.5 + 0.02 k for k = 0..4: mean 0.54
    assert with_na[with_na.condition == FIXED_AVG].weighted_f1.tolist() == [pytest.approx(0.54)]


def test_records_frame_no_average_for_a_variant_missing_a_scored_fixed_condition():
    records = (
        _fixed_records("full", "m", 0, 0.5)
        + _fixed_records("sub", "m", 0, 0.25, FIXED_ORDER[1:])
        + [_na("sub", "fixed:l", "r")]
    )
    frame = records_frame(records)
    assert frame[frame.condition == FIXED_AVG].variant.tolist() == ["full"]
    # every variant partial: nothing to average
    only_sub = records_frame(
        _fixed_records("sub", "m", 0, 0.25, FIXED_ORDER[1:])
        + [_na("sub", "fixed:l", "r")]
        + [_rec("full", "fixed:l", 0.5)]
    )
    assert only_sub[only_sub.condition == FIXED_AVG].variant.tolist() == ["full"]


def test_records_frame_keeps_the_average_of_a_variant_not_scored_only_outside_the_fixed_conditions():
    # sub is not scored under complete (full is): that does not touch the fixed conditions it averages
    records = (
        _fixed_records("full", "m", 0, 0.5)
        + [_rec("full", "complete", 0.5)]
        + _fixed_records("sub", "m", 0, 0.25)
        + [_na("sub", "complete", "r")]
    )
    assert method_not_applicable(records) == {"sub": {"complete": "r"}}
    frame = records_frame(records)
    avg = frame[frame.condition == FIXED_AVG]
    assert avg.variant.tolist() == ["full", "sub"]
    assert avg.weighted_f1.tolist() == [pytest.approx(0.55), pytest.approx(0.30)]


def test_records_frame_of_nothing_applicable_is_empty():
    assert records_frame([]).empty
    assert records_frame([_na("a", c, "r") for c in FIXED_ORDER]).empty


def test_mean_std_table_cells_rows_and_columns():
    frame = pd.DataFrame(
        [
            {"variant": "z", "condition": "c1", "m": 0.5},
            {"variant": "a", "condition": "c1", "m": 0.5},
            {"variant": "z", "condition": "c1", "m": 0.7},
            {"variant": "z", "condition": "c2", "m": 0.25},
            {"variant": "a", "condition": "c1", "m": float("nan")},
            {"variant": "b", "condition": "c3", "m": 0.1},
            {"variant": "a", "condition": "c3", "m": 0.9},
        ]
    )
    table = mean_std_table(frame, "m", ["c2", "c1"])
    assert list(table.index) == ["z", "a", "b"] and list(table.columns) == ["c2", "c1"]
    mean, std, n = table.loc["z", "c1"]
    # 0.5, 0.7: mean 0.6, sample std sqrt(2 * 0.1^2 / 1) = 0.1414
    assert mean == pytest.approx(0.6) and std == pytest.approx(math.sqrt(0.02)) and n == 2
    assert isinstance(n, int) and isinstance(mean, float) and isinstance(std, float)
    assert table.loc["z", "c2"] == (0.25, None, 1)
    assert table.loc["a", "c1"] == (0.5, None, 1)  # the NaN is not a seed
    assert not isinstance(table.loc["a", "c2"], tuple) and not isinstance(table.loc["b", "c1"], tuple)
    assert not isinstance(table.loc["b", "c2"], tuple)
    assert markdown_table(table, ["c2", "c1"], metric="m") == (
        "| method | c2 | c1 |\n|---|---|---|\n| z | 25.00 | 60.00 ± 14.14 |\n| a | – | 50.00 |\n| b | – | – |"
    )


def test_mean_std_table_std_of_three_seeds():
    frame = pd.DataFrame([{"variant": "v", "condition": "c", "m": x} for x in (0.1, 0.2, 0.6)])
    mean, std, n = mean_std_table(frame, "m", ["c"]).loc["v", "c"]
    # mean 0.3; deviations -0.2, -0.1, 0.3: sum of squares 0.14, / 2 -> 0.07
    assert (mean, n) == (pytest.approx(0.3), 3) and std == pytest.approx(math.sqrt(0.07))


# ---------------------------------------------------------------- the dev warning: students above the teacher
def test_students_above_teacher():
    table = _object_table(
        ["s0", "teacher", "s1", "s2", "s3", "s4"],
        ["fixed:avg", "complete"],
        {
            ("teacher", "complete"): (0.5, 0.1, 2),
            ("s1", "complete"): (0.6, None, 1),
            ("s2", "complete"): (0.5, None, 1),
            ("s3", "complete"): (0.4, None, 1),
            ("s4", "complete"): NOT_APPLICABLE,
            ("s0", "complete"): (0.7, 0.0, 2),
            ("s3", "fixed:avg"): (0.9, None, 1),
        },
    )
    assert students_above_teacher(table) == [("s0", 0.7, 0.5), ("s1", 0.6, 0.5)]
    assert students_above_teacher(table, False) == [("s0", 0.7, 0.5), ("s1", 0.6, 0.5)]
    assert students_above_teacher(table, lower_is_better=True) == [("s3", 0.4, 0.5)]


def test_students_above_teacher_needs_a_scored_teacher_on_complete_views():
    cells = {("teacher", "complete"): (0.5, None, 1), ("s", "complete"): (0.9, None, 1)}
    assert students_above_teacher(_object_table(["teacher", "s"], ["complete"], cells)) == [("s", 0.9, 0.5)]
    assert students_above_teacher(_object_table(["t", "s"], ["complete"], {("s", "complete"): (0.9, None, 1)})) == []
    assert (
        students_above_teacher(_object_table(["teacher", "s"], ["fixed:avg"], {("s", "fixed:avg"): (0.9, None, 1)}))
        == []
    )
    assert (
        students_above_teacher(_object_table(["teacher", "s"], ["complete"], {("s", "complete"): (0.9, None, 1)})) == []
    )
    na = _object_table(
        ["teacher", "s"], ["complete"], {("teacher", "complete"): NOT_APPLICABLE, ("s", "complete"): (0.9, None, 1)}
    )
    assert students_above_teacher(na) == []


# ---------------------------------------------------------------- coverage
def test_coverage_of_a_partial_run():
    meta = {"seeds": [0, 1, 2], "methods": ["t", "s"], "status": "complete"}
    records = [
        {"seed": 1, "variant": "s"},
        {"seed": 1, "variant": "t"},
        {"seed": 1, "variant": "s"},
        {"seed": 0, "variant": "t"},
    ]
    cover = coverage(meta, records, [])
    assert cover == {
        "seeds": [0, 1],
        "per_seed": {1: ["s", "t"], 0: ["t"]},
        "missing": [(0, "s"), (2, "t"), (2, "s")],
        "partial": True,
    }
    assert list(cover["per_seed"]) == [1, 0]


def test_coverage_of_a_complete_run_and_its_status():
    records = [{"seed": s, "variant": v} for s in (0, 1) for v in ("t", "s")]
    meta = {"seeds": [0, 1], "methods": ["t", "s"]}
    assert coverage(meta, records, []) == {
        "seeds": [0, 1],
        "per_seed": {0: ["t", "s"], 1: ["t", "s"]},
        "missing": [],
        "partial": False,
    }
    assert coverage({**meta, "status": "complete"}, records, [])["partial"] is False
    assert coverage({**meta, "status": "failed"}, records, [])["partial"] is False
    assert coverage({**meta, "status": "running"}, records, [])["partial"] is True
    assert coverage({**meta, "status": "interrupted"}, records, [])["partial"] is True


def test_coverage_plans_the_recorded_variants_when_meta_has_no_methods():
    records = [{"seed": 0, "variant": "b"}, {"seed": 0, "variant": "a"}, {"seed": 1, "variant": "b"}]
    # planned methods: b, a (first seen); seed 1 lacks a
    assert coverage({"seeds": [0, 1]}, records, [])["missing"] == [(1, "a")]
    assert coverage({"seeds": [0, 1], "methods": []}, records, [])["missing"] == [(1, "a")]
    assert coverage({"seeds": [0, 1], "methods": None}, records, [])["missing"] == [(1, "a")]
    # no planned seeds: nothing is missing
    assert coverage({}, records, []) == {
        "seeds": [0, 1],
        "per_seed": {0: ["b", "a"], 1: ["b"]},
        "missing": [],
        "partial": False,
    }
    assert coverage({"seeds": None}, records, [])["missing"] == []
    assert coverage({"seeds": [3]}, [], []) == {"seeds": [], "per_seed": {}, "missing": [], "partial": False}
    assert coverage({"seeds": [3], "methods": ["x"]}, [], []) == {
        "seeds": [],
        "per_seed": {},
        "missing": [(3, "x")],
        "partial": True,
    }


# ---------------------------------------------------------------- the dataset card
def card_lines(meta):
    """The card section's Markdown, line by line (nothing when it has no block)."""
    blocks = card_section(meta)
    return render_markdown(blocks).split("\n") if blocks else []


def test_card_section_exact_lines():
    meta = {
        "modality_cards": {
            "l": {
                "extractor": "bert|x",
                "dim": 768,
                "kind": "utterance",
                "frame_rate": None,
                "aligned": True,
                "normalization": "z\nscore",
            },
            "a": {"dim": 74},
        },
        "dev_split": {"method": "carved", "dialogues": 12, "fraction": 0.1, "seed": 3, "speaker_disjoint": True},
    }
    assert card_lines(meta) == [
        "## Dataset card",
        "",
        "| modality | extractor | dim | kind | frame_rate | aligned | normalization |",
        "|---|---|---|---|---|---|---|",
        "| l | bert\\|x | 768 | utterance | None | True | z score |",
        "| a |  | 74 |  |  |  |  |",
        "",
        "Dev split: carved, 12 dialogues (fraction 0.1, seed 3, speaker-disjoint: yes).",
        "",
    ]


def test_card_section_dev_split_defaults_and_absent_cards():
    cards = {"v|x": {"extractor": "e"}}
    lines = card_lines({"modality_cards": cards, "dev_split": {"speaker_disjoint": False}})
    assert lines[4] == "| v\\|x | e |  |  |  |  |  |"
    assert lines[-2:] == ["Dev split: , None dialogues (fraction None, seed None, speaker-disjoint: no).", ""]
    assert card_lines({"modality_cards": cards, "dev_split": {"method": "a|b"}})[-2] == (
        "Dev split: a\\|b, None dialogues (fraction None, seed None, speaker-disjoint: no)."
    )
    assert card_lines({"modality_cards": cards}) == card_lines({"modality_cards": cards, "dev_split": {}})
    assert len(card_lines({"modality_cards": cards})) == 6 and card_lines({"modality_cards": cards})[-1] == ""
    assert card_lines({}) == [] and card_lines({"modality_cards": {}}) == []
    assert card_lines({"modality_cards": None, "dev_split": {"method": "m"}}) == []


# ---------------------------------------------------------------- the written file
META = {
    "corpus": "c",
    "seeds": [0],
    "methods": ["m"],
    "mask_seed": 0,
    "random_scheme": "calibrated",
    "command": "corekd run x",
    "status": "complete",
}
RECORDS = [
    {
        "method": "m",
        "variant": "m",
        "seed": 0,
        "condition": "complete",
        "accuracy": 0.5,
        "weighted_f1": 0.5,
        "per_class_f1": {"a": 0.5},
        "missing_rate": 0.0,
    }
]
TRAININGS = [{"variant": "m", "seed": 0, "best_epoch": 2, "epochs_run": 3, "dev_weighted_f1": 0.25, "seconds": 1.5}]
PAYLOAD = {
    "format": "corekd-analyses",
    "notes": ["a note"],
    "drift": [{"method": "m", "variant": "m", "seed": 0, "condition": "complete", "normalized": 0.1, "raw": 0.2}],
}


def test_write_report_writes_the_rendered_report(tmp_path):
    path = write_report(str(tmp_path), META, RECORDS, TRAININGS)
    assert path == tmp_path / "report.md" and path.is_file()
    text = path.read_text()
    assert text == render_report(META, RECORDS, TRAININGS)
    assert "| m | 50.00 |" in text and "| m | 2.0 | 3.0 | 25.00 | 1.5 |" in text and "Mechanism analyses" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]


def test_write_report_appends_the_analyses_section(tmp_path):
    (tmp_path / "analyses.json").write_text(json.dumps(PAYLOAD))
    path = write_report(tmp_path, META, RECORDS, TRAININGS)
    section = render_markdown(analyses_section(PAYLOAD))
    assert (
        section.startswith("## Mechanism analyses\n")
        and "- a note" in section
        and "| normalised | complete |" in section
    )
    text = path.read_text()
    assert text == render_report(META, RECORDS, TRAININGS).rstrip("\n") + "\n\n" + section
    assert SELECTED_ON_TEST not in text


def test_write_report_test_selection_banners_the_analyses_too(tmp_path):
    (tmp_path / "analyses.json").write_text(json.dumps(PAYLOAD))
    meta = {**META, "select_on": "test"}
    text = write_report(tmp_path, meta, RECORDS, TRAININGS).read_text()
    report = render_report(meta, RECORDS, TRAININGS)
    section = with_test_selection_banner(render_markdown(analyses_section(PAYLOAD)))
    assert text == report.rstrip("\n") + "\n\n" + section
    tail = text[text.index("## Mechanism analyses") :]
    assert tail.count(SELECTED_ON_TEST) == 2  # above each of the two drift tables


# ---------------------------------------------------------------- report tables
def _rows(variant, seed, values):
    return [
        {
            "method": variant,
            "variant": variant,
            "seed": seed,
            "condition": c,
            "accuracy": v,
            "weighted_f1": v,
            "macro_f1": v / 2,
            "uar": v / 4,
            "per_class_f1": {"x": v},
            "missing_rate": 0.0,
        }
        for c, v in values.items()
    ]


FIXED = ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]


def test_fixed_average_covers_every_metric_and_drops_per_class():
    records = _rows("m", 0, {c: 0.1 * (k + 1) for k, c in enumerate(FIXED)})
    frame = records_frame(records)
    assert "per_class_f1" not in frame.columns
    avg = frame[frame.condition == FIXED_AVG].iloc[0]
    assert avg.accuracy == pytest.approx(0.35) and avg.weighted_f1 == pytest.approx(0.35)
    assert avg.macro_f1 == pytest.approx(0.175) and avg.uar == pytest.approx(0.0875)


def test_mean_std_table_keeps_every_variant_and_one_seed_has_no_std():
    records = _rows("a", 0, {"complete": 0.5}) + _rows("b", 0, {"fixed:l": 0.2})
    table = mean_std_table(records_frame(records), "weighted_f1", ["complete"])
    assert list(table.index) == ["a", "b"]  # b has no complete record: a row of gaps, not a missing row
    assert table.loc["a", "complete"] == (0.5, None, 1)  # sample std is undefined for one seed
    assert markdown_table(table, ["complete"]) == "| method | complete |\n|---|---|\n| a | 50.00 |\n| b | – |"
    assert markdown_table(table, ["all"], first="x").splitlines()[0] == "| x | all |"


def test_report_headers_and_file(tmp_path):
    records = _rows("m", 0, {**{c: 0.5 for c in FIXED}, "complete": 0.6})
    meta = {"corpus": "c", "seeds": [0], "splits": {"test": {"dialogues": 1, "utterances": 2}}}
    trainings = [{"variant": "m", "best_epoch": 1, "epochs_run": 2, "dev_weighted_f1": 0.5, "seconds": 1.0}]
    path = write_report(tmp_path, meta, records, trainings)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert text == render_report(meta, records, trainings)
    assert "| method | {l} | {a} | {v} | {l,a} | {l,v} | {a,v} | Avg | complete |" in text
    assert "## Training" in text


# ---------------------------------------------------------------- the test-selection banner
def test_banner_above_the_title_block_and_every_table_exactly():
    """Kills run.with_test_selection_banner `previous = None`; with_test_selection_banner `or`,
    `startswith("XX|XX")`; with_test_selection_banner `"XXXX"`; with_test_selection_banner `startswith("XX# XX")`;
    with_test_selection_banner `out = [...]`, `"XXXX"`."""
    text = "\n".join(["| a |", "| 1 |", "# Title", "prose", "", "| x | y |", "|---|---|", "| 1 | 2 |", "end"])
    got = with_test_selection_banner(text).split("\n")
    assert got == [
        SELECTED_ON_TEST,
        "",
        "| a |",
        "| 1 |",  # a table that opens the text: banner first
        "# Title",
        "",
        SELECTED_ON_TEST,  # under the title
        "prose",
        "",
        SELECTED_ON_TEST,
        "",
        "| x | y |",
        "|---|---|",
        "| 1 | 2 |",  # once per table, not per row
        "end",
    ]
    assert with_test_selection_banner("plain\ntext") == "plain\ntext"  # no table, no title: unchanged
