"""Bidirectional, speaker-aware GRU dialogue context over an utterance sequence.

Padded positions never reach a real one in either direction, as with packed sequences, but
without packing (unpacked GRUs run markedly faster on CPU): the forward direction reads each
sequence as it is (padding comes after every real utterance), the backward direction reads it
with its real prefix reversed (``rev``: position t <-> length-1-t; padding stays at the end), and
its outputs are put back in order with the same permutation. Speaker awareness: a learned
embedding of the speaker's index within the dialogue (0, 1, ... in order of first appearance) is
added to every input, so the recurrence can tell its own speaker's turns from the partner's.
"""

from __future__ import annotations

import torch
from torch import nn

from corekd.models.dropout import Dropout


def reversal_index(lengths: torch.Tensor, u: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N] lengths -> (rev [N, U] long, real [N, U] bool): ``rev`` reverses each real prefix and fixes padding.

    ``rev`` is its own inverse: gathering with it twice gives the sequence back.
    """
    pos = torch.arange(u, device=lengths.device)[None, :]  # [1, U]
    real = pos < lengths[:, None]  # [N, U]
    return torch.where(real, lengths[:, None] - 1 - pos, pos), real


class GRUContextEncoder(nn.Module):
    """[N, U, H] states (N sequences) -> context-aware states [N, U, H]; residual + LayerNorm (or, with
    ``residual=False``, the recurrence's output after dropout alone).

    ``lengths`` counts each sequence's real utterances (a prefix). Each layer is a forward and a
    backward GRU of H/2 units, their outputs concatenated; ``dropout`` between layers. Sequences
    with no real utterance pass through unchanged (then normed).
    """

    MAX_SPEAKERS = 8  # speaker indices beyond this share the last embedding

    def __init__(self, hidden: int, layers: int, dropout: float, speaker_aware: bool, residual: bool = True):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"hidden ({hidden}) must be even for a bidirectional GRU")
        self.speaker_aware = speaker_aware
        self.speaker_embed = nn.Embedding(self.MAX_SPEAKERS, hidden) if speaker_aware else None
        if self.speaker_embed is not None:
            nn.init.normal_(self.speaker_embed.weight, std=0.02)
        # Created forward, backward, layer by layer: the order (and so the initial values) of nn.GRU(bidirectional=True).
        self.forward_grus, self.backward_grus = nn.ModuleList(), nn.ModuleList()
        for _ in range(layers):
            self.forward_grus.append(nn.GRU(hidden, hidden // 2, batch_first=True))
            self.backward_grus.append(nn.GRU(hidden, hidden // 2, batch_first=True))
        self.between = Dropout(dropout)  # between stacked layers only
        self.drop = Dropout(dropout)
        self.norm = nn.LayerNorm(hidden) if residual else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, speakers: torch.Tensor | None) -> torch.Tensor:
        # x: [N, U, H]; lengths: [N] long (real utterances, a prefix); speakers: [N, U] long or None
        n, u, h = x.shape
        seq = x
        if self.speaker_embed is not None and speakers is not None:
            seq = seq + self.speaker_embed(speakers.clamp(0, self.MAX_SPEAKERS - 1))
        rev, real = reversal_index(lengths.to(x.device), u)
        rev = rev[..., None].expand(n, u, h // 2)  # [N, U, H/2]
        for i, (fwd, bwd) in enumerate(zip(self.forward_grus, self.backward_grus)):
            if i:
                seq = self.between(seq)
            ahead, _ = fwd(seq)  # [N, U, H/2]
            behind, _ = bwd(seq.gather(1, rev[..., :1].expand(n, u, seq.shape[-1])))  # on the reversed prefixes
            seq = torch.cat([ahead, behind.gather(1, rev)], -1) * real[..., None]  # [N, U, H]; padding -> 0
        if self.norm is None:  # the recurrence's output alone (padding stays 0)
            return self.drop(seq)
        return self.norm(x + self.drop(seq))
