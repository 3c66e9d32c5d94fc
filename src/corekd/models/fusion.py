"""Mask-aware fusion of per-modality states [B, U, M, H] into one fused state [B, U, H]."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from corekd.models.dropout import Dropout


class MaskedFusion(nn.Module):
    """Attention pooling over modalities, told which ones are observed.

    Each modality state is tagged with a learned "observed"/"missing" embedding before scoring.
    ``over="observed"`` pools only observed modalities (falling back to all when none is);
    ``over="all"`` also pools the context-derived states of missing ones, weighted by the scorer.
    """

    def __init__(self, hidden: int, num_modalities: int, dropout: float, over: Literal["observed", "all"] = "all"):
        super().__init__()
        self.over = over
        self.tag = nn.Parameter(torch.zeros(num_modalities, 2, hidden))
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.norm_in = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
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


class ObservedMeanFusion(nn.Module):
    """Mean of the observed modalities' states; missing ones are left out (no learned token).

    An utterance with no observed modality gets a zero state.
    """

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # states: [B, U, M, H]; mask: [B, U, M] bool
        w = mask.to(states.dtype)  # [B, U, M]
        return (w[..., None] * states).sum(2) / w.sum(-1, keepdim=True).clamp(min=1.0)  # [B, U, H]


class ObservedAttentionFusion(nn.Module):
    """Attention pooling over the observed modalities only (no observed/missing tags, no learned token).

    Scores come from the states themselves; missing modalities get weight 0; an utterance with no
    observed modality pools to zero before the residual feed-forward.
    """

    def __init__(self, hidden: int, num_modalities: int, dropout: float):
        super().__init__()
        self.modality_embed = nn.Parameter(torch.zeros(num_modalities, hidden))
        self.score = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.norm_in = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )
        self.norm_out = nn.LayerNorm(hidden)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # states: [B, U, M, H]; mask: [B, U, M] bool
        scores = self.score(states + self.modality_embed).squeeze(-1).masked_fill(~mask, float("-inf"))  # [B, U, M]
        weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)  # rows with nothing observed -> 0
        pooled = (weights[..., None] * states).sum(2)  # [B, U, H]
        return self.norm_out(pooled + self.ffn(self.norm_in(pooled)))
