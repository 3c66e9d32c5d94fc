"""``no_kd``: a student trained on random-missing views with cross-entropy only (a floor)."""

from __future__ import annotations

from corekd.methods.base import Method, StepContext
from corekd.methods.losses import cross_entropy, masked_mean
from corekd.methods.registry import register


@register
class NoKD(Method):
    name = "no_kd"

    def loss(self, ctx: StepContext):
        ce = masked_mean(cross_entropy(ctx.output.logits, ctx.batch.labels, ctx.label_smoothing), ctx.batch.utt_mask)
        return ce, {"ce": ce}
