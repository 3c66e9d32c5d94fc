"""``teacher``: cross-entropy on complete views. Trained once per seed, then frozen."""

from __future__ import annotations

from typing import ClassVar

import torch

from corekd.data.batching import Batch
from corekd.methods.base import Method, StepContext, TrainView
from corekd.methods.losses import masked_mean, supervised_loss
from corekd.methods.registry import register


@register
class Teacher(Method):
    name = "teacher"
    search_space: ClassVar[dict[str, dict]] = {}  # no options of its own: the shared lr and dropout only

    def train_view(self, batch: Batch, mask_generator: torch.Generator, generator: torch.Generator) -> TrainView:
        return TrainView(batch.complete())

    def dev_masks(
        self, avail: torch.Tensor, generator: torch.Generator, modalities: tuple[str, ...] = ()
    ) -> torch.Tensor:
        return avail.clone()

    def loss(self, ctx: StepContext):
        ce = masked_mean(supervised_loss(ctx.output.logits, ctx.batch, ctx.label_smoothing), ctx.batch.utt_mask)
        return ce, {"ce": ce}
