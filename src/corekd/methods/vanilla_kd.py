"""``vanilla_kd``: random-missing student with CE + temperature KD from the complete-view teacher (Hinton)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from corekd.methods.base import Method, StepContext
from corekd.methods.losses import distill_loss, masked_mean, supervised_loss
from corekd.methods.registry import register


class VanillaKDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l_kd: float = Field(1.0, ge=0, description="weight of the KD term")
    temperature: float = Field(2.0, gt=0)


@register
class VanillaKD(Method):
    name = "vanilla_kd"
    search_space: ClassVar[dict[str, dict]] = {
        "l_kd": {"float": [0.25, 4.0], "log": True},
        "temperature": {"float": [1.0, 8.0], "log": True},
    }
    Options = VanillaKDOptions
    options: VanillaKDOptions  # narrows Method.options (an instance of Options) for the type checker

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return self.options.l_kd > 0

    def loss(self, ctx: StepContext):
        o, valid = self.options, ctx.batch.utt_mask
        ce = masked_mean(supervised_loss(ctx.output.logits, ctx.batch, ctx.label_smoothing), valid)
        terms = {"ce": ce}
        total = ce
        if o.l_kd > 0:
            assert ctx.teacher is not None  # needs_teacher: l_kd > 0
            terms["kd"] = masked_mean(
                distill_loss(ctx.output.logits, ctx.teacher.logits, o.temperature, ctx.batch.targets is not None), valid
            )
            total = total + o.l_kd * terms["kd"]
        return total, terms
