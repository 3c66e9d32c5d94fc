"""``decoupled`` (DMD): its pure terms (modality sums, graph distillation, edge priors), its model and
its loss, every term worked out by hand on made-up outputs."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from corekd.config import validate_config
from corekd.errors import CorekdError
from corekd.experiments import run
from corekd.methods import StepContext, TrainView
from corekd.methods.decoupled import (
    DecoupledModel,
    edge_prior,
    edge_prior_penalty,
    edge_weights,
    graph_distillation,
    modality_sum,
    orthogonality,
    pair_mask,
    pairwise_distance,
    per_modality_supervised,
    self_regression,
)
from corekd.models.model import ModelConfig, Output
from corekd.seeding import torch_generator
from helpers import build_method, corpus_dims, made_up_batch, py_ce, py_kd, quick_config

CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)


# ---------------------------------------------------------------- decoupled: pure terms by hand
def test_modality_sum_and_self_regression_and_orthogonality_by_hand():
    assert modality_sum(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([True, False, True])).item() == 5.0
    # mean over H of squared differences: ((1-0)^2 + (2-4)^2) / 2 = 2.5
    assert self_regression(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == pytest.approx(2.5)
    # cos([1,0],[1,1]) = 1/sqrt(2) > 0 is kept; cos([1,0],[-1,0]) = -1 is clipped to 0
    got = orthogonality(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
    assert got.tolist() == pytest.approx([1 / math.sqrt(2), 0.0])


def test_per_modality_supervised_by_hand():
    from corekd.data.batching import Batch

    logits = torch.tensor([[[[0.0, 0.0], [math.log(3.0), 0.0]]]])  # [1, 1, M=2, C=2]
    batch = Batch(
        features={},
        mask=torch.ones(1, 1, 2, dtype=torch.bool),
        avail=torch.ones(1, 1, 2, dtype=torch.bool),
        speakers=torch.zeros(1, 1, dtype=torch.long),
        labels=torch.tensor([[0]]),
        utt_mask=torch.ones(1, 1, dtype=torch.bool),
        modalities=("l", "a"),
        index=torch.tensor([0]),
    )
    # label 0: -log(1/2) for the uniform head; -log(3/4) for the head with logit log 3 on class 0
    assert per_modality_supervised(logits, batch)[0, 0].tolist() == pytest.approx([math.log(2), -math.log(0.75)])
    batch.targets = torch.tensor([[1.5]])
    assert per_modality_supervised(logits, batch)[0, 0].tolist() == pytest.approx([1.5, abs(math.log(3.0) - 1.5)])


def test_pair_mask_and_edge_weights_by_hand():
    observed = torch.tensor([True, True, False])
    valid = pair_mask(observed)
    assert valid.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    scores = torch.tensor([[9.0, 2.0, 9.0], [6.0, 9.0, 9.0], [9.0, 9.0, 9.0]])  # only [0,1]=2 and [1,0]=6 count
    w = edge_weights(scores, valid, alpha=0.5)
    # softmax(0.5 * [2, 6]) = [1, e^2] / (1 + e^2)
    e2 = math.exp(2.0)
    assert w[0, 1].item() == pytest.approx(1 / (1 + e2)) and w[1, 0].item() == pytest.approx(e2 / (1 + e2))
    assert w.sum().item() == pytest.approx(1.0)
    none = edge_weights(scores, pair_mask(torch.tensor([True, False, False])), alpha=0.5)
    assert torch.equal(none, torch.zeros(3, 3))  # one observed modality: no edge, no weight (not NaN)


def test_pairwise_distance_by_hand_and_the_source_is_detached():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], requires_grad=True)
    d = pairwise_distance(x, "l1")
    assert d.tolist() == [[0.0, 3.0, 1.0], [3.0, 0.0, 2.0], [1.0, 2.0, 0.0]]
    d[0, 1].backward()  # d(|x_0 - x_1|_1)/dx: only the target row 0 gets a gradient
    assert x.grad.tolist() == [[1.0, -1.0], [0.0, 0.0], [0.0, 0.0]]
    c = pairwise_distance(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]), "cos_hinge")
    # cos(x0, x1) = 0, cos(x0, x2) = -1/sqrt2 -> 0, cos(x1, x2) = 2/(2*sqrt2) = 1/sqrt2
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1 / math.sqrt(2)], [0.0, 1 / math.sqrt(2), 1.0]])
    assert torch.allclose(c, expected)


def test_graph_distillation_by_hand():
    distances = torch.tensor([[0.0, 3.0, 5.0], [2.0, 0.0, 7.0], [1.0, 1.0, 0.0]])
    weights = torch.tensor([[0.0, 0.25, 0.0], [0.75, 0.0, 0.0], [0.0, 0.0, 0.0]])
    prior = torch.full((3, 3), 0.1)
    valid = pair_mask(torch.tensor([True, True, False]))
    # (0.25 + 0.1) * 3 + (0.75 + 0.1) * 2 = 1.05 + 1.7 = 2.75; edges to/from the missing modality do not count
    assert graph_distillation(distances, weights, prior, valid).item() == pytest.approx(2.75)


def test_edge_prior_by_hand():
    prior = edge_prior(("l", "a", "v"), ["l"], 0.25)
    # DMD's prior: softmax([1, 1, 0, 0, 0, 0] / 0.25) over the six edges; the two from l get e^4 / (2 e^4 + 4)
    big, small = math.exp(4) / (2 * math.exp(4) + 4), 1 / (2 * math.exp(4) + 4)
    assert prior[1, 0].item() == pytest.approx(big) and prior[2, 0].item() == pytest.approx(big)
    assert prior[0, 1].item() == pytest.approx(small) and prior[2, 1].item() == pytest.approx(small)
    assert prior.diagonal().tolist() == [0.0, 0.0, 0.0] and prior.sum().item() == pytest.approx(1.0)
    assert edge_prior(("l", "a", "v"), [], 0.25)[0, 1].item() == pytest.approx(1 / 6)


def test_edge_prior_penalty_by_hand():
    # two utterances (B=1, U=2), M=2: edge [0,1] exists in both, [1,0] only in the first; utterance 2 is padding
    weights = torch.tensor([[[[0.0, 0.2], [0.8, 0.0]], [[0.0, 0.6], [0.0, 0.0]], [[0.0, 0.9], [0.1, 0.0]]]])
    valid = torch.tensor(
        [[[[False, True], [True, False]], [[False, True], [False, False]], [[False, True], [True, False]]]]
    )
    real = torch.tensor([[True, True, False]])
    prior = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    # edge [0,1]: mean(0.2, 0.6) = 0.4 -> (0.4 - 0.5)^2 = 0.01; edge [1,0]: 0.8 -> 0.09; total 0.1
    assert edge_prior_penalty(weights, valid, real, prior).item() == pytest.approx(0.1)


# ---------------------------------------------------------------- the models
def test_decoupled_model_outputs_and_masks(tiny_corpus, tiny_batch):
    model = DecoupledModel(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels)).eval()
    out = model(tiny_batch)
    b, u, m = tiny_batch.mask.shape
    assert out.extra["shared"].shape == (b, u, m, 16) and out.extra["shared_edges"].shape == (b, u, m, m)
    assert out.extra["shared_logits"].shape == (b, u, m, len(tiny_corpus.labels))
    # the shared encoder is one map for all modalities: equal encodings give equal shared parts, not exclusive ones
    x = out.extra["encoded"]
    assert torch.allclose(out.extra["shared"], model.shared(x))
    assert not torch.allclose(model.exclusive["l"](x[:, :, 1]), model.exclusive["a"](x[:, :, 1]))


def test_decoupled_rejects_prior_sources_the_corpus_lacks(tmp_path):
    raw = quick_config(methods=[{"name": "decoupled", "options": {"prior_sources": ["x"]}}])
    with pytest.raises(CorekdError, match="prior_sources"):
        run(validate_config(raw), tmp_path / "out")


def test_decoupled_names_the_prior_sources_field():
    """Kills decoupled.Decoupled.check_modalities the field `"XXprior_sourcesXX"`; Decoupled.check_modalities the
    upper-cased text."""
    field, text = build_method("decoupled", prior_sources=["a", "x"]).check_modalities(("l", "a", "v"))
    assert field == "prior_sources"
    assert text.startswith("['x'] are not modalities of the corpus (it has ['l', 'a', 'v'])")
    assert "or [] for a uniform edge prior" in text
    assert build_method("decoupled", prior_sources=["a"]).check_modalities(("l", "a", "v")) is None


SQ2 = math.sqrt(2.0)


def test_decoupled_pure_terms_keep_their_leading_dimensions():
    """Two rows each: one value per row, not one over everything. Kills decoupled.modality_sum `.sum(None)`;
    self_regression `.mean(None)`; graph_distillation `.sum(None)`."""
    observed = torch.tensor([[True, False, True], [False, True, True]])
    assert modality_sum(torch.tensor([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]]), observed).tolist() == [5.0, 48.0]
    # rows: ((1 - 0)^2 + (2 - 4)^2) / 2 = 2.5;  ((3 - 0)^2 + (0 - 1)^2) / 2 = 5
    got = self_regression(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([[0.0, 4.0], [0.0, 1.0]]))
    assert got.tolist() == [2.5, 5.0]
    # row 0: edges l<->a valid, (0.25 + 0.1) * 3 + (0.75 + 0.1) * 2 = 2.75; row 1: only l is observed, no edge
    distances = torch.tensor([[[0.0, 3.0], [2.0, 0.0]], [[0.0, 7.0], [9.0, 0.0]]])
    weights = torch.tensor([[[0.0, 0.25], [0.75, 0.0]], [[0.0, 0.5], [0.5, 0.0]]])
    valid = pair_mask(torch.tensor([[True, True], [True, False]]))
    got = graph_distillation(distances, weights, torch.full((2, 2), 0.1), valid)
    assert got.tolist() == pytest.approx([2.75, 0.0])


def test_pairwise_distance_names_an_unknown_kind():
    """Kills decoupled.pairwise_distance `ValueError(None)`."""
    with pytest.raises(ValueError, match="unknown pair distance 'l2'"):
        pairwise_distance(torch.zeros(2, 3), "l2")


def test_edge_prior_penalty_leaves_out_edges_that_never_exist():
    """M = 3, v never observed: only edges l<->a exist; the edges to and from v have a prior (1/6 each, uniform) but
    no weight and must not count. (1/4 - 1/6)^2 + (3/4 - 1/6)^2 = 1/144 + 49/144 = 50/144.
    Kills decoupled.edge_prior_penalty `count >= 0` (which adds 4 * (1/6)^2 for the v edges)."""
    weights = torch.tensor([[[[0.0, 0.25, 0.0], [0.75, 0.0, 0.0], [0.0, 0.0, 0.0]]]])  # [1, 1, 3, 3]
    valid = pair_mask(torch.tensor([[[True, True, False]]]))
    prior = edge_prior(("l", "a", "v"), [], 0.25)
    assert prior[0, 2].item() == pytest.approx(1 / 6)
    got = edge_prior_penalty(weights, valid, torch.tensor([[True]]), prior)
    assert got.item() == pytest.approx(50 / 144)


def test_edge_prior_of_two_and_of_one_modality():
    """Two modalities, sources [l], temperature 0.5: the edge from l (target a: [1, 0]) gets e^2 / (1 + e^2), the one
    from a 1 / (1 + e^2). One modality: a 1 x 1 zero prior. Kills decoupled.edge_prior `m > 2` (a zero prior for two),
    `torch.zeros(None, m)`, `torch.zeros(m, None)`, `torch.zeros(m)`, `torch.zeros(m, )` (shape [1])."""
    prior = edge_prior(("l", "a"), ["l"], 0.5)
    e2 = math.exp(2.0)
    assert prior.flatten().tolist() == pytest.approx([0.0, 1 / (1 + e2), e2 / (1 + e2), 0.0])
    one = edge_prior(("l",), ["l"], 0.25)
    assert one.shape == (1, 1) and one.item() == 0.0


# One dialogue of three slots (u2 is padding), M = 2 (l, a), C = 2, H = 2.
#   u0: label 1, the view observes l and a (edges l<->a exist);  u1: label 0, the view hides a (no edge);  u2: padding.
D_UTT = torch.tensor([[True, True, False]])
D_AVAIL = torch.tensor([[[True, True], [True, True], [False, False]]])
D_VIEW = torch.tensor([[[True, True], [True, False], [False, False]]])
D_LABELS = torch.tensor([[1, 0, 0]])
D_LOGITS = [[0.0, 1.0], [2.0, 0.0], [9.0, -9.0]]
D_TEACHER = [[1.0, 0.0], [0.0, 0.0], [0.0, 5.0]]


# per-modality heads [U, M, C]; u1's a and all of u2 must never count
D_SHARED_LOGITS = [[[0.0, 1.0], [1.0, -1.0]], [[0.5, 0.0], [-3.0, 3.0]], [[4.0, -4.0], [4.0, -4.0]]]
D_EXCL_LOGITS = [[[2.0, 0.0], [0.0, 0.5]], [[0.0, 2.0], [3.0, -3.0]], [[4.0, -4.0], [4.0, -4.0]]]


# parts [U, M, H]
D_SHARED = [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [2.0, 0.0]], [[5.0, 5.0], [5.0, 5.0]]]
D_EXCL = [[[1.0, 1.0], [0.0, 2.0]], [[0.0, 3.0], [1.0, 0.0]], [[3.0, 3.0], [3.0, 3.0]]]
D_ENCODED = [[[0.0, 0.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]
D_RECON = [[[1.0, 1.0], [1.0, 3.0]], [[0.0, 0.0], [3.0, 3.0]], [[9.0, 9.0], [9.0, 9.0]]]
D_CYCLE = [[[2.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [5.0, 0.0]], [[9.0, 9.0], [9.0, 9.0]]]


# edge scores [U, M, M] (target, source); with graph_alpha 1: u0's weights softmax([0, ln 3]) = (1/4, 3/4)
LN3 = math.log(3.0)
D_SHARED_EDGES = [[[0.0, 0.0], [LN3, 0.0]], [[0.0, 5.0], [5.0, 0.0]], [[0.0, 5.0], [5.0, 0.0]]]
D_EXCL_EDGES = [[[0.0, LN3], [0.0, 0.0]], [[0.0, 5.0], [5.0, 0.0]], [[0.0, 5.0], [5.0, 0.0]]]


def _decoupled_loss(label_smoothing=0.0, batch=None, logits=None, teacher=None, **options):
    batch = batch if batch is not None else made_up_batch(D_AVAIL, D_AVAIL, D_LABELS, D_UTT, ("l", "a"))
    view = TrainView(replace(batch, mask=D_VIEW & batch.avail))
    t = lambda v: torch.tensor([v])  # noqa: E731  (a [1, ...] batch row)
    extra = {
        "encoded": t(D_ENCODED),
        "shared": t(D_SHARED),
        "exclusive": t(D_EXCL),
        "reconstructed": t(D_RECON),
        "exclusive_cycle": t(D_CYCLE),
        "shared_logits": t(D_SHARED_LOGITS),
        "exclusive_logits": t(D_EXCL_LOGITS),
        "shared_edges": t(D_SHARED_EDGES),
        "exclusive_edges": t(D_EXCL_EDGES),
    }
    out = Output(logits=t(logits or D_LOGITS), fused=torch.zeros(1, 3, 2), states=torch.zeros(1, 3, 2, 2), extra=extra)
    method = build_method("decoupled", **options)
    teacher_out = Output(logits=t(teacher or D_TEACHER), fused=torch.zeros(1, 3, 2), states=torch.zeros(1, 3, 2, 2))
    ctx = StepContext(
        batch=batch,
        view=view,
        output=out,
        teacher=teacher_out if method.needs_teacher else None,
        model=nn.Identity(),
        generator=torch_generator("unused"),
        label_smoothing=label_smoothing,
    )
    return method.loss(ctx)


def test_decoupled_loss_by_hand_every_term():
    """Every term of DMD's loss on made-up outputs, label smoothing 0.1, graph_alpha 1, shared_repr_weight 0.5,
    exclusive_repr_weight 2, prior from l at temperature 0.5, and KD (0.5) on.

    Kills decoupled.Decoupled.loss `mask | real` (u1's hidden a would count); Decoupled.loss `targets is None`
    (classification KD would be the squared error); Decoupled.loss and per_modality_supervised the label smoothing left
    out; Decoupled.loss `shared - exclusive`; Decoupled.loss (both), Decoupled.loss `total - ...` and `weight / term`;
    Decoupled.loss `"XXl1XX"`, `"L1"` (an unknown distance); Decoupled.loss `part_weight > 1`; Decoupled.loss `d -
    part_weight * ...`; Decoupled.loss `l_kd > 1`; and (through the per-utterance means) modality_sum `.sum(None)`,
    self_regression `.mean(None)`, graph_distillation `.sum(None)`."""
    eps = 0.1
    total, terms = _decoupled_loss(
        label_smoothing=eps,
        graph_alpha=1.0,
        shared_repr_weight=0.5,
        exclusive_repr_weight=2.0,
        prior_temperature=0.5,
        l_aux_ce=0.3,
        l_graph=0.2,
        graph_reg=3.0,
        l_rec=0.4,
        l_cyc=0.6,
        l_ort=0.7,
        l_kd=0.5,
        temperature=2.0,
        l_dict=0.0,
    )
    assert set(terms) == {
        "ce",
        "aux_ce",
        "graph_shared",
        "prior_shared",
        "graph_exclusive",
        "prior_exclusive",
        "rec",
        "cyc",
        "ort",
        "kd",
    }
    ce = (py_ce(D_LOGITS[0], 1, eps) + py_ce(D_LOGITS[1], 0, eps)) / 2
    # aux: u0 both modalities, u1 only l; each the shared head's CE plus the exclusive head's
    aux_u0 = sum(py_ce(D_SHARED_LOGITS[0][m], 1, eps) + py_ce(D_EXCL_LOGITS[0][m], 1, eps) for m in (0, 1))
    aux_u1 = py_ce(D_SHARED_LOGITS[1][0], 0, eps) + py_ce(D_EXCL_LOGITS[1][0], 0, eps)
    aux = (aux_u0 + aux_u1) / 2
    # graph: only u0 has edges (l<->a), and its distances are symmetric, so sum_e (w + prior) d = d * (1 + 1) = 2 d.
    #   shared: |0 - 1| + |1 + 1| = 3 on the logits, + 0.5 * L1(c_l, c_a) = 0.5 * 2      -> d = 4
    #   exclusive: |2 - 0| + |0 - 0.5| = 2.5 on the logits, + 2 * max(0, cos((1,1), (0,2))) = 2 / sqrt 2 -> d = 2.5 + sqrt 2
    #   mean over the two real utterances (u1 has 0): 2 d / 2 = d
    graph_shared, graph_exclusive = 4.0, 2.5 + SQ2
    # prior for (l, a): edge [1, 0] (source l) e^2 / (1 + e^2), edge [0, 1] 1 / (1 + e^2)
    e2 = math.exp(2.0)
    p01, p10 = 1 / (1 + e2), e2 / (1 + e2)
    # weights (only u0 has edges): shared [0,1] = 1/4, [1,0] = 3/4; exclusive [0,1] = 3/4, [1,0] = 1/4
    prior_shared = (0.25 - p01) ** 2 + (0.75 - p10) ** 2
    prior_exclusive = (0.75 - p01) ** 2 + (0.25 - p10) ** 2
    # rec: u0 l ((1-0)^2 + (1-0)^2)/2 = 1, a (0 + 4)/2 = 2; u1 l (4 + 0)/2 = 2 (a hidden)  -> (3 + 2) / 2
    rec = 2.5
    # cyc: u0 l (1 + 0)/2 = 0.5, a (0 + 4)/2 = 2; u1 l (0 + 4)/2 = 2                        -> (2.5 + 2) / 2
    cyc = 2.25
    # ort: u0 l cos((1,0),(1,1)) = 1/sqrt 2, a cos((0,1),(0,2)) = 1; u1 l cos((1,1),(0,3)) = 1/sqrt 2
    ort = (1 + 2 / SQ2) / 2
    kd = (py_kd(D_LOGITS[0], D_TEACHER[0], 2.0) + py_kd(D_LOGITS[1], D_TEACHER[1], 2.0)) / 2
    expected = {
        "ce": ce,
        "aux_ce": aux,
        "graph_shared": graph_shared,
        "prior_shared": prior_shared,
        "graph_exclusive": graph_exclusive,
        "prior_exclusive": prior_exclusive,
        "rec": rec,
        "cyc": cyc,
        "ort": ort,
        "kd": kd,
    }
    assert {k: v.item() for k, v in terms.items()} == pytest.approx(expected, abs=1e-6)
    want = (
        ce
        + 0.3 * aux
        + 0.2 * (graph_shared + 3.0 * prior_shared + graph_exclusive + 3.0 * prior_exclusive)
        + 0.4 * rec
        + 0.6 * cyc
        + 0.7 * ort
        + 0.5 * kd
    )
    assert total.item() == pytest.approx(want, abs=1e-6)


def test_decoupled_zero_weights_switch_their_terms_off():
    """Every weight 0: only the CE is computed. Kills decoupled.Decoupled.loss `l_aux_ce >= 0`; Decoupled.loss `l_graph
    >= 0`; Decoupled.loss `l_rec >= 0`; Decoupled.loss `l_cyc >= 0`; Decoupled.loss `l_ort >= 0`."""
    total, terms = _decoupled_loss(l_aux_ce=0.0, l_graph=0.0, l_rec=0.0, l_cyc=0.0, l_ort=0.0, l_kd=0.0, l_dict=0.0)
    assert set(terms) == {"ce"}
    assert total.item() == pytest.approx((py_ce(D_LOGITS[0], 1) + py_ce(D_LOGITS[1], 0)) / 2, abs=1e-6)


def test_decoupled_kd_on_regression_is_the_squared_error_by_hand():
    """A regression batch: L1 to the target plus l_kd times the squared error to the teacher's output.
    u0: |0.5 - 1| = 0.5, (0.5 - 1.5)^2 = 1;  u1: |-1 + 2| = 1, (-1 - 1)^2 = 4;  padding never counts.
    Kills decoupled.Decoupled.loss `regression = None` and Decoupled.loss `distill_loss(..., None)` (the classification
    KD of a one-output head is 0)."""
    batch = replace(
        made_up_batch(D_AVAIL, D_AVAIL, D_LABELS, D_UTT, ("l", "a")), targets=torch.tensor([[1.0, -2.0, 0.0]])
    )
    total, terms = _decoupled_loss(
        batch=batch,
        logits=[[0.5], [-1.0], [3.0]],
        teacher=[[1.5], [1.0], [9.0]],
        l_aux_ce=0.0,
        l_graph=0.0,
        l_rec=0.0,
        l_cyc=0.0,
        l_ort=0.0,
        l_kd=0.5,
        l_dict=0.0,
    )
    assert terms["ce"].item() == pytest.approx(0.75) and terms["kd"].item() == pytest.approx(2.5)
    assert total.item() == pytest.approx(0.75 + 0.5 * 2.5)
