"""Bidirectional, speaker-aware GRU dialogue context over an utterance sequence.

Each sequence is packed to its true length (``pack_padded_sequence``), so padded positions never
reach a real one in either direction. Speaker awareness: a learned embedding of the speaker's
index within the dialogue (0, 1, ... in order of first appearance) is added to every input, so
the recurrence can tell its own speaker's turns from the partner's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class GRUContextEncoder(nn.Module):
    """[N, U, H] states (N sequences) -> context-aware states [N, U, H]; residual + LayerNorm.

    ``mask`` marks the positions that are real utterances; sequences are packed by the position of
    their last real utterance. Sequences with no real utterance pass through unchanged (then normed).
    """

    MAX_SPEAKERS = 8  # speaker indices beyond this share the last embedding

    def __init__(self, hidden: int, layers: int, dropout: float, speaker_aware: bool):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"hidden ({hidden}) must be even for a bidirectional GRU")
        self.speaker_aware = speaker_aware
        self.speaker_embed = nn.Embedding(self.MAX_SPEAKERS, hidden) if speaker_aware else None
        if self.speaker_embed is not None:
            nn.init.normal_(self.speaker_embed.weight, std=0.02)
        self.gru = nn.GRU(hidden, hidden // 2, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, speakers: torch.Tensor | None) -> torch.Tensor:
        # x: [N, U, H]; lengths: [N] long (real utterances, a prefix); speakers: [N, U] long or None
        n, u, h = x.shape
        inp = x
        if self.speaker_embed is not None and speakers is not None:
            inp = inp + self.speaker_embed(speakers.clamp(0, self.MAX_SPEAKERS - 1))
        lengths_cpu = lengths.detach().to("cpu")
        has = lengths_cpu > 0
        out = torch.zeros_like(x)
        if bool(has.any()):
            rows = has.nonzero().squeeze(1)
            sub = inp[rows.to(x.device)] if not bool(has.all()) else inp
            packed = pack_padded_sequence(sub, lengths_cpu[rows], batch_first=True, enforce_sorted=False)
            seq, _ = self.gru(packed)
            seq, _ = pad_packed_sequence(seq, batch_first=True, total_length=u)  # [n', U, H]
            out = seq if bool(has.all()) else out.index_copy(0, rows.to(x.device), seq)
        return self.norm(x + self.drop(out))
