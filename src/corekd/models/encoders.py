"""Per-modality utterance encoders: features [B, U, D_m] -> states [B, U, H]."""

from __future__ import annotations

import torch
from torch import nn


class VectorEncoder(nn.Module):
    """One feature vector per utterance -> hidden state. Missing inputs get a learned token.

    The token replaces the encoding wherever the mask says "missing", so nothing downstream
    depends on the (zeroed) input values of a missing modality. ``missing_token=False``: zeros
    instead of a token (for the observed-only fusions). ``input_norm=False`` drops the
    per-utterance LayerNorm over the features (for standardised inputs). ``layers``: how many
    linear -> GELU -> dropout blocks (the first maps D -> H, the rest H -> H).
    """

    def __init__(self, in_dim: int, hidden: int, dropout: float, input_dropout: float = 0.0,
                 missing_token: bool = True, input_norm: bool = True, layers: int = 1):
        super().__init__()
        if layers < 1:
            raise ValueError(f"an encoder needs at least one layer, got {layers}")
        blocks: list[nn.Module] = [nn.LayerNorm(in_dim) if input_norm else nn.Identity(), nn.Dropout(input_dropout)]
        for i in range(layers):
            blocks += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
        self.proj = nn.Sequential(*blocks)
        # Without a token, a missing input encodes to zeros (observed-only fusions never read it).
        self.missing = nn.Parameter(torch.zeros(hidden)) if missing_token else None

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # x: [B, U, D], observed: [B, U] bool -> [B, U, H]
        fill = self.missing if self.missing is not None else x.new_zeros(())
        return torch.where(observed[..., None], self.proj(x), fill)
