"""``contrastive_view``: a student restricted to one modality subset, taught by the multimodal teacher (``seeds/002``).

``L = CE + l_contrast * L_contrast``

The student always sees only the modalities in ``modalities`` (e.g. ``[a]``, the acoustic-only
network of the multi-view paper): its training view and its dev masks keep exactly those (as far
as the data has them), with no random missing on top. ``L_contrast`` is an InfoNCE loss over the
batch's real utterances: the student's fused state of utterance i is pulled towards the frozen
teacher's fused state of the same utterance on the complete view, and pushed from the teacher's
states of the batch's other utterances (cosine similarity over ``temperature``).

It is evaluated on its own subset only: the condition that keeps exactly ``modalities``
(``fixed:<subset>``, or ``complete`` when the subset is every modality of the corpus); every
other condition is recorded and reported as not applicable (``Method.not_applicable``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from corekd.data.batching import Batch
from corekd.data.protocols import Condition, fixed_mask
from corekd.methods.base import Method, StepContext, TrainView
from corekd.methods.batch_losses import info_nce
from corekd.methods.losses import masked_mean, supervised_loss
from corekd.methods.registry import register


class ContrastiveViewOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modalities: list[str] = Field(
        default_factory=lambda: ["a"],
        min_length=1,
        description="the modality subset the student sees, in training and evaluation (the paper: acoustic only, [a])",
    )
    l_contrast: float = Field(1.0, ge=0, description="weight of the contrastive term (fill-in: the source gives none)")
    temperature: float = Field(
        0.1,
        gt=0,
        description="fill-in: InfoNCE temperature on cosine similarities (the source names a contrastive "
        "loss without its form)",
    )

    @field_validator("modalities")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("modalities must not repeat")
        return value


@register
class ContrastiveView(Method):
    name = "contrastive_view"
    search_space: ClassVar[dict[str, dict]] = {
        "l_contrast": {"float": [0.25, 4.0], "log": True},
        "temperature": {"float": [0.05, 0.5], "log": True},
    }
    Options = ContrastiveViewOptions
    options: ContrastiveViewOptions  # narrows Method.options (an instance of Options) for the type checker

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return self.options.l_contrast > 0

    def subset(self, modalities: tuple[str, ...]) -> tuple[str, ...]:
        """The student's modalities in corpus order."""
        return tuple(m for m in modalities if m in self.options.modalities)

    def own_condition(self, modalities: tuple[str, ...]) -> Condition:
        keep = self.subset(modalities)
        return Condition("complete") if len(keep) == len(modalities) else Condition("fixed", keep=keep)

    def check_modalities(self, modalities: tuple[str, ...]) -> tuple[str, str] | None:
        unknown = [m for m in self.options.modalities if m not in modalities]
        if unknown:
            return "modalities", (
                f"{unknown} are not modalities of the corpus (it has {list(modalities)}); list a subset of them"
            )
        return None

    def _restrict(self, avail: torch.Tensor, modalities: tuple[str, ...]) -> torch.Tensor:
        # avail: [..., M] bool -> what the data has of the student's subset
        return fixed_mask(avail, self.subset(modalities), modalities)

    def train_view(self, batch: Batch, mask_generator: torch.Generator, generator: torch.Generator) -> TrainView:
        return TrainView(batch.view(self._restrict(batch.avail, batch.modalities)))

    def dev_masks(
        self, avail: torch.Tensor, generator: torch.Generator, modalities: tuple[str, ...] = ()
    ) -> torch.Tensor:
        if not modalities:
            raise ValueError("contrastive_view's dev masks need the corpus's modality names")
        return self._restrict(avail, modalities)

    def not_applicable(self, condition: Condition, modalities: tuple[str, ...]) -> str | None:
        own = self.own_condition(modalities)
        if condition == own:
            return None
        return (
            f"this student sees only {{{','.join(self.subset(modalities))}}} and is scored under {own.name} only "
            "(the contrastive_view method)"
        )

    def loss(self, ctx: StepContext):
        o, valid = self.options, ctx.batch.utt_mask  # [B, U]
        terms = {"ce": masked_mean(supervised_loss(ctx.output.logits, ctx.batch, ctx.label_smoothing), valid)}
        total = terms["ce"]
        if o.l_contrast > 0:
            assert ctx.teacher is not None  # needs_teacher: l_contrast > 0
            s_h, t_h = ctx.output.fused[valid], ctx.teacher.fused[valid]  # [N, H]
            terms["contrast"] = masked_mean(
                info_nce(s_h, t_h, o.temperature), torch.ones(s_h.shape[0], device=s_h.device)
            )
            total = total + o.l_contrast * terms["contrast"]
        return total, terms
