"""``mmin``: MMIN's missing modality imagination (Zhao, Li, Jin, ACL 2021) on corekd's model.

What the paper (and its release, AIM3-RUC/MMIN) does: the per-modality encodings are concatenated, the
missing ones zeroed, into ``z`` [M*H]; a cascade residual autoencoder (CRA: K autoencoder blocks; block
k reads ``a_k = a_{k-1} + d_{k-1}``, the previous block's input plus its output, with ``a_1 = z``,
``d_0 = 0``) imagines the missing side (forward imagination); a second cascade maps the imagined vector
back to the available side (backward imagination). The forward output is trained towards the encodings
of the missing modalities, taken from encoders pretrained on complete data and frozen (the release
encodes the "reverse" view: the missing modalities present, the available ones absent); the backward
output towards ``z`` (detached). Release defaults on IEMOCAP: 5 blocks of 256-128-64, a two-layer
"transition" on the cascade's output, CE + 4.0 * forward MSE + 2.0 * cycle MSE.

Here (:class:`MMINModel`): ``x`` [B, U, M, H] = the plain model's encodings, ``z`` = ``x`` with the
view's missing modalities zeroed (corekd's encoders give 0 for a missing input: the same convention);
``f = F(z)`` the imagined vector, ``g = G(f)`` the backward imagination. The completed view keeps the
observed encodings and takes ``f_m`` for the missing ones; the shared context, fusion and head read it as if
every modality were observed, at inference too, on any observed subset (as ``reconstruction``).

``L = CE + l_forward * L_forward + l_cycle * L_cycle [+ l_kd * L_kd]``, per utterance over the modalities
the data has: ``L_forward = mean_m mean_H (f_m - r_m)^2`` with the reverse target ``r_m = t_m`` for a
modality the view hides and ``0`` for one it shows (MMIN's forward imagines the missing side);
``L_cycle = mean_m mean_H (g_m - z_m)^2`` with ``z`` detached (as the release).

Fill-ins (stated in docs/configuration.md): the target ``t`` is the model's own encoding of the complete
view (a second encoder pass, detached by default), not a frozen pretrained network's: corekd's teacher
:class:`~corekd.models.model.Output` exposes its context-aware states, not its encodings, and those live in
the teacher's space, while the completed view mixes the imagination with the student's own encodings (the
students are not initialised from the teacher). The classifier reads the completed view through the shared
context, fusion and head, not MMIN's concatenated block latents (every student keeps the same head, and
per-modality states exist for the analyses). Trained on corekd's shared random-missing views, not MMIN's six
fixed conditions. A modality the data lacks gives no target and is not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from corekd.data.batching import Batch
from corekd.methods.base import Method, StepContext
from corekd.methods.losses import distill_loss, masked_mean, supervised_loss
from corekd.methods.reconstruction import imputation_loss
from corekd.methods.registry import register
from corekd.models.model import ERCModel, ModelConfig, Output, register_architecture

MMIN_BLOCK_HIDDEN = (256, 128, 64)  # the release's AE_layers on IEMOCAP (its input: 3 x 128, corekd's default M*H)


class AutoencoderBlock(nn.Module):
    """One block of the cascade: [..., D] -> (output [..., D], latent [..., hidden[-1]]).

    Encoder: Linear + LeakyReLU per width of ``hidden``, the last Linear without activation; decoder: the
    widths reversed, Linear + ReLU, then a Linear back to D (the release's shape, no dropout in its cascade).
    """

    def __init__(self, dim: int, hidden: Sequence[int]):
        super().__init__()
        widths = [dim, *hidden]
        enc: list[nn.Module] = []
        for i in range(len(hidden)):
            enc += [nn.Linear(widths[i], widths[i + 1]), nn.LeakyReLU()]
        self.encoder = nn.Sequential(*enc[:-1])
        back = widths[::-1]
        dec: list[nn.Module] = []
        for i in range(len(hidden)):
            dec += [nn.Linear(back[i], back[i + 1]), nn.ReLU()]
        self.decoder = nn.Sequential(*dec[:-1])

    def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.encoder(a)
        return self.decoder(latent), latent


class ResidualCascade(nn.Module):
    """K autoencoder blocks with residual inputs: [..., D] -> (output [..., D], latents [..., K * hidden[-1]]).

    ``a_1 = z``, ``d_0 = 0``; block k reads ``a_k = a_{k-1} + d_{k-1}`` and gives ``d_k``; the output is
    ``a_K + d_K`` (= ``z + sum_k d_k``), through the transition ``Linear -> ReLU -> Linear`` if ``transition``.
    A block whose decoder gives 0 passes its input on unchanged.
    """

    def __init__(self, dim: int, hidden: Sequence[int], blocks: int, transition: bool):
        super().__init__()
        self.blocks = nn.ModuleList(AutoencoderBlock(dim, hidden) for _ in range(blocks))
        self.transition = (
            nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim)) if transition else nn.Identity()
        )

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, d = z, torch.zeros_like(z)
        latents = []
        for block in self.blocks:
            a = a + d
            d, latent = block(a)
            latents.append(latent)
        return self.transition(a + d), torch.cat(latents, -1)


@register_architecture
class MMINModel(ERCModel):
    """The plain model plus MMIN's forward and backward imagination cascades over the concatenated encodings."""

    architecture = "mmin"

    def __init__(
        self,
        cfg: ModelConfig,
        dims: dict[str, int],
        num_classes: int,
        kinds: Mapping[str, str] | None = None,
        blocks: int = 5,
        block_hidden: Sequence[int] = MMIN_BLOCK_HIDDEN,
        transition: bool = True,
        share_backward: bool = False,
    ):
        super().__init__(cfg, dims, num_classes, kinds)  # first: the base weights are the plain model's
        width = len(dims) * cfg.hidden  # M * H
        self.blocks, self.block_hidden = blocks, [int(w) for w in block_hidden]
        self.transition, self.share_backward = transition, share_backward
        self.forward_cascade = ResidualCascade(width, self.block_hidden, blocks, transition)
        self.backward_cascade = (
            self.forward_cascade if share_backward else ResidualCascade(width, self.block_hidden, blocks, transition)
        )

    def architecture_options(self) -> dict:
        return {
            "blocks": self.blocks,
            "block_hidden": list(self.block_hidden),
            "transition": self.transition,
            "share_backward": self.share_backward,
        }

    def imagine(self, encoded: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, U, M, H] encodings, [B, U, M] observed -> (input z, imagined f, backward g), each [B, U, M, H]."""
        b, u, m, h = encoded.shape
        z = encoded * mask[..., None].to(encoded.dtype)  # the missing ones never reach the cascades
        imagined, _ = self.forward_cascade(z.reshape(b, u, m * h))  # [B, U, M*H]
        backward, _ = self.backward_cascade(imagined)  # [B, U, M*H]
        return z, imagined.view(b, u, m, h), backward.view(b, u, m, h)

    def forward(self, batch: Batch) -> Output:
        x, mask = self.encode(batch)  # [B, U, M, H], [B, U, M]
        seen, imagined, backward = self.imagine(x, mask)
        completed = torch.where(mask[..., None], x, imagined)  # [B, U, M, H]: observed encodings kept
        every = batch.utt_mask[..., None].expand_as(mask)  # the completed view: every modality present
        out = self.readout(completed, every, batch)
        out.extra = {"seen": seen, "imagined": imagined, "backward": backward}
        return out


def missing_side(target: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """[..., M, H] complete-view encodings, [..., M] observed -> the forward target r [..., M, H]: the encoding
    where the view hides the modality, 0 where it shows it (MMIN's forward imagines the missing side)."""
    return target * (~observed)[..., None].to(target.dtype)


class MMINOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l_forward: float = Field(4.0, ge=0, description="weight of the forward imagination MSE (MMIN's release: 4.0)")
    l_cycle: float = Field(2.0, ge=0, description="weight of the backward (cycle) imagination MSE (release: 2.0)")
    blocks: int = Field(5, ge=1, description="autoencoder blocks per cascade (MMIN: 5); recorded in the checkpoint")
    block_hidden: list[int] = Field(
        list(MMIN_BLOCK_HIDDEN),
        min_length=1,
        description="each block's encoder widths, the decoder mirrors them (release: 256, 128, 64 for a 3 x 128 "
        "input); recorded in the checkpoint",
    )
    transition: bool = Field(True, description="the release's Linear-ReLU-Linear on each cascade's output")
    share_backward: bool = Field(False, description="one cascade for both directions (the release's share_weight)")
    target: Literal["detached", "attached"] = Field(
        "detached",
        description="fill-in: the forward target is the model's own complete-view encodings, fixed (detached, as "
        "MMIN's frozen pretrained encoders) or with gradients into the encoders (attached)",
    )
    l_kd: float = Field(0.0, ge=0, description="option, not in MMIN: KD from the complete-view teacher")
    temperature: float = Field(2.0, gt=0, description="KD temperature, with l_kd")

    @field_validator("block_hidden")
    @classmethod
    def _positive_widths(cls, value: list[int]) -> list[int]:
        if any(w < 1 for w in value):
            raise ValueError(f"block_hidden {value} must hold positive widths")
        return value


@register
class MMIN(Method):
    name = "mmin"
    Options = MMINOptions
    options: MMINOptions  # narrows Method.options (an instance of Options) for the type checker
    search_space: ClassVar[dict[str, dict]] = {
        "l_forward": {"float": [0.1, 10.0], "log": True},
        "l_cycle": {"float": [0.1, 10.0], "log": True},
        "blocks": {"int": [1, 5]},
    }

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return self.options.l_kd > 0

    def build_model(
        self, model_cfg: ModelConfig, dims: dict[str, int], num_classes: int, kinds: Mapping[str, str] | None = None
    ) -> ERCModel:
        o = self.options
        return MMINModel(
            model_cfg,
            dims,
            num_classes,
            kinds,
            blocks=o.blocks,
            block_hidden=o.block_hidden,
            transition=o.transition,
            share_backward=o.share_backward,
        )

    def loss(self, ctx: StepContext):
        o, out, batch = self.options, ctx.output, ctx.batch
        real = batch.utt_mask
        terms = {"ce": masked_mean(supervised_loss(out.logits, batch, ctx.label_smoothing), real)}
        total = terms["ce"]
        has = batch.avail & real[..., None]  # [B, U, M]: the data has the modality (a target exists)
        if o.l_forward > 0:
            if o.target == "detached":
                with torch.no_grad():
                    target, _ = ctx.model.encode(batch.complete())  # [B, U, M, H]
            else:
                target, _ = ctx.model.encode(batch.complete())
            reverse = missing_side(target, ctx.view.batch.mask)  # [B, U, M, H]
            values, usable = imputation_loss(out.extra["imagined"], reverse, has)
            terms["forward"] = masked_mean(values, real & usable)
            total = total + o.l_forward * terms["forward"]
        if o.l_cycle > 0:
            # towards the available side z, as the cascade read it (detached, as MMIN's release)
            values, usable = imputation_loss(out.extra["backward"], out.extra["seen"].detach(), has)
            terms["cycle"] = masked_mean(values, real & usable)
            total = total + o.l_cycle * terms["cycle"]
        if o.l_kd > 0:
            assert ctx.teacher is not None  # needs_teacher: l_kd > 0
            terms["kd"] = masked_mean(
                distill_loss(out.logits, ctx.teacher.logits, o.temperature, batch.targets is not None), real
            )
            total = total + o.l_kd * terms["kd"]
        return total, terms
