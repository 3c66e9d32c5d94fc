"""Per-modality utterance encoders: features [B, U, D_m] (or frames [B, U, F, D_m]) -> states [B, U, H]."""

from __future__ import annotations

import math

import torch
from torch import nn

from corekd.models.dropout import Dropout


class VectorEncoder(nn.Module):
    """One feature vector per utterance -> hidden state. Missing inputs get a learned token.

    The token replaces the encoding wherever the mask says "missing", so nothing downstream
    depends on the (zeroed) input values of a missing modality. ``missing_token=False``: zeros
    instead of a token (for the observed-only fusions). ``input_norm=False`` drops the
    per-utterance LayerNorm over the features (for standardised inputs). ``kind="blocks"``: ``layers``
    linear -> GELU -> dropout blocks (the first maps D -> H, the rest H -> H); ``kind="mlp"``: linear ->
    ReLU -> dropout -> linear -> ReLU (``layers`` unused).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        dropout: float,
        input_dropout: float = 0.0,
        missing_token: bool = True,
        input_norm: bool = True,
        layers: int = 1,
        kind: str = "blocks",
    ):
        super().__init__()
        if layers < 1:
            raise ValueError(f"an encoder needs at least one layer, got {layers}")
        if kind not in ("blocks", "mlp"):
            raise ValueError(f"unknown vector encoder '{kind}': expected blocks or mlp")
        blocks: list[nn.Module] = [nn.LayerNorm(in_dim) if input_norm else nn.Identity(), Dropout(input_dropout)]
        if kind == "mlp":
            blocks += [nn.Linear(in_dim, hidden), nn.ReLU(), Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU()]
        for i in range(layers if kind == "blocks" else 0):
            blocks += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.GELU(), Dropout(dropout)]
        self.proj = nn.Sequential(*blocks)
        # Without a token, a missing input encodes to zeros (observed-only fusions never read it).
        self.missing = nn.Parameter(torch.zeros(hidden)) if missing_token else None

    def forward(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # x: [B, U, D], observed: [B, U] bool -> [B, U, H]
        fill = self.missing if self.missing is not None else x.new_zeros(())
        return torch.where(observed[..., None], self.proj(x), fill)


def masked_frame_mean(x: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """[..., F, D] frames, [..., F] bool -> [..., D]: the mean over the masked-in frames (zeros where there is none)."""
    w = frame_mask.to(x.dtype)[..., None]  # [..., F, 1]
    return (x * w).sum(-2) / w.sum(-2).clamp(min=1.0)


def sinusoid_positions(f: int, dim: int, device, dtype) -> torch.Tensor:
    """[F, dim] fixed sinusoidal encodings of frame positions 0..F-1 (sin on even, cos on odd columns)."""
    pos = torch.arange(f, device=device, dtype=torch.float32)[:, None]  # [F, 1]
    rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(f, dim, device=device)
    table[:, 0::2] = torch.sin(pos * rate)
    table[:, 1::2] = torch.cos(pos * rate[: dim // 2])
    return table.to(dtype)


class SequenceEncoder(nn.Module):
    """The frames of one utterance -> one hidden state: [B, U, F, D] with a frame mask -> [B, U, H].

    Each frame is projected to H (optional LayerNorm, input dropout, linear -> GELU), then ``kind``
    reads the frame sequence: ``conv`` (``layers`` residual blocks of pre-norm temporal convolution,
    kernel ``kernel``, GELU), ``transformer`` (``layers`` pre-norm transformer
    blocks with ``heads`` heads over sinusoidal frame positions, padded and dropped frames masked as
    keys) or ``none`` (frames read one by one). ``pool`` makes one state of the frames the mask shows:
    ``attention`` (a learned score per frame, softmax over the shown frames) or ``mean``; dropout
    acts on the pooled state.

    Frames the mask hides (padding, a modality the view hides, dropped frames) never reach a shown one:
    they are zeroed before every convolution (so a dropped frame is a silent step in time, and its
    neighbours keep their positions), masked as attention keys, and left out of the pooling. An
    utterance whose modality is not observed (or shows no frame) gets the learned missing token (or
    zeros without one), exactly as :class:`VectorEncoder` does.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        dropout: float,
        input_dropout: float = 0.0,
        missing_token: bool = True,
        input_norm: bool = True,
        kind: str = "conv",
        layers: int = 1,
        kernel: int = 3,
        pool: str = "attention",
        heads: int = 4,
        ffn_mult: int = 2,
    ):
        super().__init__()
        if kind not in ("conv", "transformer", "none"):
            raise ValueError(f"unknown sequence encoder '{kind}': expected conv, transformer or none")
        if pool not in ("attention", "mean"):
            raise ValueError(f"unknown frame pooling '{pool}': expected attention or mean")
        self.kind, self.pool = kind, pool
        # Dropout inside the frame sequence would cost a mask per frame; it acts on the raw frames (input_dropout)
        # and on the pooled state (dropout) instead.
        self.proj = nn.Sequential(
            nn.LayerNorm(in_dim) if input_norm else nn.Identity(),
            Dropout(input_dropout) if input_dropout > 0 else nn.Identity(),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
        )
        self.blocks = nn.ModuleList()
        if kind == "conv":
            self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
            self.blocks.extend(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(layers))
        elif kind == "transformer":
            self.blocks.extend(
                nn.TransformerEncoderLayer(
                    hidden, heads, ffn_mult * hidden, dropout, activation="gelu", batch_first=True, norm_first=True
                )
                for _ in range(layers)
            )
        self.score = nn.Linear(hidden, 1) if pool == "attention" else None
        self.drop = Dropout(dropout)
        self.missing = nn.Parameter(torch.zeros(hidden)) if missing_token else None

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        # x: [B, U, F, D]; frame_mask: [B, U, F] bool; observed: [B, U] bool -> [B, U, H]
        rows = observed & frame_mask.any(-1)  # [B, U]: utterances with something to read
        sel = rows.nonzero(as_tuple=True)
        shown = frame_mask[sel]  # [R, F]
        keep = shown[..., None].to(x.dtype)  # [R, F, 1]
        h = self.proj(x[sel]) * keep  # [R, F, H]
        if self.kind == "conv":
            for norm, conv in zip(self.norms, self.blocks):
                step = conv((norm(h) * keep).transpose(1, 2)).transpose(1, 2)  # [R, F, H]
                h = (h + nn.functional.gelu(step)) * keep
        elif self.kind == "transformer" and len(self.blocks):
            h = h + sinusoid_positions(h.shape[1], h.shape[2], h.device, h.dtype)
            for block in self.blocks:
                h = block(h, src_key_padding_mask=~shown)
            h = h * keep
        if self.score is not None:
            weights = self.score(h).squeeze(-1).masked_fill(~shown, float("-inf")).softmax(-1)  # [R, F]
            pooled = (weights[..., None] * h).sum(1)  # [R, H]
        else:
            pooled = masked_frame_mean(h, shown)  # [R, H]
        pooled = self.drop(pooled)
        out = pooled.new_zeros((*rows.shape, pooled.shape[-1]))  # [B, U, H]
        out[sel] = pooled
        fill = self.missing if self.missing is not None else out.new_zeros(())
        return torch.where(rows[..., None], out, fill)
