"""``vanilla_kd``: the teacher it needs follows its KD weight."""

import pytest
import torch

from corekd.data.protocols import TrainingMissing
from corekd.methods import StepContext, TrainView, method_class
from corekd.models.model import Output
from corekd.seeding import torch_generator


def test_vanilla_kd_with_no_kd_weight_needs_no_teacher(tiny_batch):
    method = method_class("vanilla_kd")(method_class("vanilla_kd").Options(l_kd=0.0), TrainingMissing())
    logits = torch.zeros(*tiny_batch.labels.shape, 6)
    out = Output(logits=logits, fused=torch.zeros(*logits.shape[:2], 4), states=torch.zeros(*logits.shape[:2], 3, 4))
    ctx = StepContext(
        batch=tiny_batch,
        view=TrainView(tiny_batch),
        output=out,
        teacher=None,
        model=None,
        generator=torch_generator("v"),
    )
    total, terms = method.loss(ctx)
    assert set(terms) == {"ce"} and total.item() == pytest.approx(torch.log(torch.tensor(6.0)).item())
