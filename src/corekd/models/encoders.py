"""Per-modality utterance encoders: features [B, U, D_m] -> states [B, U, H]."""

from __future__ import annotations

import torch
from torch import nn


class VectorEncoder(nn.Module):
    """One feature vector per utterance -> hidden state. Missing inputs get a learned token.

    The token replaces the encoding wherever the mask says "missing", so nothing downstream
    depends on the (zeroed) input values of a missing modality.
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float, input_dropout: float = 0.0):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim), nn.Dropout(input_dropout), nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.missing = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # x: [B, U, D], observed: [B, U] bool -> [B, U, H]
        return torch.where(observed[..., None], self.proj(x), self.missing)
