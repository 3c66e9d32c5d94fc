"""``gcnet``: GCNet's graph completion over the dialogue (Lian et al., TPAMI 2023) on corekd's model.

What the paper (and its release, zeroQiaoba/GCNet) does: each utterance is a node holding its modalities'
features, the missing ones zeroed; two graphs over a dialogue's utterances join every pair within a window
(``window_past`` before, ``window_future`` after, the node itself included): the temporal graph types an edge
by the order of its ends (past, now, future), the speaker graph by the pair of their speakers. Each graph
runs a relational graph convolution (one weight per edge type, mean over each type's neighbours, plus a
root weight) then a plain graph convolution (root weight plus a sum over neighbours); the two graphs' outputs
are summed; a linear head classifies, a linear decoder reconstructs every modality's features, and the
loss is CE + the reconstruction's squared error on the missing entries only, summed over the modalities
(each divided by its width) and divided by the number of utterances.

Here (:class:`GCNetModel`): the nodes read the plain model's encodings ``x`` [B, U, M, H] of the view, missing
ones zeroed, with the observation mask (``n = W_in [z; mask]`` [B, U, G]); each graph is a dense
adjacency per dialogue over its real utterances; ``h = ReLU(W_h [n; g_temporal + g_speaker])``; the decoder
predicts every modality's encoding ``x^ = W_rec drop(h)`` [B, U, M, H]. The completed view keeps the observed
encodings and takes ``x^`` for the missing ones; the shared context, fusion and head read it as if every
modality were observed, at inference too, on any observed subset (as ``reconstruction`` and ``mmin``).

``L = CE + l_rec * L_rec [+ l_kd * L_kd]``, ``L_rec`` = the mean over real utterances of
``sum_{m hidden by the view, in the data} mean_H (x^_m - t_m)^2`` (GCNet's normalisation), ``t`` the model's
own complete-view encoding (detached by default).

Fill-ins: the completion works on encodings, not raw features (every corekd student reads the same encoders;
the raw features of a sequence modality are frames); speaker relations are "same speaker" / "other speaker"
(GCNet types ordered speaker pairs and allows at most two speakers; corekd's dialogues may have more); the
release's per-graph BiLSTM and nodal attention after the convolutions are left to corekd's shared dialogue
context, which reads the completed view; the classifier reads the completed view through the shared head,
not the graph state; the graph width ``graph_hidden`` defaults to H. Trained on corekd's shared random-missing
views (GCNet also trains on random missing at one rate).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from corekd.data.batching import Batch
from corekd.methods.base import Method, StepContext
from corekd.methods.losses import distill_loss, masked_mean, supervised_loss
from corekd.methods.registry import register
from corekd.models.dropout import Dropout
from corekd.models.model import ERCModel, ModelConfig, Output, register_architecture


def dialogue_relations(
    utt_mask: torch.Tensor, speakers: torch.Tensor, window_past: int, window_future: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, U] real utterances, [B, U] speakers -> (temporal [B, 3, U, U], speaker [B, 2, U, U]) float adjacencies.

    Entry ``[b, r, i, j]`` = 1 when utterance i reads utterance j through relation r: both real, ``j`` within
    ``window_past`` before to ``window_future`` after ``i`` (``i`` itself included). Temporal relations: 0 = j
    before i, 1 = j is i, 2 = j after i. Speaker relations: 0 = same speaker, 1 = another speaker.
    """
    u = utt_mask.shape[1]
    pos = torch.arange(u, device=utt_mask.device)
    offset = pos[None, :] - pos[:, None]  # [U, U]: j - i
    window = (offset >= -window_past) & (offset <= window_future)  # [U, U]
    edge = window[None] & utt_mask[:, :, None] & utt_mask[:, None, :]  # [B, U, U]
    order = torch.stack([offset < 0, offset == 0, offset > 0])  # [3, U, U]
    temporal = (edge[:, None] & order[None]).to(torch.float32)  # [B, 3, U, U]
    same = speakers[:, :, None] == speakers[:, None, :]  # [B, U, U]
    speaker = (edge[:, None] & torch.stack([same, ~same], 1)).to(torch.float32)  # [B, 2, U, U]
    return temporal, speaker


class RelationalGraphConv(nn.Module):
    """[B, U, G] nodes, [B, R, U, U] adjacencies -> [B, U, G]: ``W_0 h_i + sum_r mean_{j in N_r(i)} W_r h_j``."""

    def __init__(self, width: int, relations: int):
        super().__init__()
        self.root = nn.Linear(width, width)
        self.rel = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(relations))

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        out = self.root(h)
        for r, lin in enumerate(self.rel):
            a = adj[:, r]  # [B, U, U]
            mean = a / a.sum(-1, keepdim=True).clamp(min=1.0)
            out = out + mean @ lin(h)
        return out


class GraphConv(nn.Module):
    """[B, U, G] nodes, [B, R, U, U] adjacencies -> [B, U, G]: ``W_0 h_i + W_1 sum_{j in N(i)} h_j`` over the union
    of the relations (one edge per pair)."""

    def __init__(self, width: int):
        super().__init__()
        self.root = nn.Linear(width, width)
        self.neighbours = nn.Linear(width, width, bias=False)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        edges = adj.sum(1).clamp(max=1.0)  # [B, U, U]
        return self.root(h) + edges @ self.neighbours(h)


class DialogueGraph(nn.Module):
    """One of GCNet's graphs: a relational convolution then a plain one, [B, U, G] -> [B, U, G]."""

    def __init__(self, width: int, relations: int):
        super().__init__()
        self.relational = RelationalGraphConv(width, relations)
        self.plain = GraphConv(width)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        return self.plain(self.relational(h, adj), adj)


@register_architecture
class GCNetModel(ERCModel):
    """The plain model plus GCNet's temporal and speaker graphs completing the missing modalities' encodings."""

    architecture = "gcnet"

    def __init__(
        self,
        cfg: ModelConfig,
        dims: dict[str, int],
        num_classes: int,
        kinds: Mapping[str, str] | None = None,
        graph_hidden: int | None = None,
        window_past: int = 6,
        window_future: int = 6,
    ):
        super().__init__(cfg, dims, num_classes, kinds)  # first: the base weights are the plain model's
        h, m = cfg.hidden, len(dims)
        self.graph_hidden = graph_hidden or h
        self.window_past, self.window_future = window_past, window_future
        g = self.graph_hidden
        self.node = nn.Linear(m * h + m, g)
        self.temporal = DialogueGraph(g, 3)
        self.speaker = DialogueGraph(g, 2)
        self.mix = nn.Linear(2 * g, g)
        self.rec_drop = Dropout(cfg.dropout)
        self.decoder = nn.Linear(g, m * h)

    def architecture_options(self) -> dict:
        return {
            "graph_hidden": self.graph_hidden,
            "window_past": self.window_past,
            "window_future": self.window_future,
        }

    def complete_graph(self, encoded: torch.Tensor, mask: torch.Tensor, batch: Batch) -> torch.Tensor:
        """[B, U, M, H] encodings, [B, U, M] observed -> [B, U, M, H] every modality's encoding from the graphs."""
        b, u, m, h = encoded.shape
        seen = encoded * mask[..., None].to(encoded.dtype)  # the missing ones' encodings never reach the graphs
        nodes = self.node(torch.cat([seen.reshape(b, u, m * h), mask.to(encoded.dtype)], -1))  # [B, U, G]
        temporal, speaker = dialogue_relations(batch.utt_mask, batch.speakers, self.window_past, self.window_future)
        graph = self.temporal(nodes, temporal.to(nodes.dtype)) + self.speaker(nodes, speaker.to(nodes.dtype))
        hidden = torch.relu(self.mix(torch.cat([nodes, graph], -1)))  # [B, U, G]
        return self.decoder(self.rec_drop(hidden)).reshape(b, u, m, h)

    def forward(self, batch: Batch) -> Output:
        x, mask = self.encode(batch)  # [B, U, M, H], [B, U, M]
        imputed = self.complete_graph(x, mask, batch)
        completed = torch.where(mask[..., None], x, imputed)  # [B, U, M, H]: observed encodings kept
        every = batch.utt_mask[..., None].expand_as(mask)
        out = self.readout(completed, every, batch)
        out.extra = {"imputed": imputed}
        return out


def missing_reconstruction_loss(imputed: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """[..., M, H], [..., M, H], [..., M] bool -> [...]: ``sum_m hidden_m * mean_H (imputed_m - target_m)^2``.

    GCNet's reconstruction term per utterance: summed over the missing modalities (0 where none is missing);
    averaged over every real utterance by the caller.
    """
    err = (imputed - target).pow(2).mean(-1)  # [..., M]
    return (err * hidden.to(err.dtype)).sum(-1)


class GCNetOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l_rec: float = Field(1.0, ge=0, description="weight of the reconstruction on the missing entries (GCNet: 1)")
    window_past: int = Field(6, ge=0, description="fill-in: utterances before a node that it reads (GCNet option)")
    window_future: int = Field(6, ge=0, description="fill-in: utterances after a node that it reads (GCNet option)")
    graph_hidden: int | None = Field(None, ge=1, description="fill-in: width of the graph nodes (null = hidden)")
    target: Literal["detached", "attached"] = Field(
        "detached",
        description="fill-in: the target is the model's own complete-view encodings, fixed (detached) or with "
        "gradients into the encoders (attached)",
    )
    l_kd: float = Field(0.0, ge=0, description="option, not in GCNet: KD from the complete-view teacher")
    temperature: float = Field(2.0, gt=0, description="KD temperature, with l_kd")


@register
class GCNet(Method):
    name = "gcnet"
    Options = GCNetOptions
    options: GCNetOptions  # narrows Method.options (an instance of Options) for the type checker
    search_space: ClassVar[dict[str, dict]] = {
        "l_rec": {"float": [0.1, 10.0], "log": True},
        "window_past": {"int": [1, 8]},
        "window_future": {"int": [1, 8]},
    }

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return self.options.l_kd > 0

    def build_model(
        self, model_cfg: ModelConfig, dims: dict[str, int], num_classes: int, kinds: Mapping[str, str] | None = None
    ) -> ERCModel:
        o = self.options
        return GCNetModel(
            model_cfg,
            dims,
            num_classes,
            kinds,
            graph_hidden=o.graph_hidden,
            window_past=o.window_past,
            window_future=o.window_future,
        )

    def loss(self, ctx: StepContext):
        o, out, batch = self.options, ctx.output, ctx.batch
        real = batch.utt_mask
        terms = {"ce": masked_mean(supervised_loss(out.logits, batch, ctx.label_smoothing), real)}
        total = terms["ce"]
        if o.l_rec > 0:
            if o.target == "detached":
                with torch.no_grad():
                    target, _ = ctx.model.encode(batch.complete())
            else:
                target, _ = ctx.model.encode(batch.complete())
            hidden = batch.avail & ~ctx.view.batch.mask & real[..., None]  # [B, U, M]: in the data, not in the view
            terms["rec"] = masked_mean(missing_reconstruction_loss(out.extra["imputed"], target, hidden), real)
            total = total + o.l_rec * terms["rec"]
        if o.l_kd > 0:
            assert ctx.teacher is not None  # needs_teacher: l_kd > 0
            terms["kd"] = masked_mean(
                distill_loss(out.logits, ctx.teacher.logits, o.temperature, batch.targets is not None), real
            )
            total = total + o.l_kd * terms["kd"]
        return total, terms
