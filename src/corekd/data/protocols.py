"""Missing-modality protocols as data: a :class:`Condition` turns into seeded masks.

Condition names (used in configs, ``results.json`` and reports):
``complete``; ``fixed:l`` ``fixed:a`` ``fixed:v`` ``fixed:la`` ``fixed:lv`` ``fixed:av`` (the
modalities kept); ``random:P`` (random modality-feature missing at rate P); ``frames:P``
(intra-modality frame missing: a share P of each observed sequence modality's frames is dropped,
every modality observed; only for corpora with sequence modalities).

Random missing keeps at least one modality per utterance. Two schemes:
- ``calibrated`` (default, the GCNet convention): one modality, chosen uniformly among those the
  data has, is always kept; every other one is kept independently with probability
  ``q = (k(1-p) - 1) / (k - 1)`` (k = modalities available), so the expected missing rate is
  exactly ``p``. With k modalities at most ``(k-1)/k`` can be missing while keeping one: above
  that (p > 2/3 for three) every utterance keeps exactly one and the realised rate is ``(k-1)/k``.
- ``redraw``: each modality dropped independently with probability ``p``; an utterance left with
  none is drawn again. Simple, but the realised rate falls below ``p`` (0.43 at p = 0.5).
Every mask is a pure function of its seed parts: the same for every method of a run.

Frame missing (:func:`frame_keep_masks`) uses the calibrated scheme within an utterance: of an
utterance's n frames one, chosen uniformly, is always kept and every other is kept with probability
``(n(1-p) - 1) / (n - 1)``, so the expected share dropped is exactly p while p <= (n-1)/n (above
that, one frame is kept); an utterance with one frame loses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal, cast

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from corekd.errors import CorekdError
from corekd.seeding import torch_generator

RandomScheme = Literal["calibrated", "redraw"]


@dataclass(frozen=True)
class Condition:
    kind: Literal["complete", "fixed", "random", "frames"]
    keep: tuple[str, ...] = ()  # fixed: modalities kept, in corpus order
    rate: float = 0.0  # random: modality missing rate; frames: frame missing rate

    @property
    def name(self) -> str:
        if self.kind == "complete":
            return "complete"
        if self.kind == "fixed":
            return "fixed:" + "".join(self.keep)
        return f"{self.kind}:{self.rate:g}" if self.rate != int(self.rate) else f"{self.kind}:{self.rate:.1f}"

    @classmethod
    def parse(cls, name: str, modalities: tuple[str, ...] = ("l", "a", "v")) -> Condition:
        """``complete`` | ``fixed:<modalities>`` | ``random:<rate in [0, 1)>`` | ``frames:<rate in [0, 1)>``."""
        text = name.strip()
        if text == "complete":
            return cls("complete")
        kind, _, arg = text.partition(":")
        if kind == "fixed":
            keep = tuple(m for m in modalities if m in arg)
            if not arg or len(keep) != len(arg) or len(set(arg)) != len(arg):
                raise CorekdError(
                    f"bad condition '{name}': expected fixed:<one or more of {''.join(modalities)}>, e.g. fixed:la"
                )
            return cls("fixed", keep=keep)
        if kind in ("random", "frames"):
            try:
                rate = float(arg)
            except ValueError:
                rate = math.nan
            if not 0.0 <= rate < 1.0:
                raise CorekdError(f"bad condition '{name}': expected {kind}:<rate in [0, 1)>, e.g. {kind}:0.5")
            return cls(cast(Literal["random", "frames"], kind), rate=round(rate, 6))
        raise CorekdError(
            f"unknown condition '{name}': expected complete, fixed:<modalities>, random:<rate> or frames:<rate>"
        )


def fixed_subsets(modalities: tuple[str, ...]) -> list[Condition]:
    """Every proper non-empty subset, singles first, in corpus order: l, a, v, la, lv, av."""
    return [Condition("fixed", keep=keep) for k in range(1, len(modalities)) for keep in combinations(modalities, k)]


def standard_conditions(
    modalities: tuple[str, ...], rates: Sequence[float], frame_rates: Sequence[float] = ()
) -> list[Condition]:
    """complete, the fixed subsets, ``random:p`` per rate, then ``frames:p`` per frame rate (pass none for a corpus
    without sequence modalities)."""
    return [
        Condition("complete"),
        *fixed_subsets(modalities),
        *(Condition("random", rate=r) for r in rates),
        *(Condition("frames", rate=r) for r in frame_rates),
    ]


def fixed_mask(avail: torch.Tensor, keep: tuple[str, ...], modalities: tuple[str, ...]) -> torch.Tensor:
    """``avail`` [..., M] restricted to the kept modalities."""
    unknown = set(keep) - set(modalities)
    if unknown:
        raise CorekdError(f"condition keeps {sorted(unknown)}, but the corpus has only {list(modalities)}")
    keep_vec = torch.tensor([m in keep for m in modalities], dtype=torch.bool, device=avail.device)
    return avail & keep_vec


def random_mask(
    avail: torch.Tensor,
    rate: float | torch.Tensor,
    generator: torch.Generator,
    scheme: RandomScheme = "calibrated",
) -> torch.Tensor:
    """Drop available (utterance, modality) entries at ``rate``, keeping >= 1 per utterance.

    ``avail`` [..., M] bool; ``rate`` a float or a tensor broadcastable to ``avail.shape[:-1]``.
    Draws on the CPU generator and returns on ``avail``'s device.
    """
    device = avail.device
    avail = avail.detach().to("cpu", torch.bool)
    rate_t = torch.as_tensor(rate, dtype=torch.float64).expand(avail.shape[:-1])
    if bool(((rate_t < 0) | (rate_t >= 1)).any()):
        raise CorekdError(f"missing rate must lie in [0, 1), got {rate}")
    has_any = avail.any(-1)  # [...]: rows the data gives something for (padding has nothing)
    if scheme == "calibrated":
        k = avail.sum(-1).to(torch.float64)
        score = torch.rand(avail.shape, generator=generator, dtype=torch.float64)
        score = score.masked_fill(~avail, -1.0)
        guaranteed = torch.nn.functional.one_hot(score.argmax(-1), avail.shape[-1]).bool() & avail
        q = ((k * (1 - rate_t) - 1) / (k - 1).clamp(min=1)).clamp(0, 1)
        extra = torch.rand(avail.shape, generator=generator, dtype=torch.float64) < q[..., None]
        mask = guaranteed | (avail & extra)
    elif scheme == "redraw":
        mask = avail & (torch.rand(avail.shape, generator=generator, dtype=torch.float64) >= rate_t[..., None])
        empty = has_any & ~mask.any(-1)
        while bool(empty.any()):
            draw = torch.rand(avail.shape, generator=generator, dtype=torch.float64) >= rate_t[..., None]
            mask = torch.where(empty[..., None], avail & draw, mask)
            empty = has_any & ~mask.any(-1)
    else:
        raise CorekdError(f"unknown random-missing scheme '{scheme}': expected calibrated or redraw")
    return mask.to(device)


def condition_mask(
    condition: Condition,
    avail: torch.Tensor,
    modalities: tuple[str, ...],
    generator: torch.Generator | None = None,
    scheme: RandomScheme = "calibrated",
) -> torch.Tensor:
    if condition.kind == "complete":
        return avail.clone()
    if condition.kind == "fixed":
        return fixed_mask(avail, condition.keep, modalities)
    if condition.kind == "frames":  # every modality observed; the frames are dropped by frame_keep_masks
        return avail.clone()
    if generator is None:
        raise ValueError("a random condition needs a generator")
    return random_mask(avail, condition.rate, generator, scheme)


def split_condition_mask(
    condition: Condition,
    avail: torch.Tensor,
    modalities: tuple[str, ...],
    mask_seed: int,
    split: str,
    scheme: RandomScheme = "calibrated",
) -> torch.Tensor:
    """The evaluation mask of one condition on one split: a function of (seed, split, condition) only."""
    gen = torch_generator("eval-mask", mask_seed, split, condition.name, scheme)
    return condition_mask(condition, avail, modalities, gen, scheme)


def frame_keep_masks(
    present: dict[str, torch.Tensor],
    rate: float | torch.Tensor,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Random intra-modality frame missing: m -> [..., F] bool, the frames to keep (for :meth:`Batch.drop_frames`).

    ``present``: m -> [..., F] bool, the frames there are (e.g. ``Batch.frame_mask`` or
    ``SplitTensors.frame_presence()``); ``rate``: the share of each utterance's frames to drop, a float
    or a tensor broadcastable to ``present[m].shape[:-1]`` (e.g. one rate per row). Calibrated per utterance
    (module docstring): one present frame, chosen uniformly, is always kept, so an utterance with frames
    keeps at least one. Modalities are drawn in the order of ``present`` from the CPU ``generator``; the
    masks are returned on each ``present[m]``'s device.
    """
    out = {}
    for m, has in present.items():
        device = has.device
        has = has.detach().to("cpu", torch.bool)
        rate_t = torch.as_tensor(rate, dtype=torch.float64).expand(has.shape[:-1])
        if bool(((rate_t < 0) | (rate_t >= 1)).any()):
            raise CorekdError(f"frame missing rate must lie in [0, 1), got {rate}")
        n = has.sum(-1).to(torch.float64)  # [...]
        score = torch.rand(has.shape, generator=generator, dtype=torch.float64).masked_fill(~has, -1.0)
        guaranteed = torch.nn.functional.one_hot(score.argmax(-1), has.shape[-1]).bool() & has
        q = ((n * (1 - rate_t) - 1) / (n - 1).clamp(min=1)).clamp(0, 1)
        extra = torch.rand(has.shape, generator=generator, dtype=torch.float64) < q[..., None]
        out[m] = (guaranteed | (has & extra)).to(device)
    return out


def split_frame_keep(
    condition: Condition, present: dict[str, torch.Tensor], mask_seed: int, split: str
) -> dict[str, torch.Tensor]:
    """The frames a ``frames:p`` condition keeps on one split: m -> [N, U, F] bool, a function of (seed, split,
    condition) only (``present``: ``SplitTensors.frame_presence()``), so every method sees the same frames."""
    if condition.kind != "frames":
        raise ValueError(f"condition {condition.name} drops no frames")
    gen = torch_generator("eval-frames", mask_seed, split, condition.name)
    return frame_keep_masks(present, condition.rate, gen)


def frame_missing_rate(keep: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> float:
    """Share of the frames there are (``present``, all sequence modalities together) that ``keep`` drops."""
    total = sum(int(p.sum()) for p in present.values())
    dropped = sum(int((p & ~keep[m][..., : p.shape[-1]]).sum()) for m, p in present.items())
    return dropped / total if total else 0.0


def training_rate_masks(
    avail: torch.Tensor,
    low: float,
    high: float,
    generator: torch.Generator,
    scheme: RandomScheme = "calibrated",
    per: Literal["batch", "row"] = "batch",
) -> torch.Tensor:
    """Masks of the training distribution: a rate ~ U[low, high] per batch (or per row), then random missing."""
    shape = () if per == "batch" else avail.shape[:1] + (1,) * (avail.dim() - 2)
    rate = low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    return random_mask(avail, rate, generator, scheme)


def missing_rate(mask: torch.Tensor, avail: torch.Tensor) -> float:
    """Share of available (utterance, modality) entries that ``mask`` hides."""
    total = int(avail.sum())
    return float((avail & ~mask).sum()) / total if total else 0.0


class TrainingMissing(BaseModel):
    """The random-missing distribution a student trains under (and its dev split is scored under)."""

    model_config = ConfigDict(extra="forbid")

    low: float = Field(0.0, ge=0, lt=1, description="lowest missing rate drawn per batch")
    high: float = Field(0.7, ge=0, lt=1, description="highest missing rate drawn per batch")
    scheme: RandomScheme = "calibrated"

    @model_validator(mode="after")
    def _ordered(self) -> TrainingMissing:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self

    def masks(
        self, avail: torch.Tensor, generator: torch.Generator, per: Literal["batch", "row"] = "batch"
    ) -> torch.Tensor:
        return training_rate_masks(avail, self.low, self.high, generator, self.scheme, per)
