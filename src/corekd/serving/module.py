"""The model behind plain tensors: :class:`ServingModule`, the one function both runtimes compute.

The same module runs under PyTorch (the predictor's torch runtime) and is what
:mod:`corekd.serving.onnx_export` exports, so both runtimes compute the same function. Its inputs, in
order, are :func:`input_names`; :func:`frame_inputs` says which modalities a model reads frame by frame.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from corekd.data.batching import Batch
from corekd.models.encoders import masked_frame_mean
from corekd.models.model import ERCModel
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
        logits = self.model(batch).logits  # [B, U, C]
        return logits.softmax(-1) if self.classify else logits
