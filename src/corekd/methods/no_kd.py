"""``no_kd``: a student trained on random-missing views with cross-entropy only (a floor)."""

from __future__ import annotations

from typing import ClassVar

from corekd.methods.base import Method, StepContext
from corekd.methods.losses import masked_mean, supervised_loss
from corekd.methods.registry import register


@register
class NoKD(Method):
    name = "no_kd"
    search_space: ClassVar[dict[str, dict]] = {}  # no options of its own: the shared lr and dropout only

    def loss(self, ctx: StepContext):
        ce = masked_mean(supervised_loss(ctx.output.logits, ctx.batch, ctx.label_smoothing), ctx.batch.utt_mask)
        return ce, {"ce": ce}
