"""Input standardisation (``data.standardize``): z-scores with statistics of the TRAIN split only.

:func:`train_statistics` computes, per modality and feature column, the mean and standard
deviation over the train split's real utterances where that modality is available (padding and
genuinely missing entries are left out); for a sequence modality, over the train split's frames
(every frame of every utterance where the modality is available), and they are applied to frames. :class:`InputStandardizer` holds them as buffers of the
model, so they are saved in every checkpoint's ``model.safetensors`` and inference uses the
training statistics; identity statistics (mean 0, std 1) leave the inputs exactly as they are.
Missing inputs stay zero after standardisation.
"""

from __future__ import annotations

import torch
from torch import nn

from corekd.data.batching import SplitTensors

MIN_STD = 1e-6  # a constant column is centred, not blown up


def train_statistics(train: SplitTensors) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """m -> (mean [D_m], std [D_m]) over the observed utterances of ``train`` (must be the train split)."""
    if train.name != "train":
        raise ValueError(f"standardisation statistics come from the train split only, got split '{train.name}'")
    stats = {}
    for j, m in enumerate(train.modalities):
        if m in train.frame_data:  # a sequence modality: its observed frames, flat
            x = train.frame_data[m].double()  # [T, D]
        else:
            rows = train.avail[..., j] & train.utt_mask  # [N, U]
            x = train.features[m][rows].double()  # [n_obs, D]
        if len(x) == 0:
            d = train.features[m].shape[-1]
            stats[m] = (torch.zeros(d), torch.ones(d))
            continue
        mean = x.mean(0)
        std = x.std(0, unbiased=False).clamp(min=MIN_STD)
        stats[m] = (mean.float(), std.float())
    return stats


class InputStandardizer(nn.Module):
    """features m -> (x - mean_m) / std_m where observed, 0 where missing. Buffers: ``mean_<m>``, ``std_<m>``.

    ``clip`` > 0 clips the z-scores to [-clip, clip] (the model option ``input_clip``; 0 = off).
    """

    def __init__(self, dims: dict[str, int], clip: float = 0.0):
        super().__init__()
        self.clip = float(clip)
        self.modalities = tuple(dims)
        for m, d in dims.items():
            self.register_buffer(f"mean_{m}", torch.zeros(d))
            self.register_buffer(f"std_{m}", torch.ones(d))

    def set_statistics(self, stats: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for m in self.modalities:
            mean, std = stats[m]
            getattr(self, f"mean_{m}").copy_(mean)
            getattr(self, f"std_{m}").copy_(std)

    def statistics(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {m: (getattr(self, f"mean_{m}"), getattr(self, f"std_{m}")) for m in self.modalities}

    def forward(self, m: str, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # x: [B, U, D] (frames: [B, U, F, D]); observed: [B, U] ([B, U, F]) bool -> x's shape
        z = (x - getattr(self, f"mean_{m}")) / getattr(self, f"std_{m}")
        if self.clip > 0:
            z = z.clamp(-self.clip, self.clip)
        return z * observed[..., None].to(z.dtype)
