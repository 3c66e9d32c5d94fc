"""``corekd``: CoRe-KD, Complete-view Reference-guided Knowledge Distillation.

``L = CE + l_kd * L_kd + l_state * L_state + l_mstate * L_mstate + l_nce * L_nce``

- CSA (Complete-view State Anchoring) ties the incomplete-view student to the frozen teacher's
  complete view of the same utterances: predictions (``L_kd``), fused state (``L_state``) and
  modality-specific states (``L_mstate``).
- NCE (Nonverbal Conflict Exposure): with probability ``nce_prob`` an utterance's acoustic and/or
  visual input is swapped for a different-label donor's while its language is kept (by default
  only utterances whose language the student observes are targets); ``L_nce`` is the CE of the
  student's prediction on that conflict view against the target's own label.

A weight of 0 switches its term off: it is not computed (the paper's ablations are configs).

``nce_mode``: ``separate`` (the default, the paper's objective) keeps the conflict view an extra
view: CE and CSA apply to the incomplete view of every utterance, selected ones included, and
``L_nce`` to a copy of the view with the conflicts; both views go through the student in one
stacked forward (``Batch.stack``: rows are independent dialogues, so the donors' features reach
no utterance of the clean view). ``inline`` is an approximation kept as an option: the conflicts
go into the training view itself, so selected utterances lose their CE and CSA terms and the other
utterances of their dialogues are trained under a context that holds donor features.

The other fill-ins, each an option: ``nce_targets`` (which utterances can be targets),
``nce_donor_source`` (the donor's nonverbal features as the data has them, or as the student's
own incomplete view has them) and ``nce_average`` (NCE terms averaged over the targets, or summed
over the targets and divided by the real utterances, so a target weighs what a clean one does).
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator

from corekd.data.batching import Batch
from corekd.methods.base import Method, StepContext, TrainView
from corekd.methods.losses import (
    StateDistance,
    conflict_margin,
    distill_loss,
    masked_mean,
    modality_anchor,
    state_anchor,
    supervised_loss,
)
from corekd.methods.nce import nce_view
from corekd.methods.registry import register
from corekd.models.model import ModelConfig, Output, states_depend_on_view


class CoReKDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l_kd: float = Field(1.0, ge=0, description="weight of L_kd (prediction-level reference)")
    l_state: float = Field(0.5, ge=0, description="weight of L_state (fused-state anchoring)")
    l_mstate: float = Field(0.5, ge=0, description="weight of L_mstate (modality-specific-state anchoring)")
    l_nce: float = Field(1.0, ge=0, description="weight of L_nce (CE on conflict views)")
    temperature: float = Field(2.0, gt=0, description="KD temperature T (fill-in)")
    state_distance: StateDistance = Field("normalized_sq", description="distance for L_state and L_mstate (fill-in)")
    mstate_over: Literal["observed", "all"] = Field(
        "observed",
        description="fill-in: modalities L_mstate averages over: those the student observes, or all (a "
        "hidden modality's state, which a view-dependent backbone computes from the rest of the view, is anchored too)",
    )
    nce_prob: float = Field(
        0.2,
        ge=0,
        le=1,
        description="share of a batch's real utterances that get a conflict view, "
        "in expectation: eligible utterances are drawn with nce_prob x real / eligible (capped at 1; "
        "the history's nce_share is the realised share, nce_capped the share of batches at the cap)",
    )
    nce_types: list[str] = Field(default_factory=lambda: ["a", "v", "av"], min_length=1, description="conflict types")
    nce_targets: Literal["language_observed", "all"] = Field(
        "language_observed",
        description="fill-in: which utterances can be conflict targets: those whose language the student's view "
        "observes (a view without the target's language preserves nothing of it), or every utterance",
    )
    nce_mode: Literal["separate", "inline"] = Field(
        "separate",
        description="separate: the conflict copy is an extra view (CE and CSA on every utterance of the "
        "incomplete view; one stacked forward); inline: conflicts inside the training view (an approximation)",
    )
    nce_donor_source: Literal["complete", "view"] = Field(
        "complete",
        description="fill-in: the donor's swapped modalities as the data has them (complete), or as the "
        "student's incomplete view has them (a modality the view hides is swapped in as missing)",
    )
    nce_average: Literal["targets", "utterances"] = Field(
        "utterances",
        description="fill-in: the NCE terms' mean over the conflict targets, or their sum over the targets "
        "divided by the real utterances of the batch (a target then weighs what a clean utterance weighs)",
    )
    l_nce_kd: float = Field(
        0.0, ge=0, description="option, off in the paper: KD from the teacher's complete view on conflict views"
    )
    l_nce_margin: float = Field(
        0.0, ge=0, description="option, off in the paper: margin of target over donor label on conflict views"
    )
    nce_margin: float = Field(1.0, ge=0, description="margin (in log-probability) for l_nce_margin")

    @field_validator("nce_types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        for t in value:
            if t not in ("a", "v", "av"):
                raise ValueError(f"conflict type '{t}' is not one of a, v, av")
        if len(set(value)) != len(value):
            raise ValueError("conflict types must not repeat")
        return value

    @property
    def nce_on(self) -> bool:
        return self.nce_prob > 0 and (self.l_nce > 0 or self.l_nce_kd > 0 or self.l_nce_margin > 0)


@register
class CoReKD(Method):
    name = "corekd"
    search_space: ClassVar[dict[str, dict]] = {
        "l_kd": {"float": [0.25, 4.0], "log": True},
        "l_state": {"float": [0.1, 2.0], "log": True},
        "l_mstate": {"float": [0.1, 2.0], "log": True},
        "l_nce": {"float": [0.25, 4.0], "log": True},
        "nce_prob": {"float": [0.05, 0.5]},
    }
    Options = CoReKDOptions
    options: CoReKDOptions  # narrows Method.options (an instance of Options) for the type checker

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        o = self.options
        return any(w > 0 for w in (o.l_kd, o.l_state, o.l_mstate, o.l_nce_kd))

    def check_modalities(self, modalities: tuple[str, ...]) -> tuple[str, str] | None:
        o = self.options
        if not o.nce_on:
            return None
        bad = [t for t in o.nce_types if any(m not in modalities for m in t)]
        if bad:
            return "nce_types", (
                f"conflict types {bad} need modalities the corpus does not have (it has {list(modalities)}); "
                "list only types of its nonverbal modalities, or switch NCE off with l_nce: 0"
            )
        return None

    def check_model(self, model: ModelConfig) -> tuple[str, str] | None:
        if self.options.l_mstate > 0 and not states_depend_on_view(model):
            return "l_mstate", (
                f"L_mstate anchors modality states that cannot depend on the view under this backbone (model."
                f"modality_state '{model.modality_state}' with context_over '{model.context_over}': each h_m is its "
                "modality's context-free encoding); use model.modality_state: context or crossmodal (or context_over: "
                "modality with a context), or set l_mstate: 0"
            )
        return None

    def check_task(self, task: str) -> tuple[str, str] | None:
        if task == "regression" and self.options.l_nce_margin > 0:
            return (
                "l_nce_margin",
                "the conflict margin compares class log-probabilities; it has no regression form (set 0)",
            )
        return None

    def train_view(self, batch: Batch, mask_generator: torch.Generator, generator: torch.Generator) -> TrainView:
        o = self.options
        view = super().train_view(batch, mask_generator, generator)
        if not o.nce_on:
            return view
        source = batch if o.nce_donor_source == "complete" else view.batch
        conflict = nce_view(
            view.batch,
            source,
            o.nce_prob,
            tuple(o.nce_types),
            generator,
            require_language=o.nce_targets == "language_observed",
        )
        if o.nce_mode == "inline":
            return TrainView(conflict.batch, {"conflict": conflict})
        return TrainView(view.batch, {"conflict": conflict})

    def forward_input(self, view: TrainView) -> Batch:
        conflict = view.extra.get("conflict")
        if conflict is None or self.options.nce_mode == "inline":
            return view.batch
        return Batch.stack([view.batch, conflict.batch])  # one forward for both views

    def forward_output(self, output: Output, view: TrainView) -> Output:
        if output.logits.shape[0] == view.batch.size:  # the view alone
            return output
        clean, with_conflicts = output.split(view.batch.size)
        view.extra["conflict_output"] = with_conflicts
        return clean

    def stats(self, ctx: StepContext) -> dict[str, torch.Tensor]:
        """The realised share of conflict targets among the batch's real utterances, and whether the cap bound."""
        conflict = ctx.view.extra.get("conflict")
        if conflict is None:
            return {}
        valid = ctx.batch.utt_mask
        return {
            "nce_share": (conflict.selected & valid).sum() / valid.sum().clamp(min=1),
            "nce_capped": torch.tensor(float(conflict.capped), device=valid.device),
        }

    def loss(self, ctx: StepContext):
        # the teacher is read only under a positive weight that needs_teacher lists, when the trainer passes it
        o, out, teacher = self.options, ctx.output, cast(Output, ctx.teacher)
        labels, valid = ctx.batch.labels, ctx.batch.utt_mask
        regression = ctx.batch.targets is not None
        conflict = ctx.view.extra.get("conflict")
        clean = valid & ~conflict.selected if conflict is not None and o.nce_mode == "inline" else valid

        terms = {"ce": masked_mean(supervised_loss(out.logits, ctx.batch, ctx.label_smoothing), clean)}
        total = terms["ce"]
        if o.l_kd > 0:
            terms["kd"] = masked_mean(distill_loss(out.logits, teacher.logits, o.temperature, regression), clean)
            total = total + o.l_kd * terms["kd"]
        if o.l_state > 0:
            terms["state"] = masked_mean(state_anchor(out.fused, teacher.fused, o.state_distance), clean)
            total = total + o.l_state * terms["state"]
        if o.l_mstate > 0:
            values, usable = modality_anchor(
                out.states, teacher.states, ctx.view.batch.mask, o.state_distance, o.mstate_over
            )
            terms["mstate"] = masked_mean(values, clean & usable)
            total = total + o.l_mstate * terms["mstate"]
        if conflict is not None:
            # inline: the training view itself; separate: the stacked forward's second half, or (loss called on its
            # own) a forward of the conflict copy
            c_out = out if o.nce_mode == "inline" else ctx.view.extra.get("conflict_output")
            if c_out is None:
                c_out = ctx.model(conflict.batch)
            selected = conflict.selected
            # targets: the mean over the targets; utterances: the targets' sum over the batch's real utterances
            scale = 1.0 if o.nce_average == "targets" else selected.sum() / valid.sum().clamp(min=1)

            def nce_mean(values: torch.Tensor) -> torch.Tensor:
                return masked_mean(values, selected) * scale

            if o.l_nce > 0:
                terms["nce"] = nce_mean(supervised_loss(c_out.logits, ctx.batch))
                total = total + o.l_nce * terms["nce"]
            if o.l_nce_kd > 0:
                terms["nce_kd"] = nce_mean(distill_loss(c_out.logits, teacher.logits, o.temperature, regression))
                total = total + o.l_nce_kd * terms["nce_kd"]
            if o.l_nce_margin > 0:
                donor_labels = labels.reshape(-1)[conflict.donor.clamp(min=0)]  # [B, U]
                margin = conflict_margin(F.log_softmax(c_out.logits, -1), labels, donor_labels, o.nce_margin)
                terms["nce_margin"] = nce_mean(margin)
                total = total + o.l_nce_margin * terms["nce_margin"]
        return total, terms
