"""``no_kd``: the masked, smoothed cross-entropy of the student alone."""

import pytest
import torch

from corekd.data.protocols import TrainingMissing
from corekd.methods.base import StepContext, TrainView
from corekd.methods.no_kd import NoKD
from helpers import made_up_batch, py_ce


def test_no_kd_loss_is_the_masked_smoothed_cross_entropy():
    avail = torch.ones(1, 3, 3, dtype=torch.bool)
    utt = torch.tensor([[True, True, False]])
    batch = made_up_batch(avail, avail, torch.tensor([[1, 0, 0]]), utt)
    logits = torch.tensor([[[0.0, 1.0], [2.0, -1.0], [9.0, -9.0]]])
    method = NoKD(NoKD.Options(), TrainingMissing())
    out = type("O", (), {"logits": logits})()
    ctx = StepContext(
        batch=batch,
        view=TrainView(batch),
        output=out,
        teacher=None,
        model=None,
        generator=torch.Generator(),
        label_smoothing=0.1,
    )
    total, terms = method.loss(ctx)
    want = (py_ce([0.0, 1.0], 1, 0.1) + py_ce([2.0, -1.0], 0, 0.1)) / 2
    assert float(total) == pytest.approx(want) and list(terms) == ["ce"] and terms["ce"] is total
