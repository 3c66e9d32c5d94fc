"""The teacher method: its loss on complete views, by hand."""

import pytest
import torch

from corekd.methods.base import StepContext, TrainView
from corekd.models.model import Output
from helpers import build_method, made_up_batch, py_ce


def test_teacher_cross_entropy_uses_label_smoothing_by_hand():
    avail = torch.ones(1, 2, 3, dtype=torch.bool)
    utt = torch.tensor([[True, True]])
    batch = made_up_batch(avail, avail, torch.tensor([[1, 0]]), utt)
    logits = torch.tensor([[[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]]])  # [B, U, C]
    output = Output(logits=logits, fused=torch.zeros(1, 2, 4), states=torch.zeros(1, 2, 3, 4))
    teacher = build_method("teacher")
    for smoothing in (0.0, 0.2):
        ctx = StepContext(
            batch=batch,
            view=TrainView(batch),
            output=output,
            teacher=None,
            model=None,
            generator=torch.Generator(),
            label_smoothing=smoothing,
        )
        total, terms = teacher.loss(ctx)
        expected = (py_ce([0.5, -1.0, 2.0], 1, smoothing) + py_ce([1.5, 0.0, -0.5], 0, smoothing)) / 2
        assert float(total) == pytest.approx(expected, rel=1e-6)
        assert float(terms["ce"]) == pytest.approx(expected, rel=1e-6)
