"""The model behind plain tensors: :class:`ServingModule`, the one function both runtimes compute.

The same module runs under PyTorch (the predictor's torch runtime) and is what
:mod:`corekd.serving.onnx_export` exports, so both runtimes compute the same function. Its inputs, in
order, are :func:`input_names`; :func:`frame_inputs` says which modalities a model reads frame by frame.
:class:`EnsembleModule` runs an ensemble bundle's members on the same inputs, as one stacked forward.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from corekd.data.batching import Batch
from corekd.models.encoders import masked_frame_mean
from corekd.models.model import ERCModel
from corekd.models.stacked import StackedModels, stack_problem
from corekd.serving.dialogue import reads_frames


def frame_inputs(model: ERCModel) -> tuple[str, ...]:
    """The modalities ``model`` reads frame by frame: ``sequence`` kind and a ``sequence_encoder`` other than ``mean``."""
    return tuple(
        m for m in model.modalities if model.kinds.get(m) == "sequence" and model.cfg.sequence_encoder != "mean"
    )


def input_names(modalities: Mapping[str, Mapping]) -> list[str]:
    """The model's inputs, in order: ``mask``, ``speakers``, ``lengths``, then per modality ``m`` ([B, U, D_m]) or,
    for a frame-reading modality, ``m_frames`` ([B, U, F_m, D_m]) and ``m_frame_mask`` ([B, U, F_m])."""
    names = ["mask", "speakers", "lengths"]
    for m, spec in modalities.items():
        names += [f"{m}_frames", f"{m}_frame_mask"] if reads_frames(spec) else [m]
    return names


class ServingModule(nn.Module):
    """The model behind plain tensors: (mask, speakers, lengths, *inputs) -> probabilities [B, U, C] (values [B, U, 1]).

    ``mask`` [B, U, M] bool (observed), ``speakers`` [B, U] int64 (index within the dialogue),
    ``lengths`` [B] int64 (real utterances; the rest is padding), then per modality in the model's
    order (:func:`input_names`): features [B, U, D_m] float32, or for a modality the model reads
    frame by frame (:func:`frame_inputs`) its frames [B, U, F_m, D_m] float32 and frame mask
    [B, U, F_m] bool (True: a real frame). A ``sequence`` modality of a ``sequence_encoder: mean``
    model takes the mean of its frames as features and is read as one frame (the mean of the
    standardised frames is the standardised mean: the same input). Classification returns softmax
    probabilities, regression the value.
    """

    def __init__(self, model: ERCModel, task: str):
        super().__init__()
        self.model = model
        self.modalities = tuple(model.modalities)
        self.frame_modalities = frame_inputs(model)
        self.one_frame = tuple(
            m for m in self.modalities if model.kinds.get(m) == "sequence" and m not in self.frame_modalities
        )
        self.input_names = input_names(
            {m: {"input": "frames" if m in self.frame_modalities else "vector"} for m in self.modalities}
        )
        self.classify = task == "classification"

    def forward(self, mask: torch.Tensor, speakers: torch.Tensor, lengths: torch.Tensor, *inputs: torch.Tensor):
        logits = self.model(self.batch(mask, speakers, lengths, *inputs)).logits  # [B, U, C]
        return logits.softmax(-1) if self.classify else logits

    def batch(self, mask: torch.Tensor, speakers: torch.Tensor, lengths: torch.Tensor, *inputs: torch.Tensor) -> Batch:
        """The plain tensors (:meth:`forward`'s arguments) as the :class:`Batch` the model reads."""
        u = mask.shape[1]
        utt_mask = torch.arange(u, device=mask.device)[None, :] < lengths[:, None]  # [B, U]
        observed = mask & utt_mask[..., None]  # [B, U, M]
        features: dict[str, torch.Tensor] = {}
        frames: dict[str, torch.Tensor] = {}
        frame_mask: dict[str, torch.Tensor] = {}
        k = 0
        for j, m in enumerate(self.modalities):
            if m in self.frame_modalities:
                shown = inputs[k + 1] & observed[..., j, None]  # [B, U, F]
                frames[m] = inputs[k] * shown[..., None].to(inputs[k].dtype)  # [B, U, F, D]
                frame_mask[m] = shown
                features[m] = masked_frame_mean(frames[m], shown)  # [B, U, D]
                k += 2
                continue
            features[m] = inputs[k]  # [B, U, D]
            if m in self.one_frame:
                frames[m] = inputs[k][:, :, None]  # [B, U, 1, D]
                frame_mask[m] = observed[..., j, None]  # [B, U, 1]
            k += 1
        batch = Batch(
            features=features,
            mask=observed,
            avail=observed,
            speakers=speakers,
            labels=torch.zeros_like(speakers),
            utt_mask=utt_mask,
            modalities=self.modalities,
            index=torch.zeros_like(lengths),
            frame_lengths={m: x.sum(-1) for m, x in frame_mask.items()},
            frames=frames,
            frame_mask=frame_mask,
        )
        return batch


class EnsembleModule:
    """K models of one architecture behind :class:`ServingModule`'s plain tensors: ``[K, B, U, C]``, member k's
    probabilities (regression: values) in row k, every member on the same dialogues.

    The members run as one forward through :class:`~corekd.models.stacked.StackedModels` (parameters stacked
    ``[K, ...]``, ``torch.func.vmap``); a model that cannot be stacked (:func:`~corekd.models.stacked.stack_problem`:
    it reads frames with a sequence encoder) runs member by member instead. ``functional_call`` puts the members'
    weights into one shared template module for the length of a forward, so forwards are serialised by a lock
    (concurrent callers, e.g. the service's worker threads, take turns).
    """

    def __init__(self, models: Sequence[ERCModel], task: str):
        self.members = [ServingModule(model, task).eval() for model in models]
        self.input_names = self.members[0].input_names
        self.classify = task == "classification"
        self.stacked = StackedModels(models).eval() if stack_problem(models[0]) is None else None
        self.lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.members)

    def __call__(
        self, mask: torch.Tensor, speakers: torch.Tensor, lengths: torch.Tensor, *inputs: torch.Tensor
    ) -> torch.Tensor:
        if self.stacked is None:
            return torch.stack([member(mask, speakers, lengths, *inputs) for member in self.members])
        batch = self.members[0].batch(mask, speakers, lengths, *inputs)
        with self.lock:
            outs = self.stacked.forward([batch] * self.size)
        logits = torch.stack([out.logits for out in outs])  # [K, B, U, C]
        return logits.softmax(-1) if self.classify else logits
