"""Modality diagnostics (issue 32 item 4): contributions from records, the equity and learning-balance indices."""

from __future__ import annotations

import math

import pytest
import torch

import corekd.evaluation.analyses as A
from corekd.data.protocols import standard_conditions
from corekd.evaluation.analyses import (
    RunAnalyses,
    alone_condition,
    diagnostics_row,
    evenness,
    mean_grad_norms,
    merge_parts,
    modality_contributions,
    removed_condition,
)
from corekd.evaluation.conditions import evaluate_model, evaluation_masks
from corekd.models.model import ModelConfig
from corekd.training import init_model
from helpers import corpus_dims

CPU = torch.device("cpu")
LAV = ("l", "a", "v")


# ------------------------------------------------------------------ the index, by hand
def test_evenness_extremes_by_hand():
    assert evenness([0.2, 0.2, 0.2]) == 1.0  # every modality costs the same
    assert evenness([0.6, 0.0, 0.0]) == pytest.approx(0.0, abs=1e-12)  # one modality carries it all
    assert evenness([0.0, 0.0, 0.9]) == pytest.approx(0.0, abs=1e-12)


def test_evenness_in_between_by_hand():
    # [0.4, 0.2, 0]: sum over ordered pairs of |c_i - c_j| = 2 * (0.2 + 0.4 + 0.2) = 1.6; 2 n^2 mean = 2 * 9 * 0.2 =
    # 3.6 -> G = 4/9; normalised by (n - 1) / n = 2/3 -> 2/3; index 1 - 2/3 = 1/3
    assert evenness([0.4, 0.2, 0.0]) == pytest.approx(1 / 3)
    # two values [0.1, 0.3]: 2 * 0.2 / (2 * 4 * 0.2) = 0.25, normalised by 1/2 -> 0.5; index 0.5
    assert evenness([0.1, 0.3]) == pytest.approx(0.5)
    # scale-free: the same shares give the same index
    assert evenness([4.0, 2.0, 0.0]) == pytest.approx(1 / 3)


def test_evenness_clips_negative_values_at_zero():
    assert evenness([0.4, 0.2, -0.3]) == pytest.approx(1 / 3)  # -0.3 counts as 0
    assert evenness([0.5, -0.5]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "values",
    [[0.5], [], [0.0, 0.0, 0.0], [-0.1, -0.2], [0.1, None], [0.1, math.nan], [0.1, math.inf]],
)
def test_evenness_undefined(values):
    assert evenness(values) is None


# ------------------------------------------------------------------ contributions, by hand
SCORES = {
    "complete": 0.60,
    "fixed:av": 0.30,  # without l
    "fixed:lv": 0.55,  # without a
    "fixed:la": 0.62,  # without v
    "fixed:l": 0.50,
    "fixed:a": 0.20,
    "fixed:v": 0.25,
}


def test_condition_names():
    assert removed_condition(LAV, "l") == "fixed:av"
    assert removed_condition(LAV, "a") == "fixed:lv"
    assert removed_condition(("l", "v"), "v") == "fixed:l"
    assert alone_condition("v") == "fixed:v"


def test_contributions_by_hand():
    out = modality_contributions(SCORES, LAV, "weighted_f1")
    assert out["l"] == {"without": 0.30, "drop": pytest.approx(0.30), "alone": 0.50}
    assert out["a"] == {"without": 0.55, "drop": pytest.approx(0.05), "alone": 0.20}
    assert out["v"] == {"without": 0.62, "drop": pytest.approx(-0.02), "alone": 0.25}  # v hurts: negative


def test_contributions_lower_is_better_metric_flips_the_sign():
    mae = {"complete": 0.8, "fixed:av": 1.1, "fixed:lv": 0.7, "fixed:la": 0.9, "fixed:l": 1.0}
    out = modality_contributions(mae, LAV, "mae")
    assert out["l"]["drop"] == pytest.approx(0.3)  # MAE rises by 0.3 without l: l helps
    assert out["a"]["drop"] == pytest.approx(-0.1)
    assert out["v"]["drop"] == pytest.approx(0.1)
    assert out["l"]["alone"] == 1.0 and out["a"]["alone"] is None


def test_contributions_missing_scores_and_one_modality():
    partial = {k: v for k, v in SCORES.items() if k != "fixed:lv"}
    out = modality_contributions(partial, LAV, "weighted_f1")
    assert out["a"]["drop"] is None and out["a"]["without"] is None and out["l"]["drop"] == pytest.approx(0.3)
    assert (
        modality_contributions({k: v for k, v in SCORES.items() if k != "complete"}, LAV, "accuracy")["l"]["drop"]
        is None
    )
    assert modality_contributions({"complete": 0.7}, ("l",), "weighted_f1") == {
        "l": {"without": None, "drop": None, "alone": None}
    }


def test_mean_grad_norms_by_hand():
    history = [
        {"epoch": 1, "grad_norm_l": 1.0, "grad_norm_a": 3.0},
        {"epoch": 2, "grad_norm_l": 2.0, "grad_norm_a": 5.0},
    ]
    assert mean_grad_norms(history, LAV) == {"l": 1.5, "a": 4.0, "v": None}
    assert mean_grad_norms([], ("l",)) == {"l": None}


def test_diagnostics_row_by_hand():
    history = [
        {"grad_norm_l": 1.0, "grad_norm_a": 3.0, "grad_norm_v": 2.0},
        {"grad_norm_l": 2.0, "grad_norm_a": 5.0, "grad_norm_v": 2.0},
    ]
    row = diagnostics_row("kd", "corekd", 3, SCORES, LAV, "weighted_f1", history)
    assert row["variant"] == "kd" and row["method"] == "corekd" and row["seed"] == 3
    assert row["metric"] == "weighted_f1" and row["complete"] == 0.60 and row["modalities"] == ["l", "a", "v"]
    assert row["drop"] == pytest.approx({"l": 0.30, "a": 0.05, "v": -0.02})
    assert row["alone"] == {"l": 0.50, "a": 0.20, "v": 0.25}
    assert row["without"] == {"l": 0.30, "a": 0.55, "v": 0.62}
    assert row["grad_norm"] == {"l": 1.5, "a": 4.0, "v": 2.0}
    # equity over [0.30, 0.05, 0] (v clipped): pairs 2 * (0.25 + 0.30 + 0.05) = 1.2; 2 * 9 * (0.35 / 3) = 2.1 ->
    # G = 4/7, normalised * 3/2 = 6/7 -> 1/7
    assert row["equity"] == pytest.approx(1 / 7)
    # balance over [1.5, 4, 2]: pairs 2 * (2.5 + 0.5 + 2) = 10; 2 * 9 * 2.5 = 45 -> G = 2/9, * 3/2 = 1/3 -> 2/3
    assert row["balance"] == pytest.approx(2 / 3)
    without_history = diagnostics_row("kd", "corekd", 3, SCORES, LAV, "weighted_f1", None)
    assert without_history["grad_norm"] == {"l": None, "a": None, "v": None} and without_history["balance"] is None


# ------------------------------------------------------------------ the collector: records first, predicted when missing
@pytest.fixture()
def setting(tiny_corpus, tiny_splits):
    test = tiny_splits["test"]
    conditions = standard_conditions(test.modalities, [0.5])
    masks = evaluation_masks(conditions, test, test.modalities, 0, "calibrated")
    model = init_model(ModelConfig(hidden=16, heads=2), corpus_dims(tiny_corpus), len(tiny_corpus.labels), 0, "student")
    model.eval()
    records = [{"split": "test", **r} for r in evaluate_model(model, test, masks, tiny_corpus.labels, 8, CPU)]
    return test, masks, model, records, tiny_corpus.labels


def collector(test, masks, labels):
    return RunAnalyses(test, masks, None, labels, "classification", 0, 8, CPU, figures=False)


def test_run_analyses_reads_the_records_and_predicts_nothing(setting, monkeypatch):
    test, masks, model, records, labels = setting
    fake = [
        dict(r, weighted_f1=0.1 * i) if r["condition"] != "complete" else dict(r, weighted_f1=0.9)
        for i, r in enumerate(records)
    ]
    monkeypatch.setattr(A, "predict", lambda *a, **k: pytest.fail("a record exists: nothing to predict"))
    run = collector(test, masks, labels)
    history = [{"grad_norm_l": 1.0, "grad_norm_a": 1.0, "grad_norm_v": 1.0}]
    run.add(
        "no_kd", "no_kd", 0, model, None, records=fake + [dict(fake[0], split="dev", weighted_f1=5.0)], history=history
    )
    (row,) = run.modality_diagnostics
    by = {r["condition"]: r["weighted_f1"] for r in fake}
    assert row["complete"] == 0.9 and row["predicted"] == []
    assert row["drop"]["l"] == pytest.approx(0.9 - by["fixed:av"])
    assert row["alone"]["v"] == by["fixed:v"]
    assert row["balance"] == 1.0
    assert run.payload()["modality_diagnostics"] == [row]


def test_run_analyses_predicts_what_the_records_lack(setting):
    test, masks, model, records, labels = setting
    kept = [r for r in records if r["condition"] not in ("fixed:a", "fixed:lv")]
    run = collector(test, masks, labels)
    run.add("no_kd", "no_kd", 0, model, None, records=kept)
    (row,) = run.modality_diagnostics
    by = {r["condition"]: r["weighted_f1"] for r in records}
    assert row["predicted"] == ["fixed:lv", "fixed:a"]
    assert row["alone"]["a"] == by["fixed:a"]  # the same number evaluate_model gives
    assert row["without"]["a"] == by["fixed:lv"]
    assert row["grad_norm"] == {"l": None, "a": None, "v": None} and row["balance"] is None


def test_run_analyses_not_applicable_gives_none_and_no_records_no_diagnostics(setting, monkeypatch):
    test, masks, model, records, labels = setting
    marked = [
        {"condition": r["condition"], "applicable": False, "reason": "x", "split": "test"}
        if r["condition"] == "fixed:v"
        else r
        for r in records
        if r["condition"] != "fixed:l"
    ]
    monkeypatch.setattr(A, "predict", lambda *a, **k: pytest.fail("excluded conditions are not predicted"))
    run = collector(test, masks, labels)
    run.add("sub", "no_kd", 0, model, None, not_applicable={"fixed:l": "restricted"}, records=marked)
    (row,) = run.modality_diagnostics
    assert row["alone"]["v"] is None and row["alone"]["l"] is None and row["predicted"] == []
    run.add("sub", "no_kd", 1, model, None)  # no records: no diagnostics row
    assert len(run.modality_diagnostics) == 1


def test_merge_parts_keeps_rows_and_reads_old_parts():
    base = {
        "pairs": {},
        "task": "classification",
        "drift": [],
        "mstate_drift": [],
        "rejection": [],
        "natural_conflicts": {"flagged": False, "utterances": 0, "records": []},
        "notes": [],
    }
    merged = merge_parts([{**base, "modality_diagnostics": [{"variant": "a"}]}, base])  # the second: an older part
    assert merged["modality_diagnostics"] == [{"variant": "a"}]
