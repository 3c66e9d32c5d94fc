"""Bidirectional, speaker-aware GRU dialogue context over an utterance sequence.

Padded positions never reach a real one in either direction, as with packed sequences, but
without packing (unpacked GRUs run markedly faster on CPU): the forward direction reads each
sequence as it is (padding comes after every real utterance), the backward direction reads it
with its real prefix reversed (``rev``: position t <-> length-1-t; padding stays at the end), and
its outputs are put back in order with the same permutation. ``unrolled`` (set by
:func:`unroll_recurrences`, for an ensemble trained under ``torch.func.vmap``, which has no batching
rule for ``aten::gru``): the same recurrence written as one loop over time of batched products,
both directions at once (:func:`gru_scan`); the same numbers up to summation order. Speaker awareness: a learned
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


def gru_scan(
    x: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor
) -> torch.Tensor:
    """D independent one-layer GRUs (``nn.GRU``'s equations and gate order r, z, n) over their inputs, zero initial state.

    x: [D, N, U, I]; w_ih: [D, 3G, I]; w_hh: [D, 3G, G]; b_ih, b_hh: [D, 3G] -> outputs [D, N, U, G]. The input
    projections of every step are one product; each step is one batched product over the D recurrences (the two
    directions of a layer; under ``vmap``, those of every member too).
    """
    g = w_hh.shape[-1]
    gates_in = torch.einsum("dnui,dgi->dnug", x, w_ih) + b_ih[:, None, None]  # [D, N, U, 3G]
    w_hh_t, b_hh_ = w_hh.transpose(1, 2), b_hh[:, None]  # [D, G, 3G], [D, 1, 3G]
    h = x.new_zeros(x.shape[0], x.shape[1], g)  # [D, N, G]
    outs = []
    for step in gates_in.unbind(2):  # [D, N, 3G]; unbind, not indexing: its backward is one stack, not U copies
        gates_h = torch.baddbmm(b_hh_, h, w_hh_t)  # [D, N, 3G]
        i_r, i_z, i_n = step.chunk(3, -1)
        h_r, h_z, h_n = gates_h.chunk(3, -1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = n + z * (h - n)  # (1 - z) * n + z * h
        outs.append(h)
    return torch.stack(outs, 2)  # [D, N, U, G]


def unroll_recurrences(module: nn.Module, unrolled: bool = True) -> nn.Module:
    """Switch every :class:`GRUContextEncoder` in ``module`` to (or back from) the unrolled :func:`gru_scan` form."""
    for sub in module.modules():
        if isinstance(sub, GRUContextEncoder):
            sub.unrolled = unrolled
    return module


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
        self.unrolled = False  # gru_scan instead of nn.GRU (unroll_recurrences): same weights, same equations

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
            flipped = seq.gather(1, rev[..., :1].expand(n, u, seq.shape[-1]))  # [N, U, H]: the reversed prefixes
            if self.unrolled:
                ahead, behind = gru_scan(
                    torch.stack([seq, flipped]),
                    *(
                        torch.stack([getattr(fwd, f"{name}_l0"), getattr(bwd, f"{name}_l0")])
                        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                    ),
                ).unbind(0)  # 2 x [N, U, H/2]
            else:
                ahead, _ = fwd(seq)  # [N, U, H/2]
                behind, _ = bwd(flipped)
            seq = torch.cat([ahead, behind.gather(1, rev)], -1) * real[..., None]  # [N, U, H]; padding -> 0
        if self.norm is None:  # the recurrence's output alone (padding stays 0)
            return self.drop(seq)
        return self.norm(x + self.drop(seq))
