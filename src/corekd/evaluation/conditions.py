"""Protocol conditions on a split: seeded masks (the same for every method and seed), which conditions a split or a
method cannot be scored under, and one model's records under every condition."""

from __future__ import annotations

import torch

from corekd.data.batching import SplitTensors
from corekd.data.protocols import RandomScheme, frame_missing_rate, missing_rate, split_condition_mask, split_frame_keep
from corekd.evaluation.metrics import task_metrics
from corekd.evaluation.predict import predict
from corekd.models.model import ERCModel


def not_applicable(
    condition, mask: torch.Tensor, split: SplitTensors, frame_keep: dict[str, torch.Tensor] | None = None
) -> str | None:
    """Why a condition observes nothing worth scoring on ``split`` (None: it is applicable)."""
    valid = split.utt_mask  # [N, U]
    if not bool(mask[valid].any()):
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
    if condition.kind == "random" and condition.rate > 0 and int(split.avail[valid].sum(-1).max()) <= 1:
        return "at most one modality per utterance: random missing drops nothing (same as complete)"
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
    present = test.frame_presence() if frames else None  # the frames the split has: the same for every condition
    for name, mask in masks.items():
        reason = reasons.get(name)
        rate = round(missing_rate(mask[test.utt_mask], test.avail[test.utt_mask]), 4)
        keep = frames.get(name)
        extra = (
            {}
            if keep is None or present is None
            else {"frame_missing_rate": round(frame_missing_rate(keep, present), 4)}
        )
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
        preds = predict(model, test, mask, batch_size, device, keep)
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
    """Condition name -> mask, with ``not_applicable``: name -> reason for conditions that get no number, and
    ``frames``: name -> the frames a ``frames:p`` condition keeps (m -> [N, U, F] bool)."""

    def __init__(
        self,
        masks: dict[str, torch.Tensor],
        not_applicable: dict[str, str],
        frames: dict[str, dict[str, torch.Tensor]] | None = None,
    ):
        super().__init__(masks)
        self.not_applicable = not_applicable
        self.frames = frames or {}


def method_masks(method, masks: ConditionMasks, conditions, modalities: tuple[str, ...]) -> ConditionMasks:
    """``masks`` with the conditions ``method`` is not scored under (``Method.not_applicable``) added to the
    not-applicable ones (a condition the data already rules out keeps its own reason)."""
    reasons = dict(masks.not_applicable)
    for c in conditions:
        if c.name not in reasons and (reason := method.not_applicable(c, modalities)):
            reasons[c.name] = reason
    return ConditionMasks(dict(masks), reasons, masks.frames)


def evaluation_masks(
    conditions, split: SplitTensors, modalities: tuple[str, ...], mask_seed: int, scheme: RandomScheme
) -> ConditionMasks:
    """Condition name -> mask on ``split`` (named ``split.name``): a function of (mask_seed, split, condition).

    Conditions under which nothing is worth scoring on this split are listed as not applicable.
    """
    masks = {
        c.name: split_condition_mask(c, split.avail, modalities, mask_seed, split.name, scheme) for c in conditions
    }
    present = split.frame_presence()
    frames = {c.name: split_frame_keep(c, present, mask_seed, split.name) for c in conditions if c.kind == "frames"}
    reasons = {
        c.name: reason for c in conditions if (reason := not_applicable(c, masks[c.name], split, frames.get(c.name)))
    }
    return ConditionMasks(masks, reasons, frames)
