"""Edge cases of the mechanism analyses and the teacher's loss that the mutation run found unpinned.

Each test would fail under one of the surviving mutants listed as "not pinned" in docs/testing.md:
drift of an empty selection, ``relative()`` without a usable reference, the conflict view's
availability, the analyses tables' default layout, and the teacher's label smoothing.
"""

import math
from dataclasses import replace

import pytest
import torch
from helpers import build_method, made_up_batch, py_ce

from corekd.evaluation.analyses import (
    ConflictPairs,
    conflict_view,
    drift,
    relative,
)
from corekd.methods.base import StepContext, TrainView
from corekd.models.model import Output
from corekd.reporting.blocks import markdown_table_lines
from corekd.reporting.tables import grouped_table


def test_drift_of_an_empty_selection_is_nan_not_an_error():
    fused = torch.ones(1, 2, 3)  # [N, U, H]
    normalized, raw = drift(fused, fused * 2, torch.zeros(1, 2, dtype=torch.bool))
    assert math.isnan(normalized) and math.isnan(raw)


@pytest.mark.parametrize("reference", [None, 0.0, float("nan"), float("inf")])
def test_relative_without_a_usable_reference_is_none(reference):
    assert relative(0.5, reference) is None


def test_relative_by_hand():
    assert relative(3.0, 2.0) == pytest.approx(0.5)
    assert relative(3.0, 1.0) == pytest.approx(2.0)  # a reference of exactly 1 is an ordinary one
    assert relative(0.5, -0.25) == pytest.approx(-3.0)


def test_conflict_view_swaps_the_availability_of_the_swapped_modality_only(tiny_splits):
    """A target without ``a`` gets its donor's ``a`` (and its availability); a donor without ``l`` gives no ``l``."""
    test = tiny_splits["test"]
    assert test.modalities == ("l", "a", "v") and len(test) >= 2 and int(test.lengths[:2].min()) >= 2
    avail = test.avail.clone()
    avail[0, 0] = torch.tensor([True, False, True])  # target: language and vision, no audio
    avail[1, 1] = torch.tensor([False, True, False])  # donor: audio only
    split = replace(test, avail=avail)
    pairs = ConflictPairs(target=torch.tensor([[0, 0]]), donor=torch.tensor([[1, 1]]), seed=0, types=("a",))

    view = conflict_view(split, pairs, ("a",))

    assert view.avail[0, 0].tolist() == [True, True, True]  # a now observed (the donor's); l and v the target's own
    assert torch.equal(view.features["a"][0, 0], split.features["a"][1, 1])
    untouched = torch.ones_like(split.utt_mask)
    untouched[0, 0] = False
    assert torch.equal(view.avail[untouched], split.avail[untouched])
    assert split.avail[0, 0].tolist() == [True, False, True]  # the source split is not modified

    both = conflict_view(split, pairs, ("a", "v"))
    assert both.avail[0, 0].tolist() == [True, True, False]  # the donor has no v: the target loses its own


def test_analyses_table_default_layout():
    rows = [
        {"variant": "no_kd", "condition": "fixed:l", "x": 0.12345},
        {"variant": "no_kd", "condition": "fixed:l", "x": 0.32345},
        {"variant": "corekd", "condition": "fixed:l", "x": 1.5},
        {"variant": "corekd", "condition": "random:0.5", "x": 2.0},
        {"variant": "corekd", "condition": "random:0.5", "x": float("nan")},  # not finite: left out of the cell
        {"variant": "corekd", "condition": "random:0.5", "x": None},  # no value: left out too
    ]
    def table(rows, key, value, first="method", **kw):
        return markdown_table_lines(grouped_table(rows, key, value, first, **kw))

    assert table(rows, "condition", "x") == [
        "| method | fixed:l | random:0.5 |",
        "|---|---|---|",
        "| no_kd | 0.223 ± 0.141 | – |",
        "| corekd | 1.500 | 2.000 |",
    ]
    assert table(rows[:1] + rows[4:], "condition", "x") == [
        "| method | fixed:l | random:0.5 |", "|---|---|---|", "| no_kd | 0.123 | – |", "| corekd | – | – |"]
    assert table(rows[2:], "condition", "x", scale=100.0, digits=1, first="model")[0] == "| model | fixed:l | random:0.5 |"
    assert table(rows[2:], "condition", "x", scale=100.0, digits=1)[2] == "| corekd | 150.0 | 200.0 |"


def test_teacher_cross_entropy_uses_label_smoothing_by_hand():
    avail = torch.ones(1, 2, 3, dtype=torch.bool)
    utt = torch.tensor([[True, True]])
    batch = made_up_batch(avail, avail, torch.tensor([[1, 0]]), utt)
    logits = torch.tensor([[[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]])  # [B, U, C]
    output = Output(logits=logits, fused=torch.zeros(1, 2, 4), states=torch.zeros(1, 2, 3, 4))
    teacher = build_method("teacher")
    for smoothing in (0.0, 0.2):
        ctx = StepContext(batch=batch, view=TrainView(batch), output=output, teacher=None, model=None,
                          generator=torch.Generator(), label_smoothing=smoothing)
        total, terms = teacher.loss(ctx)
        expected = (py_ce([0.5, -1.0, 2.0], 1, smoothing) + py_ce([1.5, 0.0, -0.5], 0, smoothing)) / 2
        assert float(total) == pytest.approx(expected, rel=1e-6)
        assert float(terms["ce"]) == pytest.approx(expected, rel=1e-6)
