"""Speaker-aware dialogue-context encoder over the utterance sequence of each modality.

Self-attention across utterances with two learned biases per head: one for the (clipped)
relative position and one for "same speaker / other speaker". The position bias starts as a
per-head linear decay with distance (slopes 1, 1/2, 1/4, ...; ALiBi-like), so attention is
local from the first step instead of uniform over the dialogue; it is learned from there. A key is used only where its
modality is observed (plus each query's own position, so no row is ever empty): a missing
utterance draws its state from the observed ones around it, never from zeros.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from corekd.models.dropout import Dropout


class ContextBlock(nn.Module):
    """Pre-norm transformer block with an additive attention bias."""

    def __init__(self, hidden: int, heads: int, ffn_mult: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, ffn_mult * hidden), nn.GELU(), Dropout(dropout), nn.Linear(ffn_mult * hidden, hidden)
        )
        self.drop = Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x: [N, U, H]; bias: [N, heads, U, U] (-inf where a key must not be used)
        n, u, h = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, u, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.attn_dropout if self.training else 0.0
        )  # [N, heads, U, H/heads]
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(n, u, h)))
        return x + self.drop(self.ffn(self.norm2(x)))


class SpeakerContextEncoder(nn.Module):
    """[B, U, M, H] per-modality utterance states -> context-aware states, same shape."""

    def __init__(
        self,
        hidden: int,
        heads: int,
        layers: int,
        ffn_mult: int,
        dropout: float,
        num_modalities: int,
        max_relative: int,
        speaker_aware: bool,
    ):
        super().__init__()
        self.heads = heads
        self.max_relative = max_relative
        self.speaker_aware = speaker_aware
        self.modality_embed = nn.Parameter(torch.zeros(num_modalities, hidden))
        self.rel_bias = nn.Embedding(2 * max_relative + 1, heads)
        self.speaker_bias = nn.Embedding(2, heads)
        distance = torch.arange(-max_relative, max_relative + 1).abs().float()  # [2K+1]
        slopes = torch.tensor([2.0**-h for h in range(heads)])  # [heads]
        with torch.no_grad():
            self.rel_bias.weight.copy_(-distance[:, None] * slopes[None, :])
        nn.init.zeros_(self.speaker_bias.weight)
        self.blocks = nn.ModuleList(ContextBlock(hidden, heads, ffn_mult, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def attention_bias(self, mask: torch.Tensor, speakers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """[B*M, heads, U, U]: position + speaker biases, -inf on unobserved keys (self always allowed)."""
        b, u, m = mask.shape
        pos = torch.arange(u, device=mask.device)
        rel = (pos[None, :] - pos[:, None]).clamp(-self.max_relative, self.max_relative) + self.max_relative
        bias = self.rel_bias(rel).permute(2, 0, 1)[None]  # [1, heads, U, U]
        if self.speaker_aware:
            same = (speakers[:, :, None] == speakers[:, None, :]).long()  # [B, U, U]
            bias = bias + self.speaker_bias(same).permute(0, 3, 1, 2)  # [B, heads, U, U]
        bias = bias.expand(b, -1, -1, -1).to(dtype)
        key_ok = mask.permute(0, 2, 1)[:, :, None, :] | (
            torch.eye(u, device=mask.device) > 0
        )  # [B, M, U, U]; float eye: exports to ONNX
        full = bias[:, None].masked_fill(~key_ok[:, :, None], float("-inf"))  # [B, M, heads, U, U]
        return full.reshape(b * m, self.heads, u, u)

    def forward(self, states: torch.Tensor, mask: torch.Tensor, speakers: torch.Tensor) -> torch.Tensor:
        # states: [B, U, M, H]; mask: [B, U, M] bool (observed, padding False); speakers: [B, U]
        b, u, m, h = states.shape
        x = (states + self.modality_embed).permute(0, 2, 1, 3).reshape(b * m, u, h)
        if self.blocks:
            bias = self.attention_bias(mask, speakers, x.dtype)
            for block in self.blocks:
                x = block(x, bias)
        return self.norm(x).view(b, m, u, h).permute(0, 2, 1, 3)
