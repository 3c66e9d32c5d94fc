"""Missing-modality protocols as data: a :class:`Condition` turns into seeded masks.

Condition names (used in configs, ``results.json`` and reports):
``complete``; ``fixed:l`` ``fixed:a`` ``fixed:v`` ``fixed:la`` ``fixed:lv`` ``fixed:av`` (the
modalities kept); ``random:P`` (random modality-feature missing at rate P); ``frames:P``
(intra-modality frame missing: a share P of each observed sequence modality's frames is dropped,
every modality observed; only for corpora with sequence modalities); ``imbalanced:R1,R2,...`` (one
missing rate per corpus modality, in corpus order); ``burst:P`` (missing runs over consecutive
utterances); ``features:P`` (a share P of each observed vector modality's feature dimensions zeroed).

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
that, one frame is kept); an utterance with one frame loses nothing (``frame_scheme: keep_one``, the default).
``frame_scheme: independent`` drops every frame independently with probability p instead: exactly p in
expectation for every length, and a sequence may lose all its frames (it then counts as missing); an utterance
left with no modality at all gets one frame of one of its sequences back. At p = 1 every frame of every
sequence is dropped and the modality counts as missing for that utterance (:func:`frames_mask`); a
vector modality is untouched, so on a corpus where every modality is a sequence nothing is observed and
``frames:1.0`` is not applicable.

Imbalanced missing (:func:`imbalanced_mask`): modality j is dropped independently with its own rate
r_j. An utterance left with no modality keeps one of its available modalities, drawn with probability
proportional to its keep probability 1 - r_j. With every modality available the realised rate of j is
``r_j - prod_i r_i * (1 - r_j) / sum_i (1 - r_i)`` (e.g. 0.5955 for r = (0.6, 0.15, 0.15)); the records
carry the realised rate per modality.

Burst missing (:func:`burst_mask`): per dialogue and modality a two-state Markov chain over the
utterances, missing runs of mean length L: P(missing -> missing) = 1 - 1/L, P(missing -> observed) = 1/L,
P(observed -> missing) = p / (L (1 - p)), which is a probability only while p <= L / (L + 1) (refused
above). The first utterance's state is drawn from the stationary law, so every utterance is missing with
probability p. An utterance whose available modalities are all in a missing run keeps one of them,
drawn uniformly (the chains themselves go on unchanged); with k modalities available the realised rate
is p - p^k / k (0.291 at p = 0.3, 0.458 at p = 0.5 for three).

Feature missing (:func:`feature_keep_masks`): for every (utterance, vector modality) exactly
``round(p * D)`` of the D feature dimensions, drawn uniformly, are zeroed after standardisation (the
model's input is 0 there: :meth:`Batch.hide_features` fills the raw value with the train mean the model
subtracts). Sequence modalities are left as they are (vector-only; ``frames:p`` is their protocol).
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
TrainingScheme = Literal["calibrated", "redraw", "burst"]
FrameScheme = Literal["keep_one", "independent"]
ConditionKind = Literal["complete", "fixed", "random", "frames", "imbalanced", "burst", "features"]
RATE_KINDS = ("random", "frames", "burst", "features")  # conditions named <kind>:<one rate>
# Conditions added with issue 32: their masks are seeded by (seed, split, name) only, not by the random scheme.
SCHEME_FREE_KINDS = ("imbalanced", "burst", "features")


def rate_text(rate: float) -> str:
    """A rate as condition names write it: 0.5 -> "0.5", 0.0 -> "0.0", 0.25 -> "0.25"."""
    return f"{rate:g}" if rate != int(rate) else f"{rate:.1f}"


def max_burst_rate(length: float) -> float:
    """The largest stationary missing rate a two-state chain with mean missing run ``length`` can have:
    P(observed -> missing) = p / (L (1 - p)) <= 1  <=>  p <= L / (L + 1)."""
    return length / (length + 1)


def check_burst(rate: float, length: float) -> str | None:
    """Why ``burst:<rate>`` with mean run ``length`` is impossible (None: it is fine)."""
    if length < 1:
        return f"mean missing-run length {length:g} is below 1 utterance"
    if rate > max_burst_rate(length):
        return (
            f"burst rate {rate:g} with mean run length {length:g} needs P(observed -> missing) = "
            f"{rate / (length * (1 - rate)):.3f} > 1; the rate must be at most L/(L+1) = {max_burst_rate(length):.3f}"
        )
    return None


@dataclass(frozen=True)
class Condition:
    kind: ConditionKind
    keep: tuple[str, ...] = ()  # fixed: modalities kept, in corpus order
    rate: float = 0.0  # random / burst: modality missing rate; frames: frame missing rate; features: dims share
    rates: tuple[float, ...] = ()  # imbalanced: one missing rate per corpus modality, in corpus order

    @property
    def name(self) -> str:
        if self.kind == "complete":
            return "complete"
        if self.kind == "fixed":
            return "fixed:" + "".join(self.keep)
        if self.kind == "imbalanced":
            return "imbalanced:" + ",".join(rate_text(r) for r in self.rates)
        return f"{self.kind}:{rate_text(self.rate)}"

    @classmethod
    def parse(cls, name: str, modalities: tuple[str, ...] = ("l", "a", "v")) -> Condition:
        """``complete`` | ``fixed:<modalities>`` | ``random:<rate in [0, 1)>`` | ``frames:<rate in [0, 1]>`` |
        ``imbalanced:<one rate in [0, 1) per modality, comma-separated>`` | ``burst:<rate in [0, 1)>`` |
        ``features:<rate in [0, 1)>``."""
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
        if kind in RATE_KINDS:
            rate = _number(arg)
            top_ok = kind == "frames"  # frames:1.0 drops every frame
            if not (0.0 <= rate <= 1.0 if top_ok else 0.0 <= rate < 1.0):
                bound = "[0, 1]" if top_ok else "[0, 1)"
                raise CorekdError(f"bad condition '{name}': expected {kind}:<rate in {bound}>, e.g. {kind}:0.5")
            return cls(cast(ConditionKind, kind), rate=round(rate, 6))
        if kind == "imbalanced":
            parts = arg.split(",") if arg else []
            rates = [_number(p) for p in parts]
            example = ",".join(["0.1"] * len(modalities))
            if len(rates) != len(modalities) or not all(0.0 <= r < 1.0 for r in rates):
                raise CorekdError(
                    f"bad condition '{name}': expected imbalanced:<{len(modalities)} rates in [0, 1), one per "
                    f"modality {''.join(modalities)}, comma-separated>, e.g. imbalanced:{example}"
                )
            return cls("imbalanced", rates=tuple(round(r, 6) for r in rates))
        raise CorekdError(
            f"unknown condition '{name}': expected complete, fixed:<modalities>, random:<rate>, frames:<rate>, "
            "imbalanced:<rates>, burst:<rate> or features:<rate>"
        )


def _number(text: str) -> float:
    """A condition's rate, or NaN when it is not a number (NaN fails every range check)."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def fixed_subsets(modalities: tuple[str, ...]) -> list[Condition]:
    """Every proper non-empty subset, singles first, in corpus order: l, a, v, la, lv, av."""
    return [Condition("fixed", keep=keep) for k in range(1, len(modalities)) for keep in combinations(modalities, k)]


def standard_conditions(
    modalities: tuple[str, ...],
    rates: Sequence[float],
    frame_rates: Sequence[float] = (),
    imbalanced_rates: Sequence[Sequence[float]] = (),
    burst_rates: Sequence[float] = (),
    feature_rates: Sequence[float] = (),
) -> list[Condition]:
    """complete, the fixed subsets, ``random:p`` per rate, ``frames:p`` per frame rate (pass none for a corpus
    without sequence modalities), then ``imbalanced:r1,r2,..`` per rate list, ``burst:p`` and ``features:p``."""
    return [
        Condition("complete"),
        *fixed_subsets(modalities),
        *(Condition("random", rate=r) for r in rates),
        *(Condition("frames", rate=r) for r in frame_rates),
        *(Condition("imbalanced", rates=tuple(rs)) for rs in imbalanced_rates),
        *(Condition("burst", rate=r) for r in burst_rates),
        *(Condition("features", rate=r) for r in feature_rates),
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


def imbalanced_mask(
    avail: torch.Tensor, rates: Sequence[float] | torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Drop each available entry of modality j independently with probability ``rates[j]``, keeping >= 1 per
    utterance: an utterance left empty keeps one available modality drawn with probability proportional to
    1 - r_j (module docstring). ``avail`` [..., M] bool; ``rates`` [M] (or broadcastable to ``avail``). Draws on the
    CPU generator and returns on ``avail``'s device."""
    device = avail.device
    avail = avail.detach().to("cpu", torch.bool)
    rate_t = torch.as_tensor(rates, dtype=torch.float64).expand(avail.shape)  # [..., M]
    if bool(((rate_t < 0) | (rate_t >= 1)).any()):
        raise CorekdError(f"missing rates must lie in [0, 1), got {rates}")
    mask = avail & (torch.rand(avail.shape, generator=generator, dtype=torch.float64) >= rate_t)
    # the cap: one modality per emptied utterance, P(j) proportional to 1 - r_j (Gumbel-max over log(1 - r_j))
    gumbel = -torch.log(-torch.log(torch.rand(avail.shape, generator=generator, dtype=torch.float64).clamp(1e-300)))
    score = (torch.log1p(-rate_t) + gumbel).masked_fill(~avail, -math.inf)
    rescue = torch.nn.functional.one_hot(score.argmax(-1), avail.shape[-1]).bool() & avail
    empty = avail.any(-1) & ~mask.any(-1)  # [...]
    return torch.where(empty[..., None], rescue, mask).to(device)


def burst_mask(
    avail: torch.Tensor, rate: float | torch.Tensor, length: float, generator: torch.Generator
) -> torch.Tensor:
    """Missing runs over consecutive utterances (module docstring): ``avail`` [N, U, M] bool (padding False);
    ``rate`` the chains' stationary missing rate, a float or a tensor broadcastable to [N, M] (one per dialogue,
    per modality or both); ``length`` the mean missing run in utterances. One chain per (dialogue, modality) over
    U utterances; an utterance whose available modalities are all in a missing run keeps one, drawn uniformly.
    Draws on the CPU generator and returns on ``avail``'s device."""
    device = avail.device
    avail = avail.detach().to("cpu", torch.bool)
    n, u, k = avail.shape
    rate_t = torch.as_tensor(rate, dtype=torch.float64).expand(n, k)  # [N, M]
    if bool(((rate_t < 0) | (rate_t >= 1)).any()):
        raise CorekdError(f"burst missing rate must lie in [0, 1), got {rate}")
    worst = float(rate_t.max()) if rate_t.numel() else 0.0
    if (problem := check_burst(worst, length)) is not None:
        raise CorekdError(problem)
    stay = 1.0 - 1.0 / length  # P(missing -> missing)
    enter = rate_t / (length * (1.0 - rate_t))  # [N, M]: P(observed -> missing)
    draws = torch.rand((n, u, k), generator=generator, dtype=torch.float64)  # [N, U, M]
    missing = torch.zeros((n, u, k), dtype=torch.bool)
    state = draws[:, 0] < rate_t if u else torch.zeros((n, k), dtype=torch.bool)  # stationary first state
    for t in range(u):
        if t:
            state = torch.where(state, draws[:, t] < stay, draws[:, t] < enter)
        missing[:, t] = state
    mask = avail & ~missing
    score = torch.rand((n, u, k), generator=generator, dtype=torch.float64).masked_fill(~avail, -1.0)
    rescue = torch.nn.functional.one_hot(score.argmax(-1), k).bool() & avail
    empty = avail.any(-1) & ~mask.any(-1)  # [N, U]
    return torch.where(empty[..., None], rescue, mask).to(device)


def feature_keep_masks(
    features: dict[str, torch.Tensor], rate: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Feature missing: m -> [..., D] bool, the dimensions kept, for every vector modality of ``features``
    (m -> [..., D] tensors; only the shape is read). Exactly ``round(rate * D)`` dimensions, drawn uniformly, are
    dropped in every row; modalities are drawn in the order of ``features``."""
    if not 0 <= rate < 1:
        raise CorekdError(f"feature missing rate must lie in [0, 1), got {rate}")
    out = {}
    for m, x in features.items():
        d = x.shape[-1]
        drop = round(rate * d)
        score = torch.rand(x.shape, generator=generator, dtype=torch.float64)  # [..., D]
        rank = score.argsort(-1).argsort(-1)  # [..., D]: each dimension's rank within its row
        out[m] = rank >= drop
    return out


def split_feature_keep(
    condition: Condition, features: dict[str, torch.Tensor], mask_seed: int, split: str
) -> dict[str, torch.Tensor]:
    """The feature dimensions a ``features:p`` condition keeps on one split: m -> [N, U, D] bool for the vector
    modalities in ``features`` (m -> [N, U, D]), a function of (seed, split, condition) only."""
    if condition.kind != "features":
        raise ValueError(f"condition {condition.name} hides no feature dimensions")
    gen = torch_generator("eval-features", mask_seed, split, condition.name)
    return feature_keep_masks(features, condition.rate, gen)


def feature_missing_rate(keep: dict[str, torch.Tensor], observed: dict[str, torch.Tensor]) -> float:
    """Share of the feature dimensions of observed vector entries (``observed``: m -> [N, U] bool) that ``keep``
    (m -> [N, U, D]) zeroes."""
    total = sum(int(o.sum()) * keep[m].shape[-1] for m, o in observed.items())
    dropped = sum(int((~keep[m][o]).sum()) for m, o in observed.items())
    return dropped / total if total else 0.0


def missing_rate_by_modality(mask: torch.Tensor, avail: torch.Tensor, modalities: tuple[str, ...]) -> dict:
    """m -> share of the entries where m is available that ``mask`` hides (``mask``, ``avail`` [..., M])."""
    out = {}
    for j, m in enumerate(modalities):
        total = int(avail[..., j].sum())
        out[m] = round(float((avail[..., j] & ~mask[..., j]).sum()) / total, 4) if total else 0.0
    return out


def condition_mask(
    condition: Condition,
    avail: torch.Tensor,
    modalities: tuple[str, ...],
    generator: torch.Generator | None = None,
    scheme: RandomScheme = "calibrated",
    burst_length: float = 4.0,
) -> torch.Tensor:
    """The modality mask [..., M] of ``condition`` (``frames:p`` and ``features:p``: every modality, their frames
    and dimensions are hidden by :func:`split_frame_keep` and :func:`split_feature_keep`)."""
    if condition.kind == "complete":
        return avail.clone()
    if condition.kind == "fixed":
        return fixed_mask(avail, condition.keep, modalities)
    if condition.kind in ("frames", "features"):
        return avail.clone()
    if generator is None:
        raise ValueError("a random condition needs a generator")
    if condition.kind == "imbalanced":
        if len(condition.rates) != len(modalities):
            raise CorekdError(
                f"condition {condition.name} gives {len(condition.rates)} rates; the corpus has "
                f"{len(modalities)} modalities ({''.join(modalities)})"
            )
        return imbalanced_mask(avail, condition.rates, generator)
    if condition.kind == "burst":
        return burst_mask(avail, condition.rate, burst_length, generator)
    return random_mask(avail, condition.rate, generator, scheme)


def split_condition_mask(
    condition: Condition,
    avail: torch.Tensor,
    modalities: tuple[str, ...],
    mask_seed: int,
    split: str,
    scheme: RandomScheme = "calibrated",
    burst_length: float = 4.0,
) -> torch.Tensor:
    """The evaluation mask of one condition on one split: a function of (seed, split, condition) only (and of the
    random scheme for ``random:p``, of ``burst_length`` for ``burst:p``)."""
    parts = (condition.name,) if condition.kind in SCHEME_FREE_KINDS else (condition.name, scheme)
    gen = torch_generator("eval-mask", mask_seed, split, *parts)
    return condition_mask(condition, avail, modalities, gen, scheme, burst_length)


def frame_keep_masks(
    present: dict[str, torch.Tensor],
    rate: float | torch.Tensor,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Random intra-modality frame missing: m -> [..., F] bool, the frames to keep (for :meth:`Batch.drop_frames`).

    ``present``: m -> [..., F] bool, the frames there are (e.g. ``Batch.frame_mask`` or
    ``SplitTensors.frame_presence()``); ``rate``: the share of each utterance's frames to drop, a float
    or a tensor broadcastable to ``present[m].shape[:-1]`` (e.g. one rate per row). Calibrated per utterance
    (module docstring): one present frame, chosen uniformly, is always kept while the rate is below 1, so an
    utterance with frames keeps at least one; at rate 1 none is kept. Modalities are drawn in the order of ``present`` from the CPU ``generator``; the
    masks are returned on each ``present[m]``'s device.
    """
    out = {}
    for m, has in present.items():
        device = has.device
        has = has.detach().to("cpu", torch.bool)
        rate_t = torch.as_tensor(rate, dtype=torch.float64).expand(has.shape[:-1])
        if bool(((rate_t < 0) | (rate_t > 1)).any()):
            raise CorekdError(f"frame missing rate must lie in [0, 1], got {rate}")
        n = has.sum(-1).to(torch.float64)  # [...]
        score = torch.rand(has.shape, generator=generator, dtype=torch.float64).masked_fill(~has, -1.0)
        guaranteed = torch.nn.functional.one_hot(score.argmax(-1), has.shape[-1]).bool() & has
        q = ((n * (1 - rate_t) - 1) / (n - 1).clamp(min=1)).clamp(0, 1)
        extra = torch.rand(has.shape, generator=generator, dtype=torch.float64) < q[..., None]
        kept = guaranteed | (has & extra)
        out[m] = (kept & (rate_t < 1)[..., None]).to(device)  # rate 1: every frame dropped
    return out


def independent_frame_keep(
    present: dict[str, torch.Tensor], rate: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Frame missing with ``frame_scheme: independent``: every present frame dropped independently with probability
    ``rate`` (m -> [..., F] bool, the frames kept). The expected share dropped is ``rate`` for every length, and a
    sequence of n frames loses all of them with probability rate^n (it then counts as missing: :func:`frames_mask`)."""
    if not 0 <= rate <= 1:
        raise CorekdError(f"frame missing rate must lie in [0, 1], got {rate}")
    out = {}
    for m, has in present.items():
        draw = torch.rand(has.shape, generator=generator, dtype=torch.float64)
        out[m] = has.detach().cpu() & (draw >= rate)
    return out


def keep_one_sequence(
    mask: torch.Tensor,
    keep: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    avail: torch.Tensor,
    modalities: tuple[str, ...],
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """An utterance that the frame draw left with no observed modality (``mask`` [N, U, M] after :func:`frames_mask`)
    although the data has one (``avail``) gets one frame back: of one of its sequence modalities with frames, drawn
    uniformly, one present frame drawn uniformly. Returns the new (mask, keep)."""
    seqs = list(present)
    if not seqs:
        return mask, keep
    empty = avail.any(-1) & ~mask.any(-1)  # [N, U]
    has_frames = torch.stack([present[m].any(-1) for m in seqs], -1)  # [N, U, S]
    pick = torch.rand(has_frames.shape, generator=generator, dtype=torch.float64).masked_fill(~has_frames, -1.0)
    chosen = pick.argmax(-1)  # [N, U]
    mask, keep = mask.clone(), dict(keep)
    for s, m in enumerate(seqs):
        has = present[m]
        score = torch.rand(has.shape, generator=generator, dtype=torch.float64).masked_fill(~has, -1.0)
        one = torch.nn.functional.one_hot(score.argmax(-1), has.shape[-1]).bool() & has  # [N, U, F]
        back = empty & (chosen == s) & has.any(-1)  # [N, U]
        keep[m] = keep[m].clone()
        keep[m][..., : has.shape[-1]] |= one & back[..., None]
        mask[..., modalities.index(m)] |= back.to(mask.device)
    return mask, keep


def split_frame_keep(
    condition: Condition,
    present: dict[str, torch.Tensor],
    mask_seed: int,
    split: str,
    frame_scheme: FrameScheme = "keep_one",
) -> dict[str, torch.Tensor]:
    """The frames a ``frames:p`` condition keeps on one split: m -> [N, U, F] bool, a function of (seed, split,
    condition) only (``present``: ``SplitTensors.frame_presence()``), so every method sees the same frames.
    ``frame_scheme``: ``keep_one`` (:func:`frame_keep_masks`) or ``independent`` (:func:`independent_frame_keep`)."""
    if condition.kind != "frames":
        raise ValueError(f"condition {condition.name} drops no frames")
    if frame_scheme == "independent":
        gen = torch_generator("eval-frames", mask_seed, split, condition.name, frame_scheme)
        return independent_frame_keep(present, condition.rate, gen)
    gen = torch_generator("eval-frames", mask_seed, split, condition.name)
    return frame_keep_masks(present, condition.rate, gen)


def frames_mask(
    mask: torch.Tensor, keep: dict[str, torch.Tensor], present: dict[str, torch.Tensor], modalities: tuple[str, ...]
) -> torch.Tensor:
    """``mask`` [N, U, M] with every sequence modality that ``keep`` (m -> [N, U, F]) leaves without a frame turned
    off where the data has frames (``present``): such a modality counts as missing for that utterance."""
    out = mask.clone()
    for m, has in present.items():
        j = modalities.index(m)
        lost = has.any(-1) & ~(keep[m][..., : has.shape[-1]] & has).any(-1)  # [N, U]
        out[..., j] &= ~lost.to(out.device)
    return out


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
    """The random-missing distribution a student trains under (and its dev split is scored under).

    ``scheme: burst`` draws the rate as the other schemes do (per batch, U[low, high]) and realises it as missing
    runs of mean length ``burst_length`` (:func:`burst_mask`); ``rates`` (one per corpus modality) replaces the
    drawn shared rate by fixed per-modality rates (:func:`imbalanced_mask`; with ``scheme: burst``, per-modality
    burst rates)."""

    model_config = ConfigDict(extra="forbid")

    low: float = Field(0.0, ge=0, lt=1, description="lowest missing rate drawn per batch")
    high: float = Field(0.7, ge=0, lt=1, description="highest missing rate drawn per batch")
    scheme: TrainingScheme = Field(
        "calibrated", description="calibrated | redraw (random missing, see corekd.data.protocols) | burst"
    )
    burst_length: float = Field(4.0, ge=1, description="scheme burst: mean missing-run length, in utterances")
    rates: list[float] | None = Field(
        None,
        min_length=1,
        description="per-modality missing rates in corpus order (imbalanced training), instead of the shared "
        "rate drawn from [low, high]; null = the shared rate",
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrainingMissing:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        for r in self.rates or []:
            if not 0 <= r < 1:
                raise ValueError(f"rates: missing rate {r} is outside [0, 1)")
        if self.scheme == "burst":
            top = max(self.rates) if self.rates else self.high
            if (problem := check_burst(top, self.burst_length)) is not None:
                raise ValueError(f"scheme burst: {problem}")
        return self

    def masks(
        self, avail: torch.Tensor, generator: torch.Generator, per: Literal["batch", "row"] = "batch"
    ) -> torch.Tensor:
        if self.rates is not None:
            if len(self.rates) != avail.shape[-1]:
                raise CorekdError(
                    f"training.missing.rates gives {len(self.rates)} rates; the corpus has {avail.shape[-1]} modalities"
                )
            if self.scheme == "burst":
                return burst_mask(avail, torch.tensor(self.rates, dtype=torch.float64), self.burst_length, generator)
            return imbalanced_mask(avail, self.rates, generator)
        if self.scheme == "burst":
            shape = () if per == "batch" else avail.shape[:1] + (1,) * (avail.dim() - 2)
            rate = self.low + (self.high - self.low) * torch.rand(shape, generator=generator, dtype=torch.float64)
            return burst_mask(avail, rate, self.burst_length, generator)
        return training_rate_masks(avail, self.low, self.high, generator, self.scheme, per)
