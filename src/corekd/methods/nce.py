"""Nonverbal Conflict Exposure: target-preserving conflict views built from in-batch donors.

``prob`` is the share of the batch's real utterances that become targets, in expectation, whatever
the eligibility rule: each eligible utterance (by default a real one whose language the view
observes: a view without the target's language would preserve nothing of the target) is drawn with
probability ``prob * real / eligible``, capped at 1 (``ConflictView.capped`` says when the cap bound,
so the share fell short). For each target, pick a conflict type (which nonverbal modalities to swap, e.g. ``a``, ``v`` or ``av``) and a
donor: another utterance of the same batch whose label differs (for regression: whose sentiment sign, -1, 0 or +1, differs). The conflict view keeps the target's language, its place in its dialogue
(so its context) and its label; only the chosen nonverbal modalities are replaced by the donor's
(features and observed flag as the donor has them in ``source``: the data, or the student's view;
for a sequence modality also its frames, frame mask and frame count).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from corekd.data.batching import Batch
from corekd.errors import CorekdError


@dataclass
class ConflictView:
    batch: Batch  # the view with swapped nonverbal modalities
    selected: torch.Tensor  # [B, U] bool: utterances given a conflict (targets)
    donor: torch.Tensor  # [B, U] long: flat index (b * U + u) of the donor, -1 where not selected
    kind: torch.Tensor  # [B, U] long: index into ``types``, -1 where not selected
    types: tuple[str, ...]
    draw_prob: float = 0.0  # the per-eligible-utterance probability used: prob x real / eligible, capped at 1
    capped: bool = False  # the cap bound: too few eligible utterances for the share ``prob``


def nce_view(
    view: Batch,
    source: Batch,
    prob: float,
    types: tuple[str, ...],
    generator: torch.Generator,
    require_language: bool = True,
) -> ConflictView:
    """Build a conflict view on top of ``view``; donors' modalities come from ``source``: the complete view (what
    the data has) or the incomplete ``view`` itself (a modality it hides is swapped in as missing).

    ``types`` are strings of nonverbal modality letters (``"a"``, ``"v"``, ``"av"``). With
    ``require_language`` only utterances whose language ``view`` observes can be targets. Draws on
    the CPU generator, so the same generator state gives the same conflicts on any device.
    """
    mods = view.modalities
    for t in types:
        if "l" in t or not t or any(m not in mods for m in t):
            raise CorekdError(
                f"conflict type '{t}' must name nonverbal modalities of this corpus ({[m for m in mods if m != 'l']})"
            )
    b, u = view.utt_mask.shape
    valid = view.utt_mask.cpu().reshape(-1)  # [B*U]
    # Classification: donors have another label. Regression: another sentiment sign (-1, 0, +1).
    labels = (view.labels if view.targets is None else torch.sign(view.targets)).cpu().reshape(-1)
    eligible = valid
    if require_language and "l" in mods:
        eligible = valid & view.mask[..., mods.index("l")].cpu().reshape(-1)
    n_real, n_eligible = int(valid.sum()), int(eligible.sum())
    wanted = prob * n_real / max(n_eligible, 1)  # the draw among the eligible that gives the share ``prob``
    draw_prob = min(1.0, wanted)
    chosen = eligible & (torch.rand(b * u, generator=generator) < draw_prob)
    targets = torch.nonzero(chosen).squeeze(1)  # [S]
    # Donor: uniform among real utterances of the batch whose label differs from the target's.
    allowed = valid[None, :] & (labels[None, :] != labels[targets, None])  # [S, B*U]
    score = torch.rand(len(targets), b * u, generator=generator).masked_fill(~allowed, -1.0)
    has_donor = allowed.any(-1)  # a target with no possible donor (one-label batch) gets no conflict
    targets, score = targets[has_donor], score[has_donor]
    donor = torch.full((b * u,), -1, dtype=torch.long)
    donor[targets] = score.argmax(-1)
    kind = torch.full((b * u,), -1, dtype=torch.long)
    kind[targets] = torch.randint(len(types), (len(targets),), generator=generator)
    chosen = donor >= 0

    device = view.utt_mask.device
    features = dict(view.features)
    frames, frame_mask, frame_lengths = dict(view.frames), dict(view.frame_mask), dict(view.frame_lengths)
    mask = view.mask.clone()
    avail = view.avail.clone()
    flat_src_mask = source.mask.reshape(b * u, -1)  # what the donor shows in ``source`` (complete view: all it has)
    flat_src_avail = source.avail.reshape(b * u, -1)
    for j, m in enumerate(mods):
        swap = torch.zeros(b * u, dtype=torch.bool)
        for t_idx, t in enumerate(types):
            if m in t:
                swap |= kind == t_idx
        if not swap.any():
            continue
        swap_d = swap.to(device)
        src_idx = donor.clamp(min=0).to(device)
        donor_obs = flat_src_mask[src_idx, j] & swap_d
        donor_x = source.features[m].reshape(b * u, -1)[src_idx] * donor_obs[:, None].to(source.features[m].dtype)
        x = features[m].reshape(b * u, -1)
        features[m] = torch.where(swap_d[:, None], donor_x, x).view_as(features[m])
        if m in view.frames:  # a sequence modality: the donor's frames as ``source`` shows them
            f = view.frames[m].shape[2]
            src_frames = source.frames[m].reshape(b * u, f, -1)[src_idx]  # [B*U, F, D]
            src_shown = source.frame_mask[m].reshape(b * u, f)[src_idx] & donor_obs[:, None]  # [B*U, F]
            frames[m] = torch.where(
                swap_d[:, None, None],
                src_frames * src_shown[..., None].to(src_frames.dtype),
                view.frames[m].reshape(b * u, f, -1),
            ).view_as(view.frames[m])
            frame_mask[m] = torch.where(swap_d[:, None], src_shown, view.frame_mask[m].reshape(b * u, f)).view(b, u, f)
            frame_lengths[m] = torch.where(
                swap_d, source.frame_lengths[m].reshape(-1)[src_idx], view.frame_lengths[m].reshape(-1)
            ).view(b, u)
        mask[..., j] = torch.where(swap_d, donor_obs, mask[..., j].reshape(-1)).view(b, u)
        donor_has = flat_src_avail[src_idx, j] & swap_d
        avail[..., j] = torch.where(swap_d, donor_has, avail[..., j].reshape(-1)).view(b, u)
    return ConflictView(
        batch=replace(
            view,
            features=features,
            mask=mask,
            avail=avail,
            frames=frames,
            frame_mask=frame_mask,
            frame_lengths=frame_lengths,
        ),
        selected=chosen.view(b, u).to(device),
        donor=donor.view(b, u).to(device),
        kind=kind.view(b, u).to(device),
        types=tuple(types),
        draw_prob=draw_prob,
        capped=wanted > 1.0,
    )
