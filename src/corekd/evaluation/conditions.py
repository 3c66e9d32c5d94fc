"""Protocol conditions on a split: seeded masks (the same for every method and seed), which conditions a split or a
method cannot be scored under, and one model's records under every condition."""

from __future__ import annotations

import torch

from corekd.data.batching import SplitTensors
from corekd.data.protocols import (
    FrameScheme,
    RandomScheme,
    feature_missing_rate,
    frame_missing_rate,
    frames_mask,
    keep_one_sequence,
    missing_rate,
    missing_rate_by_modality,
    split_condition_mask,
    split_feature_keep,
    split_frame_keep,
)
from corekd.evaluation.metrics import task_metrics
from corekd.evaluation.predict import predict
from corekd.models.model import ERCModel
from corekd.seeding import torch_generator


def not_applicable(
    condition, mask: torch.Tensor, split: SplitTensors, frame_keep: dict[str, torch.Tensor] | None = None
) -> str | None:
    """Why a condition observes nothing worth scoring on ``split`` (None: it is applicable)."""
    valid = split.utt_mask  # [N, U]
    if not bool(mask[valid].any()):
        if condition.kind == "frames" and condition.rate >= 1:
            return "every modality is a frame sequence: with every frame dropped nothing is observed"
        return "nothing is observed under this condition"
    if condition.kind == "frames":
        if not split.sequence_modalities:
            return "the corpus has no sequence modality: there are no frames to drop"
        if (
            condition.rate > 0
            and frame_keep is not None
            and frame_missing_rate(frame_keep, split.frame_presence()) == 0
        ):
            return "no utterance has more than one frame: frame missing drops nothing (same as complete)"
    if (
        condition.kind in ("random", "burst", "imbalanced")
        and (condition.rate > 0 or any(condition.rates))
        and int(split.avail[valid].sum(-1).max()) <= 1
    ):
        return f"at most one modality per utterance: {condition.kind} missing drops nothing (same as complete)"
    if condition.kind == "features":
        vectors = [m for m in split.modalities if m not in split.sequence_modalities]
        if not vectors:
            return "the corpus has no vector modality: feature missing applies to vector features only"
        if condition.rate > 0 and all(round(condition.rate * split.features[m].shape[-1]) == 0 for m in vectors):
            return "round(p * D) is 0 for every vector modality: feature missing drops nothing (same as complete)"
    return None


def evaluate_model(
    model: ERCModel,
    test: SplitTensors,
    masks: dict[str, torch.Tensor],
    labels: list[str],
    batch_size: int,
    device: torch.device,
) -> list[dict]:
    """One record per condition: metrics on the test split under that condition's mask (the task's metrics:
    regression when ``test`` carries targets)."""
    rows = []
    reasons = getattr(masks, "not_applicable", {})
    frames = getattr(masks, "frames", {})
    features = getattr(masks, "features", {})
    present = test.frame_presence() if frames else None  # the frames the split has: the same for every condition
    for name, mask in masks.items():
        reason = reasons.get(name)
        rate = round(missing_rate(mask[test.utt_mask], test.avail[test.utt_mask]), 4)
        keep = frames.get(name)
        extra: dict[str, object] = (
            {}
            if keep is None or present is None
            else {"frame_missing_rate": round(frame_missing_rate(keep, present), 4)}
        )
        dims = features.get(name)
        if name.startswith(("imbalanced:", "burst:")):
            valid = test.utt_mask
            extra["missing_rate_by_modality"] = missing_rate_by_modality(
                mask[valid], test.avail[valid], test.modalities
            )
        if dims is not None:
            observed = {m: (mask & test.avail)[..., test.modalities.index(m)] & test.utt_mask for m in dims}
            extra["feature_missing_rate"] = round(feature_missing_rate(dims, observed), 4)
        if reason:  # no number: nothing observed, or the same as another condition
            rows.append(
                {
                    "condition": name,
                    "applicable": False,
                    "reason": reason,
                    "missing_rate": rate,
                    **extra,
                    "n_utterances": int(test.utt_mask.sum()),
                }
            )
            continue
        preds = predict(model, test, mask, batch_size, device, keep, dims)
        rows.append(
            {
                "condition": name,
                **task_metrics(preds.y_true, preds.y_pred, labels, preds.task),
                "missing_rate": rate,
                **extra,
                "n_utterances": int(len(preds.y_true)),
            }
        )
    return rows


class ConditionMasks(dict):
    """Condition name -> mask, with ``not_applicable``: name -> reason for conditions that get no number,
    ``frames``: name -> the frames a ``frames:p`` condition keeps (m -> [N, U, F] bool), and ``features``: name ->
    the feature dimensions a ``features:p`` condition keeps (m -> [N, U, D] bool, vector modalities)."""

    def __init__(
        self,
        masks: dict[str, torch.Tensor],
        not_applicable: dict[str, str],
        frames: dict[str, dict[str, torch.Tensor]] | None = None,
        features: dict[str, dict[str, torch.Tensor]] | None = None,
    ):
        super().__init__(masks)
        self.not_applicable = not_applicable
        self.frames = frames or {}
        self.features = features or {}


def method_masks(method, masks: ConditionMasks, conditions, modalities: tuple[str, ...]) -> ConditionMasks:
    """``masks`` with the conditions ``method`` is not scored under (``Method.not_applicable``) added to the
    not-applicable ones (a condition the data already rules out keeps its own reason)."""
    reasons = dict(masks.not_applicable)
    for c in conditions:
        if c.name not in reasons and (reason := method.not_applicable(c, modalities)):
            reasons[c.name] = reason
    return ConditionMasks(dict(masks), reasons, masks.frames, masks.features)


def evaluation_masks(
    conditions,
    split: SplitTensors,
    modalities: tuple[str, ...],
    mask_seed: int,
    scheme: RandomScheme,
    burst_length: float = 4.0,
    frame_scheme: FrameScheme = "keep_one",
) -> ConditionMasks:
    """Condition name -> mask on ``split`` (named ``split.name``): a function of (mask_seed, split, condition).

    A ``frames:p`` condition that leaves a sequence without any frame (p = 1) turns that modality off for that
    utterance. Conditions under which nothing is worth scoring on this split are listed as not applicable.
    """
    masks = {
        c.name: split_condition_mask(c, split.avail, modalities, mask_seed, split.name, scheme, burst_length)
        for c in conditions
    }
    present = split.frame_presence()
    frames = {
        c.name: split_frame_keep(c, present, mask_seed, split.name, frame_scheme)
        for c in conditions
        if c.kind == "frames"
    }
    for c in conditions:
        if c.kind != "frames":
            continue
        masks[c.name] = frames_mask(masks[c.name], frames[c.name], present, modalities)
        if frame_scheme == "independent" and c.rate < 1:  # below 1 an utterance keeps at least one modality
            gen = torch_generator("eval-frames-keep-one", mask_seed, split.name, c.name)
            masks[c.name], frames[c.name] = keep_one_sequence(
                masks[c.name], frames[c.name], present, split.avail, modalities, gen
            )
    vectors = {m: x for m, x in split.features.items() if m not in split.sequence_modalities}
    features = {
        c.name: split_feature_keep(c, vectors, mask_seed, split.name)
        for c in conditions
        if c.kind == "features" and vectors
    }
    reasons = {
        c.name: reason for c in conditions if (reason := not_applicable(c, masks[c.name], split, frames.get(c.name)))
    }
    return ConditionMasks(masks, reasons, frames, features)
