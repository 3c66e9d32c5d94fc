"""Run a model over a split under given masks: predictions in split order, with the labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from corekd.data.batching import SplitTensors
from corekd.models.model import ERCModel, Output
from corekd.models.stacked import StackedModels


@dataclass
class Predictions:
    y_true: np.ndarray  # [n_utterances] int (regression: float targets), dialogue by dialogue in split order
    y_pred: np.ndarray  # [n_utterances] int (regression: the head's float output)
    probs: np.ndarray  # [n_utterances, C] (regression: [n_utterances, 1], the output itself)
    task: str = "classification"


def length_sorted_batches(split: SplitTensors, batch_size: int) -> list[torch.Tensor]:
    """Dialogue indices grouped by similar length (less padding), each group in split order."""
    order = torch.argsort(split.lengths, stable=True)
    return [order[i : i + batch_size].sort().values for i in range(0, len(split), batch_size)]


@torch.inference_mode()
def run_model(
    model: ERCModel,
    split: SplitTensors,
    masks: torch.Tensor | None,
    batch_size: int,
    device: torch.device | str,
    frame_keep: dict[str, torch.Tensor] | None = None,
    feature_keep: dict[str, torch.Tensor] | None = None,
) -> Output:
    """Outputs on the whole split, padded like the split: logits [N, U, C], fused [N, U, H], states [N, U, M, H].

    ``masks`` [N, U, M] is the view (None = complete); ``frame_keep`` (m -> [N, U, F] bool, a ``frames:p``
    condition's frames) hides frames of sequence modalities on top of it, ``feature_keep`` (m -> [N, U, D] bool, a
    ``features:p`` condition's dimensions) feature dimensions of vector modalities, filled with the model's
    standardisation mean so that its standardised input is 0 there. The model is put in eval mode.
    """
    fill = None
    if feature_keep:
        standardizer = getattr(model, "standardizer", None)
        stats = standardizer.statistics() if standardizer is not None else {}
        fill = {m: stats[m][0] if m in stats else torch.zeros(k.shape[-1]) for m, k in feature_keep.items()}
    model.eval()
    n, u_max = split.utt_mask.shape
    parts: list[tuple[torch.Tensor, Output]] = []
    for index in length_sorted_batches(split, batch_size):
        batch = split.batch(index, device)
        if masks is not None:
            batch = batch.view(masks[index, : batch.utt_mask.shape[1]].to(device))
        if frame_keep:
            u = batch.utt_mask.shape[1]
            batch = batch.drop_frames({m: k[index, :u].to(device) for m, k in frame_keep.items()})
        if feature_keep:
            u = batch.utt_mask.shape[1]
            batch = batch.hide_features({m: k[index, :u].to(device) for m, k in feature_keep.items()}, fill)
        parts.append((index, model(batch)))
    first = parts[0][1]

    def gather(field: str) -> torch.Tensor:
        ref = getattr(first, field)
        full = ref.new_zeros((n, u_max, *ref.shape[2:]))
        for index, out in parts:
            value = getattr(out, field)
            full[index.to(full.device), : value.shape[1]] = value
        return full

    return Output(logits=gather("logits"), fused=gather("fused"), states=gather("states"))


@torch.inference_mode()
def run_stacked(
    models: StackedModels,
    split: SplitTensors,
    masks: list[torch.Tensor | None],
    batch_size: int,
    device: torch.device | str,
    params: dict[str, torch.Tensor] | None = None,
) -> list[Output]:
    """:func:`run_model` for every member of an ensemble at once: member k under ``masks[k]`` (None = complete), one
    batched forward per batch of dialogues (the same dialogues for every member, so nothing is padded). ``params``:
    stacked weights to use instead of the ensemble's (e.g. their moving average). Puts the ensemble in eval mode."""
    models.eval()
    n, u_max = split.utt_mask.shape
    parts: list[tuple[torch.Tensor, list[Output]]] = []
    for index in length_sorted_batches(split, batch_size):
        batch = split.batch(index, device)
        u = batch.utt_mask.shape[1]
        views = [batch if m is None else batch.view(m[index, :u].to(device)) for m in masks]
        parts.append((index, models.forward(views, params)))

    def gather(k: int, field: str) -> torch.Tensor:
        ref = getattr(parts[0][1][k], field)
        full = ref.new_zeros((n, u_max, *ref.shape[2:]))
        for index, outs in parts:
            value = getattr(outs[k], field)
            full[index.to(full.device), : value.shape[1]] = value
        return full

    return [
        Output(logits=gather(k, "logits"), fused=gather(k, "fused"), states=gather(k, "states"))
        for k in range(len(masks))
    ]


def predictions(out: Output, split: SplitTensors) -> Predictions:
    """The predictions of ``out`` (a whole split's outputs, :func:`run_model`'s) on the split's real utterances."""
    valid = split.utt_mask
    if split.targets is not None:  # regression: the one-output head is the prediction
        value = out.logits.float()[..., 0].cpu()[valid]
        return Predictions(
            y_true=split.targets[valid].numpy(), y_pred=value.numpy(), probs=value[:, None].numpy(), task="regression"
        )
    probs = out.logits.float().softmax(-1).cpu()[valid]
    return Predictions(y_true=split.labels[valid].numpy(), y_pred=probs.argmax(-1).numpy(), probs=probs.numpy())


def predict(
    model: ERCModel,
    split: SplitTensors,
    masks: torch.Tensor | None,
    batch_size: int,
    device,
    frame_keep: dict[str, torch.Tensor] | None = None,
    feature_keep: dict[str, torch.Tensor] | None = None,
) -> Predictions:
    return predictions(run_model(model, split, masks, batch_size, device, frame_keep, feature_keep), split)
