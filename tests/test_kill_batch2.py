"""Follow-up tests for the second batch of mutation survivors: decoupled's (DMD's) loss terms, load_checkpoint's
error paths and what it restores, CoRe-KD's regression KD / smoothing / NCE averaging, the ablation differences
and the reconstruction model's imputer.

The losses are checked on made-up outputs with every term worked out by hand (plain Python ``math`` below, not the
library's functions). Each test names the mutants it kills; every kill was checked by applying the mutant by hand.
"""

import json
import math
from dataclasses import replace

import pandas as pd
import pytest
import torch
from helpers import build_method, made_up_batch, py_ce, py_kd
from torch import nn

from corekd.errors import CorekdError
from corekd.methods import StepContext, TrainView
from corekd.methods.decoupled import (
    edge_prior,
    edge_prior_penalty,
    graph_distillation,
    modality_sum,
    pair_mask,
    pairwise_distance,
    self_regression,
)
from corekd.methods.nce import ConflictView
from corekd.methods.reconstruction import ReconstructionModel
from corekd.models.model import ERCModel, ModelConfig, Output
from corekd.reporting.stats import (
    PairedDifference,
    format_difference,
    paired_difference,
    per_seed,
)
from corekd.seeding import torch_generator
from corekd.training import load_checkpoint, save_checkpoint

SQ2 = math.sqrt(2.0)


# ================================================================ decoupled: the pure terms
def test_decoupled_pure_terms_keep_their_leading_dimensions():
    """Two rows each: one value per row, not one over everything. Kills decoupled.py:56 `.sum(None)`; :69
    `.mean(None)`; :108 `.sum(None)`."""
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
    """Kills decoupled.py:103 `ValueError(None)`."""
    with pytest.raises(ValueError, match="unknown pair distance 'l2'"):
        pairwise_distance(torch.zeros(2, 3), "l2")


def test_edge_prior_penalty_leaves_out_edges_that_never_exist():
    """M = 3, v never observed: only edges l<->a exist; the edges to and from v have a prior (1/6 each, uniform) but
    no weight and must not count. (1/4 - 1/6)^2 + (3/4 - 1/6)^2 = 1/144 + 49/144 = 50/144.
    Kills decoupled.py:120 `count >= 0` (which adds 4 * (1/6)^2 for the v edges)."""
    weights = torch.tensor([[[[0.0, 0.25, 0.0], [0.75, 0.0, 0.0], [0.0, 0.0, 0.0]]]])  # [1, 1, 3, 3]
    valid = pair_mask(torch.tensor([[[True, True, False]]]))
    prior = edge_prior(("l", "a", "v"), [], 0.25)
    assert prior[0, 2].item() == pytest.approx(1 / 6)
    got = edge_prior_penalty(weights, valid, torch.tensor([[True]]), prior)
    assert got.item() == pytest.approx(50 / 144)


def test_edge_prior_of_two_and_of_one_modality():
    """Two modalities, sources [l], temperature 0.5: the edge from l (target a: [1, 0]) gets e^2 / (1 + e^2), the one
    from a 1 / (1 + e^2). One modality: a 1 x 1 zero prior. Kills decoupled.py:130 `m > 2` (a zero prior for two),
    `torch.zeros(None, m)`, `torch.zeros(m, None)`, `torch.zeros(m)`, `torch.zeros(m, )` (shape [1])."""
    prior = edge_prior(("l", "a"), ["l"], 0.5)
    e2 = math.exp(2.0)
    assert prior.flatten().tolist() == pytest.approx([0.0, 1 / (1 + e2), e2 / (1 + e2), 0.0])
    one = edge_prior(("l",), ["l"], 0.25)
    assert one.shape == (1, 1) and one.item() == 0.0


# ================================================================ decoupled: the loss by hand
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
    extra = {"encoded": t(D_ENCODED), "shared": t(D_SHARED), "exclusive": t(D_EXCL), "reconstructed": t(D_RECON),
             "exclusive_cycle": t(D_CYCLE), "shared_logits": t(D_SHARED_LOGITS), "exclusive_logits": t(D_EXCL_LOGITS),
             "shared_edges": t(D_SHARED_EDGES), "exclusive_edges": t(D_EXCL_EDGES)}
    out = Output(logits=t(logits or D_LOGITS), fused=torch.zeros(1, 3, 2), states=torch.zeros(1, 3, 2, 2), extra=extra)
    method = build_method("decoupled", **options)
    teacher_out = Output(logits=t(teacher or D_TEACHER), fused=torch.zeros(1, 3, 2), states=torch.zeros(1, 3, 2, 2))
    ctx = StepContext(batch=batch, view=view, output=out, teacher=teacher_out if method.needs_teacher else None,
                      model=nn.Identity(), generator=torch_generator("unused"), label_smoothing=label_smoothing)
    return method.loss(ctx)


def test_decoupled_loss_by_hand_every_term():
    """Every term of DMD's loss on made-up outputs, label smoothing 0.1, graph_alpha 1, shared_repr_weight 0.5,
    exclusive_repr_weight 2, prior from l at temperature 0.5, and KD (0.5) on.

    Kills decoupled.py:243 `mask | real` (u1's hidden a would count); :244 `targets is None` (classification KD
    would be the squared error); :249, :252, :253, :64 the label smoothing left out; :252 `shared - exclusive`;
    :255, :267 (both), :270, :273, :276, :279 `total - ...` and `weight / term`; :259 `"XXl1XX"`, `"L1"` (an
    unknown distance); :263 `part_weight > 1`; :264 `d - part_weight * ...`; :277 `l_kd > 1`; and (through the
    per-utterance means) :56 `.sum(None)`, :69 `.mean(None)`, :108 `.sum(None)`."""
    eps = 0.1
    total, terms = _decoupled_loss(label_smoothing=eps, graph_alpha=1.0, shared_repr_weight=0.5,
                                   exclusive_repr_weight=2.0, prior_temperature=0.5, l_aux_ce=0.3, l_graph=0.2,
                                   graph_reg=3.0, l_rec=0.4, l_cyc=0.6, l_ort=0.7, l_kd=0.5, temperature=2.0)
    assert set(terms) == {"ce", "aux_ce", "graph_shared", "prior_shared", "graph_exclusive", "prior_exclusive",
                          "rec", "cyc", "ort", "kd"}
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
    expected = {"ce": ce, "aux_ce": aux, "graph_shared": graph_shared, "prior_shared": prior_shared,
                "graph_exclusive": graph_exclusive, "prior_exclusive": prior_exclusive, "rec": rec, "cyc": cyc,
                "ort": ort, "kd": kd}
    assert {k: v.item() for k, v in terms.items()} == pytest.approx(expected, abs=1e-6)
    want = (ce + 0.3 * aux + 0.2 * (graph_shared + 3.0 * prior_shared + graph_exclusive + 3.0 * prior_exclusive)
            + 0.4 * rec + 0.6 * cyc + 0.7 * ort + 0.5 * kd)
    assert total.item() == pytest.approx(want, abs=1e-6)


def test_decoupled_zero_weights_switch_their_terms_off():
    """Every weight 0: only the CE is computed. Kills decoupled.py:251 `l_aux_ce >= 0`; :256 `l_graph >= 0`;
    :268 `l_rec >= 0`; :271 `l_cyc >= 0`; :274 `l_ort >= 0`."""
    total, terms = _decoupled_loss(l_aux_ce=0.0, l_graph=0.0, l_rec=0.0, l_cyc=0.0, l_ort=0.0, l_kd=0.0)
    assert set(terms) == {"ce"}
    assert total.item() == pytest.approx((py_ce(D_LOGITS[0], 1) + py_ce(D_LOGITS[1], 0)) / 2, abs=1e-6)


def test_decoupled_kd_on_regression_is_the_squared_error_by_hand():
    """A regression batch: L1 to the target plus l_kd times the squared error to the teacher's output.
    u0: |0.5 - 1| = 0.5, (0.5 - 1.5)^2 = 1;  u1: |-1 + 2| = 1, (-1 - 1)^2 = 4;  padding never counts.
    Kills decoupled.py:244 `regression = None` and :278 `distill_loss(..., None)` (the classification KD of a
    one-output head is 0)."""
    batch = replace(made_up_batch(D_AVAIL, D_AVAIL, D_LABELS, D_UTT, ("l", "a")), targets=torch.tensor([[1.0, -2.0, 0.0]]))
    total, terms = _decoupled_loss(batch=batch, logits=[[0.5], [-1.0], [3.0]], teacher=[[1.5], [1.0], [9.0]],
                                   l_aux_ce=0.0, l_graph=0.0, l_rec=0.0, l_cyc=0.0, l_ort=0.0, l_kd=0.5)
    assert terms["ce"].item() == pytest.approx(0.75) and terms["kd"].item() == pytest.approx(2.5)
    assert total.item() == pytest.approx(0.75 + 0.5 * 2.5)


# ================================================================ load_checkpoint
TINY_CFG, TINY_DIMS = ModelConfig(hidden=8, heads=1, dropout=0.0), {"l": 3, "a": 2}


def _saved(folder, model=None, edit=None):
    """A tiny checkpoint in ``folder``; ``edit`` changes its parsed model.json before it is written back."""
    save_checkpoint(model or ERCModel(TINY_CFG, TINY_DIMS, 3), folder, {"method": "no_kd"})
    meta = folder / "model.json"
    if edit is not None:
        info = json.loads(meta.read_text())
        edit(info)
        meta.write_text(json.dumps(info))
    return meta


def test_load_checkpoint_unknown_architecture_names_the_file_field_known_names_and_versions(tmp_path):
    """The error names model.json, the field architecture.name, the known architectures and the version that wrote
    the checkpoint. Kills training.py:282 `'XX, XX'.join`; :283 `path=None`, `field=None`, path or field left out,
    `"XXarchitecture.nameXX"`, `"ARCHITECTURE.NAME"`, `info.get(None, '?')`, `info.get('?')`,
    `"XXcorekd_versionXX"`, `"COREKD_VERSION"` (these lose the recorded version)."""
    from corekd import __version__
    from corekd.models.model import ARCHITECTURES

    def unknown(info):
        info["architecture"] = {"name": "nonesuch", "options": {}}
        info["corekd_version"] = "0.0.1-old"

    meta = _saved(tmp_path / "ck", edit=unknown)
    with pytest.raises(CorekdError) as caught:
        load_checkpoint(tmp_path / "ck")
    err = caught.value
    assert err.path == str(meta) and err.field == "architecture.name"
    assert {"erc", "decoupled", "reconstruction"} <= set(ARCHITECTURES)
    assert f"(known: {', '.join(sorted(ARCHITECTURES))}; written by corekd 0.0.1-old, this is {__version__})" in err.detail


def test_load_checkpoint_unknown_architecture_without_a_recorded_version(tmp_path):
    """No corekd_version in model.json: '?' stands for it. Kills training.py:283 `info.get('corekd_version', None)`,
    `info.get('corekd_version', )` (both print None) and `'XX?XX'`."""

    def unknown(info):
        info["architecture"] = {"name": "nonesuch"}
        del info["corekd_version"]

    _saved(tmp_path / "ck", edit=unknown)
    with pytest.raises(CorekdError, match=r"written by corekd \?, this is "):
        load_checkpoint(tmp_path / "ck")


def test_load_checkpoint_architecture_without_options_uses_the_defaults(tmp_path):
    """An architecture entry with a name and no options rebuilds that class with its default options (decoupled:
    graph_size 32) and loads the weights. Kills training.py:285 `arch.get("options", None)` and
    `arch.get("options", )` (no options: None, not a mapping)."""
    from corekd.methods.decoupled import DecoupledModel

    model = DecoupledModel(TINY_CFG, TINY_DIMS, 3).eval()
    _saved(tmp_path / "ck", model=model, edit=lambda info: info.update(architecture={"name": "decoupled"}))
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert type(loaded) is DecoupledModel and loaded.graph_size == 32 and info["architecture"] == {"name": "decoupled"}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_load_checkpoint_refuses_unexpected_weights_and_restores_kinds(tmp_path):
    """A weight the model has no place for is named (not dropped) with the weights file as the path; a model with a
    sequence modality comes back with its kinds."""
    from helpers import edit_weights

    model = ERCModel(TINY_CFG, TINY_DIMS, 3, {"a": "sequence"}).eval()
    _saved(tmp_path / "ck", model=model)
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert loaded.kinds == {"l": "vector", "a": "sequence"} and info["kinds"] == {"l": "vector", "a": "sequence"}
    weights_file = tmp_path / "ck" / "model.safetensors"
    edit_weights(tmp_path / "ck", lambda w: w.update({"extra.weight": torch.zeros(2)}))  # checksum recorded anew
    with pytest.raises(CorekdError, match=r"missing \[\], unexpected \['extra\.weight'\]") as caught:
        load_checkpoint(tmp_path / "ck")
    assert caught.value.path == str(weights_file)


# ================================================================ corekd
def _corekd_loss(batch, logits, options, teacher=None, conflict=None, conflict_logits=None, label_smoothing=0.0):
    b, u = batch.utt_mask.shape
    z = lambda *s: torch.zeros(b, u, *s)  # noqa: E731
    extra = {}
    if conflict is not None:
        extra = {"conflict": conflict, "conflict_output": Output(torch.tensor([conflict_logits]), z(2), z(2, 2))}
    method = build_method("corekd", **options)
    ctx = StepContext(batch=batch, view=TrainView(batch, extra), output=Output(torch.tensor([logits]), z(2), z(2, 2)),
                      teacher=Output(torch.tensor([teacher]), z(2), z(2, 2)) if teacher is not None else None,
                      model=nn.Identity(), generator=torch_generator("unused"), label_smoothing=label_smoothing)
    return method.loss(ctx)


CK_OFF = dict(l_kd=0.0, l_state=0.0, l_mstate=0.0, l_nce=0.0)


def test_corekd_kd_and_conflict_kd_on_regression_are_squared_errors_by_hand():
    """Regression, u2 padding: CE = L1 over u0, u1: (|0.5 - 1| + |-1 + 2|) / 2 = 0.75; KD = squared error to the
    teacher: ((0.5 - 1.5)^2 + (-1 - 1)^2) / 2 = 2.5; NCE-KD on the one target u0: (2 - 1.5)^2 = 0.25.
    Kills corekd.py:151 `regression = None`; :158 and :184 `distill_loss(..., None)` (the classification KD of a
    one-output head is 0)."""
    utt = torch.tensor([[True, True, False]])
    full = torch.ones(1, 3, 2, dtype=torch.bool)
    batch = replace(made_up_batch(full, full, torch.zeros(1, 3, dtype=torch.long), utt, ("l", "a")),
                    targets=torch.tensor([[1.0, -2.0, 0.0]]))
    conflict = ConflictView(batch=batch, selected=torch.tensor([[True, False, False]]), donor=torch.tensor([[1, -1, -1]]),
                            kind=torch.tensor([[0, -1, -1]]), types=("a",))
    total, terms = _corekd_loss(batch, [[0.5], [-1.0], [3.0]], dict(CK_OFF, l_kd=0.5, l_nce_kd=0.4, nce_types=["a"], nce_average="targets"),
                                teacher=[[1.5], [1.0], [9.0]], conflict=conflict, conflict_logits=[[2.0], [7.0], [7.0]])
    assert set(terms) == {"ce", "kd", "nce_kd"}
    assert {k: v.item() for k, v in terms.items()} == pytest.approx({"ce": 0.75, "kd": 2.5, "nce_kd": 0.25})
    assert total.item() == pytest.approx(0.75 + 0.5 * 2.5 + 0.4 * 0.25)


def test_corekd_ce_takes_the_label_smoothing():
    """Kills corekd.py:155 `supervised_loss(out.logits, ctx.batch, )`."""
    utt = torch.tensor([[True, True]])
    full = torch.ones(1, 2, 2, dtype=torch.bool)
    batch = made_up_batch(full, full, torch.tensor([[1, 0]]), utt, ("l", "a"))
    logits = [[0.0, 1.0], [2.0, 0.0]]
    total, terms = _corekd_loss(batch, logits, CK_OFF, label_smoothing=0.2)
    want = (py_ce(logits[0], 1, 0.2) + py_ce(logits[1], 0, 0.2)) / 2
    assert set(terms) == {"ce"} and total.item() == pytest.approx(want, abs=1e-6)


def test_corekd_nce_averaged_over_the_utterances_of_a_one_utterance_batch():
    """nce_average utterances: the targets' sum over the real utterances; one real utterance, itself the target:
    scale 1/1, so L_nce is its CE (-log 1/4 = ln 4). Kills corekd.py:175 `clamp(min=2)` (scale 1/2)."""
    utt = torch.tensor([[True, False]])
    full = torch.ones(1, 2, 2, dtype=torch.bool)
    batch = made_up_batch(full, full, torch.tensor([[1, 0]]), utt, ("l", "a"))
    conflict = ConflictView(batch=batch, selected=torch.tensor([[True, False]]), donor=torch.tensor([[1, -1]]),
                            kind=torch.tensor([[0, -1]]), types=("a",))
    total, terms = _corekd_loss(batch, [[0.0, 0.0], [0.0, 0.0]], dict(CK_OFF, l_nce=1.0, nce_types=["a"],
                                nce_average="utterances"), conflict=conflict, conflict_logits=[[LN3, 0.0], [9.0, 0.0]])
    assert terms["nce"].item() == pytest.approx(math.log(4.0), abs=1e-6)
    assert total.item() == pytest.approx(math.log(2.0) + math.log(4.0), abs=1e-6)


def test_corekd_corpus_and_task_checks_say_how_to_fix_the_config():
    """Kills corekd.py:119 the `XX...XX` and lower-cased `nce` hints; :125 the `XX...XX` and upper-cased texts."""
    field, text = build_method("corekd", nce_types=["v"]).check_modalities(("l", "a"))
    assert field == "nce_types"
    assert text.endswith("(it has ['l', 'a']); list only types of its nonverbal modalities, or switch NCE off with l_nce: 0")
    field, text = build_method("corekd", l_nce_margin=0.5).check_task("regression")
    assert field == "l_nce_margin"
    assert text == "the conflict margin compares class log-probabilities; it has no regression form (set 0)"


# ================================================================ ablation
def test_paired_difference_without_variation_has_no_p_value():
    """Equal per-seed values: the differences do not vary, the t-test is undefined: p is None, not NaN, and prints
    as n/a. Kills ablation.py:47 `math.isnan(p) and False`."""
    d = paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})
    assert d == PairedDifference(0.0, 0.0, 2, None)
    assert format_difference(d, "mae") == "+0.000 ± 0.000 (n=2, p=n/a)"


def test_per_seed_of_a_metric_the_records_lack_is_empty():
    """Kills ablation.py:52 `frame.empty and metric not in frame` (a KeyError on the missing column)."""
    frame = pd.DataFrame({"variant": ["corekd"], "condition": ["complete"], "seed": [0], "acc": [0.5]})
    assert per_seed(frame, "corekd", "complete", "wf1") == {}
    assert per_seed(frame, "corekd", "complete", "acc") == {0: 0.5}


# ================================================================ reconstruction
def test_reconstruction_imputer_is_linear_gelu_dropout_linear():
    """Hand-set imputer (hidden 8, M = 2, one hidden unit): the first layer gives -1, GELU(-1) = -Phi(-1) = -0.158655,
    the last layer copies it to the M * H = 16 outputs. In training mode dropout 0.5 zeroes the unit or doubles it.
    Kills reconstruction.py:62 the GELU left out (the outputs would be -1) and the Dropout left out (train mode
    would give -0.158655 everywhere). The default width is 2 * hidden: kills :60 `3 * h`."""
    cfg = ModelConfig(hidden=8, heads=1, dropout=0.5)
    assert ReconstructionModel(cfg, {"l": 3, "a": 2}, 3).imputer_hidden == 16
    model = ReconstructionModel(cfg, {"l": 3, "a": 2}, 3, imputer_hidden=1)
    first, last = model.imputer[0], model.imputer[-1]
    with torch.no_grad():
        first.weight.zero_(), first.bias.fill_(-1.0), last.weight.fill_(1.0), last.bias.zero_()
    encoded, mask = torch.randn(1, 20, 2, 8), torch.ones(1, 20, 2, dtype=torch.bool)
    gelu_minus_one = -0.5 * (1 + math.erf(-1 / math.sqrt(2.0)))  # -1 * Phi(-1)
    model.eval()
    assert model.impute(encoded, mask).flatten().tolist() == pytest.approx([gelu_minus_one] * 320, abs=1e-6)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        values = set(round(v, 5) for v in model.impute(encoded, mask).flatten().tolist())
    assert values == {0.0, round(2 * gelu_minus_one, 5)}
