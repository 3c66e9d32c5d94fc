"""Mask-aware fusion of per-modality states [B, U, M, H] into one fused state [B, U, H]."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class MaskedFusion(nn.Module):
    """Attention pooling over modalities, told which ones are observed.

    Each modality state is tagged with a learned "observed"/"missing" embedding before scoring.
    ``over="observed"`` pools only observed modalities (falling back to all when none is);
    ``over="all"`` also pools the context-derived states of missing ones, weighted by the scorer.
    """

    def __init__(self, hidden: int, num_modalities: int, dropout: float,
                 over: Literal["observed", "all"] = "all"):
        super().__init__()
        self.over = over
        self.tag = nn.Parameter(torch.zeros(num_modalities, 2, hidden))
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.norm_in = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden))
        self.norm_out = nn.LayerNorm(hidden)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # states: [B, U, M, H]; mask: [B, U, M] bool
        tagged = states + torch.where(mask[..., None], self.tag[:, 1], self.tag[:, 0])  # [B, U, M, H]
        scores = self.score(tagged).squeeze(-1)  # [B, U, M]
        if self.over == "observed":
            usable = mask | ~mask.any(-1, keepdim=True)
            scores = scores.masked_fill(~usable, float("-inf"))
        weights = scores.softmax(-1)  # [B, U, M]
        pooled = (weights[..., None] * tagged).sum(2)  # [B, U, H]
        return self.norm_out(pooled + self.ffn(self.norm_in(pooled)))
