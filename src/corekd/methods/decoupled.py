"""``decoupled``: decoupled hierarchical distillation (DHMD, seed 004: DMD's coarse stage plus the fine-grained stage).

The student (:class:`DecoupledModel`) splits each modality's encoding ``x_m`` [H] into a
modality-irrelevant part ``c_m = E_c(x_m)`` (one encoder shared by every modality) and a
modality-exclusive part ``s_m = E_s^m(x_m)`` (one encoder per modality). A decoder per modality
regresses the encoding back, ``x^_m = D_m([s_m; c_m])``, and the exclusive encoder of that
reconstruction must give the exclusive part again, ``s^_m = E_s^m(x^_m)`` (self-regression). Each
space has a classifier per modality (``f_c^m``, ``f_s^m``) and a graph distillation unit: an edge
``j <- i`` between two observed modalities of an utterance gets a learned score from both
modalities' (logits, part), the scores of an utterance's edges are normalised together
(``softmax(alpha * score)``), and the target ``j`` imitates the (detached) source ``i`` weighted by
``w_{j<-i} + prior_{j<-i}``. The classifier reads the per-modality states ``x_m + W[c_m; s_m]``
through the shared context, fusion and head.

Stage two (DHMD's cross-modal dictionary matching): each space has a learned dictionary of ``dict_size`` atoms
``A`` [K, H], shared by the modalities; a part's activations over it are ``a = softmax(cos(part, A_k) / tau)``
[K], and in each space every observed modality ``j`` imitates every other observed modality ``i``:
``DM = mean_{edges j<-i} KL(a_i || a_j)`` (source detached, per utterance).

``L = CE + l_aux_ce * L_aux + l_graph * (GD_c + graph_reg * P_c + GD_s + graph_reg * P_s)
    + l_rec * L_rec + l_cyc * L_cyc + l_ort * L_ort + l_dict * (DM_c + DM_s) [+ l_kd * L_kd]
    [+ l_dict_kd * (DT_c + DT_s)]``

(every term per utterance, over the view's observed modalities; see docs/configuration.md):
``L_aux = sum_m CE(f_c^m(c_m)) + CE(f_s^m(s_m))``; ``GD = sum_{j<-i} (w + prior) * d_{j<-i}`` with
``d = |z_j - z_i|_1`` on the logits (plus ``exclusive_repr_weight * max(0, cos(s_j, s_i))`` in the
exclusive space, which pushes exclusive parts apart); ``P = sum_e (mean_batch w_e - prior_e)^2``;
``L_rec = sum_m mean_H (x^_m - x_m)^2``; ``L_cyc = sum_m mean_H (s^_m - s_m)^2``;
``L_ort = sum_m max(0, cos(c_m, s_m))``. Defaults are the weights of DMD's released training
(``0.05`` on both graph units, ``gd_reg 10``, ``alpha 1/8``, ``w_losses [1, 10]``, ``(L_cyc + L_rec) * 0.1``,
``L_ort * 0.01``, prior favouring edges from language with temperature 0.25). DMD and DHMD use no
teacher: KD from the complete-view teacher is an option, off by default, on the logits (``l_kd``) or on the
dictionary activations (``l_dict_kd``: ``DT = mean_{j observed, i in the teacher's complete view}
KL(t_i || a_j)``, ``t_i`` the teacher's state of modality i taken through this student's encoders and
dictionary without gradient, since the plain teacher has no parts of its own).

What the seed gives is the stage's shape (a dictionary per decoupled space, activations over it, matching
across modalities, on top of the coarse stage); its formulas are not in the seed text, so these are fill-ins
(options, named in docs/configuration.md): the cosine-softmax activations and their temperature (0.1), the
dictionary size (32 atoms), the KL direction and the mean over edges, the weight ``l_dict`` (0.1), and that the
dictionaries shape the parts through the loss only (the readout does not use them). ``l_dict 0`` (with
``l_dict_kd 0``) is the coarse stage alone (DMD), its model built without dictionaries: records bit for bit those
of the coarse-only ``decoupled``.

Other fill-ins (options or stated here): our states are utterance vectors, so the exclusive parts are
not enhanced by DMD's cross-modal transformers and the parts are single linear maps; DMD's margin
loss on the shared parts (weight 0.01 in the release) is not implemented; edges, their softmax and the
dictionary matching are restricted to pairs of observed modalities (distillation only from, and to, what the
view observes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from corekd.data.batching import Batch
from corekd.methods.base import Method, StepContext
from corekd.methods.losses import (
    cross_entropy,
    distill_loss,
    l1_error,
    masked_mean,
    supervised_loss,
)
from corekd.methods.registry import register
from corekd.models.model import ERCModel, ModelConfig, Output, register_architecture

PairDistance = Literal["l1", "cos_hinge"]


# ------------------------------------------------------------------ pure loss functions
def modality_sum(values: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """[..., M], [..., M] bool -> [...]: the sum over the observed modalities (0 where none is)."""
    return (values * observed.to(values.dtype)).sum(-1)


def per_modality_supervised(logits: torch.Tensor, batch: Batch, smoothing: float = 0.0) -> torch.Tensor:
    """[B, U, M, C] -> [B, U, M]: the task's supervised term of each modality's own head (CE, or L1 for regression)."""
    if batch.targets is not None:
        return l1_error(logits[..., 0], batch.targets[..., None])
    labels = batch.labels[..., None].expand(logits.shape[:-1])  # [B, U, M]
    return cross_entropy(logits, labels, smoothing)


def self_regression(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[..., H], [..., H] -> [...]: mean over H of ``(prediction - target)^2`` (DMD's reconstruction / cycle MSE)."""
    return (prediction - target).pow(2).mean(-1)


def orthogonality(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[..., H], [..., H] -> [...]: ``max(0, cos(a, b))``: positive similarity of a shared and an exclusive part."""
    return F.relu(F.cosine_similarity(a, b, dim=-1))


def pair_mask(observed: torch.Tensor) -> torch.Tensor:
    """[..., M] bool -> [..., M, M] bool: edge ``[j, i]`` (target j, source i) exists when i != j are both observed."""
    m = observed.shape[-1]
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=observed.device)
    return observed[..., :, None] & observed[..., None, :] & off_diagonal


def edge_weights(scores: torch.Tensor, valid: torch.Tensor, alpha: float) -> torch.Tensor:
    """[..., M, M] scores, [..., M, M] bool -> [..., M, M]: ``softmax(alpha * score)`` over an utterance's valid edges
    jointly (DMD normalises all edges of a sample together); 0 on invalid edges and where none is valid."""
    shape = scores.shape
    flat = (alpha * scores).masked_fill(~valid, float("-inf")).flatten(-2)  # [..., M*M]
    return torch.nan_to_num(flat.softmax(-1), nan=0.0).view(shape)


def pairwise_distance(x: torch.Tensor, kind: PairDistance) -> torch.Tensor:
    """[..., M, D] -> [..., M, M]: ``d[j, i]`` between target ``x_j`` and the detached source ``x_i``.

    ``l1``: ``sum_D |x_j - x_i|``; ``cos_hinge``: ``max(0, cos(x_j, x_i))`` (DMD's exclusive-space term, which
    pushes the parts apart).
    """
    target, source = x[..., :, None, :], x.detach()[..., None, :, :]  # [..., M, 1, D], [..., 1, M, D]
    if kind == "l1":
        return (target - source).abs().sum(-1)
    if kind == "cos_hinge":
        return F.relu(F.cosine_similarity(target, source, dim=-1))
    raise ValueError(f"unknown pair distance '{kind}'")


def graph_distillation(
    distances: torch.Tensor, weights: torch.Tensor, prior: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """[..., M, M] x3 (prior [M, M]), [..., M, M] bool -> [...]: ``sum_{valid j<-i} (w + prior) * d``."""
    return ((weights + prior) * distances * valid.to(distances.dtype)).sum((-2, -1))


def edge_prior_penalty(
    weights: torch.Tensor, valid: torch.Tensor, real: torch.Tensor, prior: torch.Tensor
) -> torch.Tensor:
    """[B, U, M, M], [B, U, M, M] bool, [B, U] bool, [M, M] -> scalar: ``sum_e (mean w_e - prior_e)^2``.

    A batch-level regulariser (DMD's ``gd_reg`` term), not one value per utterance: each edge's weight averaged over
    the real utterances where the edge exists, then its squared gap to the prior, summed over edges that exist.
    """
    present = (valid & real[..., None, None]).to(weights.dtype)  # [B, U, M, M]
    count = present.sum((0, 1))  # [M, M]
    mean = (weights * present).sum((0, 1)) / count.clamp(min=1.0)
    return ((mean - prior).pow(2) * (count > 0).to(weights.dtype)).sum()


def edge_prior(modalities: tuple[str, ...], sources: list[str], temperature: float) -> torch.Tensor:
    """[M, M] prior over edges ``[j, i]`` (i != j): ``softmax(b_e / temperature)`` over all edges, ``b_e = 1`` for an
    edge whose source is in ``sources`` else 0 (DMD's hand-set prior; ``sources: []`` gives a uniform prior)."""
    m = len(modalities)
    off = ~torch.eye(m, dtype=torch.bool)
    bias = torch.tensor([[1.0 if modalities[i] in sources else 0.0 for i in range(m)] for _ in range(m)])
    logits = (bias / temperature).masked_fill(~off, float("-inf")).flatten()
    return torch.nan_to_num(logits.softmax(-1), nan=0.0).view(m, m) if m > 1 else torch.zeros(m, m)


def dictionary_similarity(parts: torch.Tensor, atoms: torch.Tensor) -> torch.Tensor:
    """[..., H] parts, [K, H] atoms -> [..., K]: the cosine similarity of each part to each atom of a dictionary."""
    return F.normalize(parts, dim=-1) @ F.normalize(atoms, dim=-1).T


def dictionary_log_activations(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """[..., K] -> [..., K]: ``log softmax(similarity / temperature)`` over the atoms: a part's activations over the
    dictionary (fill-in: DHMD speaks of dictionary activations; the softmax of scaled cosines is ours)."""
    return (similarity / temperature).log_softmax(-1)


def activation_matching(target: torch.Tensor, source: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """[..., M, K] log-activations (target), [..., M, K] log-activations (source, detached here), [..., M, M] bool ->
    [...]: the mean over valid edges ``[j, i]`` of ``KL(a_i || a_j) = sum_k a_i,k (log a_i,k - log a_j,k)``, target
    ``j`` imitating source ``i``; 0 where no edge is valid."""
    source = source.detach()
    p = source.exp()[..., None, :, :]  # [..., 1, M, K]: source i
    kl = (p * (source[..., None, :, :] - target[..., :, None, :])).sum(-1)  # [..., M, M]: [j, i]
    weights = valid.to(kl.dtype)
    return (kl * weights).sum((-2, -1)) / weights.sum((-2, -1)).clamp(min=1.0)


def teacher_pairs(observed: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """[..., M] bool (the student's view), [..., M] bool (the teacher's complete view) -> [..., M, M] bool: edge
    ``[j, i]`` from the teacher's modality i to the student's modality j, for every observed j and available i
    (i = j included)."""
    return observed[..., :, None] & available[..., None, :]


# ------------------------------------------------------------------ the model
class EdgeScorer(nn.Module):
    """One graph distillation unit's edge scores: [B, U, M, C] logits, [B, U, M, H] parts -> [B, U, M, M] (target, source)."""

    def __init__(self, hidden: int, classes: int, size: int):
        super().__init__()
        self.from_logits = nn.Linear(classes, size)
        self.from_part = nn.Linear(hidden, size)
        self.edge = nn.Linear(4 * size, 1)

    def forward(self, logits: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        z = torch.cat([self.from_logits(logits), self.from_part(parts)], -1)  # [B, U, M, 2G]
        m = z.shape[-2]
        target = z[..., :, None, :].expand(*z.shape[:-2], m, m, z.shape[-1])  # [B, U, M, M, 2G]
        source = z[..., None, :, :].expand_as(target)
        return self.edge(torch.cat([target, source], -1)).squeeze(-1)  # [B, U, M, M]


@register_architecture
class DecoupledModel(ERCModel):
    """The plain model plus shared/exclusive encoders, decoders, per-space heads and two edge scorers."""

    architecture = "decoupled"

    def __init__(
        self,
        cfg: ModelConfig,
        dims: dict[str, int],
        num_classes: int,
        kinds: Mapping[str, str] | None = None,
        graph_size: int = 32,
        dictionary_size: int = 0,
    ):
        super().__init__(cfg, dims, num_classes, kinds)  # first: the base weights are the plain model's
        h = cfg.hidden
        self.graph_size = graph_size
        self.dictionary_size = dictionary_size
        self.shared = nn.Linear(h, h)  # E_c, one for every modality
        self.exclusive = nn.ModuleDict({m: nn.Linear(h, h) for m in dims})  # E_s^m
        self.decoders = nn.ModuleDict({m: nn.Linear(2 * h, h) for m in dims})  # D_m
        self.merge = nn.Linear(2 * h, h)  # [c_m; s_m] -> residual onto x_m
        self.shared_heads = nn.ModuleDict({m: nn.Linear(h, num_classes) for m in dims})
        self.exclusive_heads = nn.ModuleDict({m: nn.Linear(h, num_classes) for m in dims})
        self.shared_graph = EdgeScorer(h, num_classes, graph_size)
        self.exclusive_graph = EdgeScorer(h, num_classes, graph_size)
        # DHMD's fine-grained stage: one dictionary of atoms per space, shared by every modality (built last, and only
        # with the stage on: without it the model, its initial weights and its checkpoint are the coarse model's)
        if dictionary_size > 0:
            self.shared_dictionary = nn.Parameter(torch.randn(dictionary_size, h))  # [K, H]
            self.exclusive_dictionary = nn.Parameter(torch.randn(dictionary_size, h))  # [K, H]

    def architecture_options(self) -> dict:
        if self.dictionary_size > 0:
            return {"graph_size": self.graph_size, "dictionary_size": self.dictionary_size}
        return {"graph_size": self.graph_size}

    def dictionary_similarities(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, U, M, H] per-modality states (e.g. the teacher's) -> ([B, U, M, K], [B, U, M, K]): the states taken
        through this model's shared and exclusive encoders, then their cosines to each space's atoms."""
        c = self.shared(states)  # [B, U, M, H]
        s = self._per_modality(self.exclusive, states)  # [B, U, M, H]
        return dictionary_similarity(c, self.shared_dictionary), dictionary_similarity(s, self.exclusive_dictionary)

    def _per_modality(self, modules: nn.ModuleDict, x: torch.Tensor) -> torch.Tensor:
        # x: [B, U, M, D] -> [B, U, M, D']
        return torch.stack([modules[m](x[:, :, j]) for j, m in enumerate(self.modalities)], dim=2)

    def forward(self, batch: Batch) -> Output:
        x, mask = self.encode(batch)  # [B, U, M, H], [B, U, M]
        c = self.shared(x)  # [B, U, M, H]
        s = self._per_modality(self.exclusive, x)  # [B, U, M, H]
        recon = self._per_modality(self.decoders, torch.cat([s, c], -1))  # [B, U, M, H]
        cycle = self._per_modality(self.exclusive, recon)  # [B, U, M, H]
        c_logits = self._per_modality(self.shared_heads, c)  # [B, U, M, C]
        s_logits = self._per_modality(self.exclusive_heads, s)  # [B, U, M, C]
        out = self.readout(x + self.merge(torch.cat([c, s], -1)), mask, batch)
        out.extra = {
            "encoded": x,
            "shared": c,
            "exclusive": s,
            "reconstructed": recon,
            "exclusive_cycle": cycle,
            "shared_logits": c_logits,
            "exclusive_logits": s_logits,
            "shared_edges": self.shared_graph(c_logits, c),
            "exclusive_edges": self.exclusive_graph(s_logits, s),
        }
        if self.dictionary_size > 0:
            out.extra["shared_similarity"] = dictionary_similarity(c, self.shared_dictionary)  # [B, U, M, K]
            out.extra["exclusive_similarity"] = dictionary_similarity(s, self.exclusive_dictionary)  # [B, U, M, K]
        return out


# ------------------------------------------------------------------ the method
class DecoupledOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    l_aux_ce: float = Field(
        1.0, ge=0, description="weight of the per-modality heads' supervised terms, both spaces (DMD: 1)"
    )
    l_graph: float = Field(0.05, ge=0, description="weight of each graph distillation unit's loss (DMD: 0.05)")
    graph_reg: float = Field(
        10.0, ge=0, description="weight of the edge-prior penalty inside each unit (DMD's gd_reg: 10)"
    )
    graph_alpha: float = Field(0.125, gt=0, description="edge scores are scaled by this before the softmax (DMD: 1/8)")
    graph_size: int = Field(
        32,
        ge=1,
        description="width of the edge scorer's projections of logits and parts "
        "(fill-in: DMD uses 64 homogeneous / 32 heterogeneous)",
    )
    shared_repr_weight: float = Field(
        0.0,
        ge=0,
        description="weight of an L1 term between shared parts in the shared "
        "unit (DMD computes it but leaves it out of the loss: 0)",
    )
    exclusive_repr_weight: float = Field(
        10.0,
        ge=0,
        description="weight of max(0, cos) between exclusive parts in the exclusive unit (DMD's w_losses[1]: 10)",
    )
    prior_sources: list[str] = Field(
        default_factory=lambda: ["l"],
        description="modalities whose outgoing edges the prior favours (DMD: language; [] = uniform prior)",
    )
    prior_temperature: float = Field(0.25, gt=0, description="temperature of the prior's softmax (DMD: 0.25)")
    l_rec: float = Field(0.1, ge=0, description="weight of the reconstruction of each encoding (DMD: 0.1)")
    l_cyc: float = Field(0.1, ge=0, description="weight of the self-regression of the exclusive parts (DMD: 0.1)")
    l_ort: float = Field(0.01, ge=0, description="weight of the shared/exclusive dissimilarity term (DMD: 0.1 * 0.1)")
    l_kd: float = Field(
        0.0, ge=0, description="option, not in DMD: KD from the complete-view teacher on the final logits"
    )
    temperature: float = Field(2.0, gt=0, description="KD temperature, with l_kd")
    # DHMD's fine-grained stage (seed 004): cross-modal dictionary matching
    l_dict: float = Field(
        0.1,
        ge=0,
        description="weight of DHMD's cross-modal dictionary matching, both spaces (fill-in weight; "
        "0 with l_dict_kd 0 = the coarse stage alone, DMD, with its model and records)",
    )
    dict_size: int = Field(32, ge=2, description="atoms in each space's dictionary (fill-in)")
    dict_temperature: float = Field(
        0.1, gt=0, description="temperature of the softmax over a part's cosines to the atoms (fill-in)"
    )
    l_dict_kd: float = Field(
        0.0,
        ge=0,
        description="option, not in DHMD: the teacher's complete-view states, taken through the student's encoders "
        "and dictionaries (detached), as activation targets for the student's observed modalities",
    )

    @property
    def dictionary(self) -> bool:
        """Whether the fine-grained stage (and so the dictionaries) is on."""
        return self.l_dict > 0 or self.l_dict_kd > 0


@register
class Decoupled(Method):
    name = "decoupled"
    Options = DecoupledOptions
    # corekd tune's search space: the coarse stage's graph and reconstruction weights (DMD's values in the middle of
    # each range) and the dictionary stage's own settings (l_dict_kd is left out: it would add a teacher to some
    # trials only)
    search_space: ClassVar[dict[str, dict]] = {
        "l_graph": {"float": [0.01, 0.2], "log": True},
        "l_rec": {"float": [0.03, 0.3], "log": True},
        "l_dict": {"float": [0.01, 1.0], "log": True},
        "dict_size": {"choice": [8, 16, 32, 64]},
        "dict_temperature": {"float": [0.05, 1.0], "log": True},
    }
    options: DecoupledOptions  # narrows Method.options (an instance of Options) for the type checker

    @classmethod
    def inert_options(cls, options: BaseModel) -> set[str]:
        o = cast(DecoupledOptions, options)
        # without the dictionary stage (DMD alone) the model has no dictionaries: their size and temperature do nothing
        return {"dict_size", "dict_temperature"} if o.l_dict == 0 and o.l_dict_kd == 0 else set()

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return self.options.l_kd > 0 or self.options.l_dict_kd > 0

    def build_model(
        self, model_cfg: ModelConfig, dims: dict[str, int], num_classes: int, kinds: Mapping[str, str] | None = None
    ) -> ERCModel:
        o = self.options
        size = o.dict_size if o.dictionary else 0
        return DecoupledModel(model_cfg, dims, num_classes, kinds, graph_size=o.graph_size, dictionary_size=size)

    def check_modalities(self, modalities: tuple[str, ...]) -> tuple[str, str] | None:
        bad = [m for m in self.options.prior_sources if m not in modalities]
        if bad:
            return "prior_sources", (
                f"{bad} are not modalities of the corpus (it has {list(modalities)}); list only its "
                "modalities, or [] for a uniform edge prior"
            )
        return None

    def loss(self, ctx: StepContext):
        o, out, batch = self.options, ctx.output, ctx.batch
        e = out.extra
        real = batch.utt_mask  # [B, U]
        observed = ctx.view.batch.mask & real[..., None]  # [B, U, M]
        regression = batch.targets is not None

        def mean(values: torch.Tensor) -> torch.Tensor:
            return masked_mean(values, real)

        terms = {"ce": mean(supervised_loss(out.logits, batch, ctx.label_smoothing))}
        total = terms["ce"]
        if o.l_aux_ce > 0:
            aux = per_modality_supervised(e["shared_logits"], batch, ctx.label_smoothing) + per_modality_supervised(
                e["exclusive_logits"], batch, ctx.label_smoothing
            )  # [B, U, M]
            terms["aux_ce"] = mean(modality_sum(aux, observed))
            total = total + o.l_aux_ce * terms["aux_ce"]
        if o.l_graph > 0:
            valid = pair_mask(observed)  # [B, U, M, M]
            prior = edge_prior(batch.modalities, o.prior_sources, o.prior_temperature).to(out.logits.device)
            parts: tuple[tuple[str, PairDistance, float], ...] = (
                ("shared", "l1", o.shared_repr_weight),
                ("exclusive", "cos_hinge", o.exclusive_repr_weight),
            )
            for space, part_kind, part_weight in parts:
                w = edge_weights(e[f"{space}_edges"], valid, o.graph_alpha)
                d = pairwise_distance(e[f"{space}_logits"], "l1")
                if part_weight > 0:
                    d = d + part_weight * pairwise_distance(e[space], part_kind)
                terms[f"graph_{space}"] = mean(graph_distillation(d, w, prior, valid))
                terms[f"prior_{space}"] = edge_prior_penalty(w, valid, real, prior)
                total = total + o.l_graph * (terms[f"graph_{space}"] + o.graph_reg * terms[f"prior_{space}"])
        if o.l_rec > 0:
            terms["rec"] = mean(modality_sum(self_regression(e["reconstructed"], e["encoded"]), observed))
            total = total + o.l_rec * terms["rec"]
        if o.l_cyc > 0:
            terms["cyc"] = mean(modality_sum(self_regression(e["exclusive_cycle"], e["exclusive"]), observed))
            total = total + o.l_cyc * terms["cyc"]
        if o.l_ort > 0:
            terms["ort"] = mean(modality_sum(orthogonality(e["shared"], e["exclusive"]), observed))
            total = total + o.l_ort * terms["ort"]
        if o.l_kd > 0:
            assert ctx.teacher is not None  # needs_teacher: l_kd > 0
            terms["kd"] = mean(distill_loss(out.logits, ctx.teacher.logits, o.temperature, regression))
            total = total + o.l_kd * terms["kd"]
        if o.dictionary:
            total = self.dictionary_matching(ctx, observed, terms, total)
        return total, terms

    def dictionary_matching(
        self, ctx: StepContext, observed: torch.Tensor, terms: dict[str, torch.Tensor], total: torch.Tensor
    ) -> torch.Tensor:
        """DHMD's fine-grained stage: adds its terms to ``terms`` and returns ``total`` with them.

        In each space every observed modality's part has activations over the space's dictionary; with ``l_dict``
        each observed modality j imitates every other observed modality i (``KL(a_i || a_j)``, source detached, mean
        over the utterance's edges). With ``l_dict_kd`` each observed j also imitates the activations of every
        modality i of the teacher's complete view (the teacher's states through this model's encoders and
        dictionaries, without gradient).
        """
        o, e, real = self.options, ctx.output.extra, ctx.batch.utt_mask
        spaces = ("shared", "exclusive")
        log_a = {sp: dictionary_log_activations(e[f"{sp}_similarity"], o.dict_temperature) for sp in spaces}
        if o.l_dict > 0:
            valid = pair_mask(observed)  # [B, U, M, M]
            for sp in spaces:
                terms[f"dict_{sp}"] = masked_mean(activation_matching(log_a[sp], log_a[sp], valid), real)
                total = total + o.l_dict * terms[f"dict_{sp}"]
        if o.l_dict_kd > 0:
            assert ctx.teacher is not None  # needs_teacher: l_dict_kd > 0
            if not isinstance(ctx.model, DecoupledModel):
                raise TypeError(f"decoupled's l_dict_kd needs its DecoupledModel, got {type(ctx.model).__name__}")
            with torch.no_grad():
                teacher_sim = dict(zip(spaces, ctx.model.dictionary_similarities(ctx.teacher.states), strict=True))
            valid = teacher_pairs(observed, ctx.batch.avail & real[..., None])  # [B, U, M, M]
            for sp in spaces:
                target = dictionary_log_activations(teacher_sim[sp], o.dict_temperature)
                terms[f"dict_kd_{sp}"] = masked_mean(activation_matching(log_a[sp], target, valid), real)
                total = total + o.l_dict_kd * terms[f"dict_kd_{sp}"]
        return total
