"""``reconstruction``: a one-hidden-layer MLP imputer of the missing modalities' states, then the completed view.

What it is: a reduced stand-in for the imputation family CoRe-KD argues against (MMIN, GCNet), kept as the
cheapest member of that family; ``mmin`` (:mod:`corekd.methods.mmin`) is MMIN's imagination itself (cascaded
residual autoencoders, forward and backward) and ``gcnet`` (:mod:`corekd.methods.gcnet`) GCNet's graph
completion over the dialogue. Reports name it "MLP imputer".

The student (:class:`ReconstructionModel`) encodes the observed modalities as the plain model does
(``x`` [B, U, M, H]); one MLP (``Linear -> GELU -> dropout -> Linear``, per utterance, no dialogue context)
over the observed encodings, missing ones zeroed, and the observation mask predicts every modality's encoding
``x^`` [B, U, M, H]; the completed view keeps the observed encodings and takes ``x^`` for the missing ones, and
the shared context, fusion and head read it as if every modality were observed, at inference too.

``L = CE + l_rec * L_rec [+ l_kd * L_kd]``, ``L_rec`` per utterance the mean over the imputed
modalities (``rec_over``) of ``mean_H (x^_m - t_m)^2``, where the target ``t`` is the model's own
encoding of the complete view (a second pass of the encoders on ``batch.complete()``, in the same
train mode, dropout included), detached by default (``rec_target``): the imputation learns to hit
the encoder, the encoder is not pulled towards what the decoder can predict.

Not from a paper (all fill-ins): one hidden layer (``imputer_hidden``, default 2H); ``rec_over: all``
(every modality the data has) or ``missing`` (only those the view hides); no cascade, no backward cycle,
no graph over the dialogue; no teacher unless ``l_kd`` > 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from corekd.data.batching import Batch
from corekd.methods.base import Method, StepContext
from corekd.methods.losses import distill_loss, masked_mean, supervised_loss
from corekd.methods.registry import register
from corekd.models.dropout import Dropout
from corekd.models.model import ERCModel, ModelConfig, Output, register_architecture


def imputation_loss(
    imputed: torch.Tensor, target: torch.Tensor, selected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., M, H], [..., M, H], [..., M] bool -> (values [...], usable [...] bool).

    The mean over the selected modalities of ``mean_H (imputed - target)^2``; an utterance with no selected
    modality is not usable (value 0).
    """
    err = (imputed - target).pow(2).mean(-1)  # [..., M]
    weight = selected.to(err.dtype)
    count = weight.sum(-1)
    return (err * weight).sum(-1) / count.clamp(min=1.0), count > 0


@register_architecture
class ReconstructionModel(ERCModel):
    """The plain model plus an imputer of every modality's encoding from the observed ones."""

    architecture = "reconstruction"

    def __init__(
        self,
        cfg: ModelConfig,
        dims: dict[str, int],
        num_classes: int,
        kinds: Mapping[str, str] | None = None,
        imputer_hidden: int | None = None,
    ):
        super().__init__(cfg, dims, num_classes, kinds)  # first: the base weights are the plain model's
        h, m = cfg.hidden, len(dims)
        self.imputer_hidden = imputer_hidden or 2 * h
        self.imputer = nn.Sequential(
            nn.Linear(m * h + m, self.imputer_hidden),
            nn.GELU(),
            Dropout(cfg.dropout),
            nn.Linear(self.imputer_hidden, m * h),
        )

    def architecture_options(self) -> dict:
        return {"imputer_hidden": self.imputer_hidden}

    def impute(self, encoded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, U, M, H] encodings, [B, U, M] observed -> [B, U, M, H] imputed encodings of every modality."""
        b, u, m, h = encoded.shape
        seen = encoded * mask[..., None].to(encoded.dtype)  # the missing ones' tokens never reach the imputer
        inputs = torch.cat([seen.reshape(b, u, m * h), mask.to(encoded.dtype)], -1)  # [B, U, M*H + M]
        return self.imputer(inputs).view(b, u, m, h)

    def forward(self, batch: Batch) -> Output:
        x, mask = self.encode(batch)  # [B, U, M, H], [B, U, M]
        imputed = self.impute(x, mask)
        completed = torch.where(mask[..., None], x, imputed)  # [B, U, M, H]
        every = batch.utt_mask[..., None].expand_as(mask)  # the completed view: every modality present
        out = self.readout(completed, every, batch)
        out.extra = {"imputed": imputed}
        return out


class ReconstructionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l_rec: float = Field(1.0, ge=0, description="weight of the imputation loss (fill-in)")
    rec_target: Literal["detached", "attached"] = Field(
        "detached",
        description="the complete-view encodings as a fixed target (detached), or with gradients into the "
        "encoders too (attached)",
    )
    rec_over: Literal["all", "missing"] = Field(
        "all",
        description="fill-in: impute-and-score every modality the data has (all), or only those the view hides",
    )
    imputer_hidden: int | None = Field(
        None, ge=1, description="width of the imputer's hidden layer (null = 2 * hidden)"
    )
    l_kd: float = Field(0.0, ge=0, description="option, not in MMIN/GCNet: KD from the complete-view teacher")
    temperature: float = Field(2.0, gt=0, description="KD temperature, with l_kd")


@register
class Reconstruction(Method):
    name = "reconstruction"
    search_space: ClassVar[dict[str, dict]] = {
        "l_rec": {"float": [0.25, 4.0], "log": True},
        "rec_over": {"choice": ["all", "missing"]},
    }
    Options = ReconstructionOptions
    options: ReconstructionOptions  # narrows Method.options (an instance of Options) for the type checker

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return self.options.l_kd > 0

    def build_model(
        self, model_cfg: ModelConfig, dims: dict[str, int], num_classes: int, kinds: Mapping[str, str] | None = None
    ) -> ERCModel:
        return ReconstructionModel(model_cfg, dims, num_classes, kinds, imputer_hidden=self.options.imputer_hidden)

    def loss(self, ctx: StepContext):
        o, out, batch = self.options, ctx.output, ctx.batch
        real = batch.utt_mask
        terms = {"ce": masked_mean(supervised_loss(out.logits, batch, ctx.label_smoothing), real)}
        total = terms["ce"]
        if o.l_rec > 0:
            if o.rec_target == "detached":
                with torch.no_grad():
                    target, _ = ctx.model.encode(batch.complete())
            else:
                target, _ = ctx.model.encode(batch.complete())
            has = batch.avail & real[..., None]  # [B, U, M]: a target exists
            selected = has if o.rec_over == "all" else has & ~ctx.view.batch.mask
            values, usable = imputation_loss(out.extra["imputed"], target, selected)
            terms["rec"] = masked_mean(values, real & usable)
            total = total + o.l_rec * terms["rec"]
        if o.l_kd > 0:
            assert ctx.teacher is not None  # needs_teacher: l_kd > 0
            terms["kd"] = masked_mean(
                distill_loss(out.logits, ctx.teacher.logits, o.temperature, batch.targets is not None), real
            )
            total = total + o.l_kd * terms["kd"]
        return total, terms
