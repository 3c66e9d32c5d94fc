"""``decoupled``'s fine-grained stage (DHMD's cross-modal dictionary matching): dictionary activations and the matching
losses on hand-computed tiny cases (2 atoms, 2 dimensions), the switch (off = DMD's coarse loss and model, exactly),
the teacher-to-student option, and a tiny ``corekd run`` whose model keeps its dictionaries through checkpoint and
bundle."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import corekd
from corekd.config import validate_config
from corekd.data.batching import SplitTensors
from corekd.evaluation.predict import predict as eval_predict
from corekd.experiments import run
from corekd.methods import StepContext, TrainView
from corekd.methods.decoupled import (
    DecoupledModel,
    activation_matching,
    dictionary_log_activations,
    dictionary_similarity,
    teacher_pairs,
)
from corekd.models.model import ModelConfig, Output
from corekd.seeding import torch_generator
from corekd.serving.bundle import export_bundle
from corekd.training import init_model, load_checkpoint
from helpers import as_interchange, build_method, corpus_dims, made_up_batch, py_ce, quick_config

LN2, LN3 = math.log(2.0), math.log(3.0)


def _log(*probs):
    return torch.tensor(probs).log()


# ---------------------------------------------------------------- pure terms by hand
def test_dictionary_similarity_is_the_cosine_to_each_atom_by_hand():
    atoms = torch.tensor([[2.0, 0.0], [0.0, 5.0]])  # two atoms, lengths 2 and 5: only their directions count
    parts = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-1.0, 1.0]])
    # [3, 4] / 5 = [0.6, 0.8]; [0, 2] -> [0, 1]; [-1, 1] / sqrt 2
    expected = [[0.6, 0.8], [0.0, 1.0], [-1 / math.sqrt(2), 1 / math.sqrt(2)]]
    assert torch.allclose(dictionary_similarity(parts, atoms), torch.tensor(expected))
    assert dictionary_similarity(torch.zeros(4, 3, 2), atoms).shape == (4, 3, 2)  # leading dimensions kept


def test_dictionary_activations_are_the_tempered_softmax_by_hand():
    # cosines [0.6, 0.8] at temperature 0.2: softmax([3, 4]) = [1, e] / (1 + e)
    got = dictionary_log_activations(torch.tensor([0.6, 0.8]), 0.2).exp()
    assert got.tolist() == pytest.approx([1 / (1 + math.e), math.e / (1 + math.e)])
    # cosines [0, 1] at temperature 1 / ln 3: softmax([0, ln 3]) = [1/4, 3/4]
    assert dictionary_log_activations(torch.tensor([0.0, 1.0]), 1 / LN3).exp().tolist() == pytest.approx([0.25, 0.75])


def test_activation_matching_by_hand_and_the_source_is_detached():
    # a_l = [1/4, 3/4], a_a = [1/2, 1/2]:
    #   edge [l <- a]: KL(a_a || a_l) = 1/2 ln(2) + 1/2 ln(2/3) = ln 2 - 1/2 ln 3
    #   edge [a <- l]: KL(a_l || a_a) = 1/4 ln(1/2) + 3/4 ln(3/2) = 3/4 ln 3 - ln 2
    #   mean of the two: (1/4 ln 3) / 2 = ln 3 / 8
    log_a = torch.stack([_log(0.25, 0.75), _log(0.5, 0.5)]).requires_grad_(True)  # [M=2, K=2]
    valid = torch.tensor([[False, True], [True, False]])
    got = activation_matching(log_a, log_a, valid)
    assert got.item() == pytest.approx(LN3 / 8)
    one = activation_matching(log_a, log_a, torch.tensor([[False, True], [False, False]]))  # only [l <- a]
    assert one.item() == pytest.approx(LN2 - LN3 / 2)
    # only the target gets a gradient: d KL(p || q) / d log q_j = -p (source p = a_a = [1/2, 1/2])
    one.backward()
    assert torch.allclose(log_a.grad, torch.tensor([[-0.5, -0.5], [0.0, 0.0]]))


def test_activation_matching_counts_only_valid_edges_per_row():
    """Two rows: three modalities with v unobserved (only l<->a count), then one observed modality (no edge: 0)."""
    log_a = torch.stack([_log(0.25, 0.75), _log(0.5, 0.5), _log(0.9, 0.1)])  # [M=3, K=2]
    rows = torch.stack([log_a, log_a])  # [2, 3, 2]
    from corekd.methods.decoupled import pair_mask

    valid = pair_mask(torch.tensor([[True, True, False], [False, True, False]]))
    assert activation_matching(rows, rows, valid).tolist() == pytest.approx([LN3 / 8, 0.0])


def test_teacher_pairs_by_hand():
    observed = torch.tensor([True, False, True])  # the student's view: l, v
    available = torch.tensor([True, True, False])  # the teacher's complete view: l, a
    assert teacher_pairs(observed, available).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, False],
    ]


# ---------------------------------------------------------------- the loss on made-up outputs
# One dialogue of three slots (u2 is padding), M = 2 (l, a), C = 2, K = 2 atoms.
#   u0: label 1, the view observes l and a;  u1: label 0, the view hides a;  u2: padding.
D_UTT = torch.tensor([[True, True, False]])
D_AVAIL = torch.tensor([[[True, True], [True, True], [False, False]]])
D_VIEW = torch.tensor([[[True, True], [True, False], [False, False]]])
D_LABELS = torch.tensor([[1, 0, 0]])
D_LOGITS = [[0.0, 1.0], [2.0, 0.0], [9.0, -9.0]]
# cosines [U, M, K]; at dict_temperature 1 / ln 3: [0, 1] -> [1/4, 3/4], [0, 0] -> [1/2, 1/2], [1, 0] -> [3/4, 1/4]
D_SHARED_SIM = [[[0.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]
D_EXCL_SIM = [[[0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]
COARSE_OFF = dict(l_aux_ce=0.0, l_graph=0.0, l_rec=0.0, l_cyc=0.0, l_ort=0.0)


def _loss(batch=None, model=None, teacher_states=None, with_similarity=True, **options):
    batch = batch if batch is not None else made_up_batch(D_AVAIL, D_AVAIL, D_LABELS, D_UTT, ("l", "a"))
    view = TrainView(replace(batch, mask=D_VIEW & batch.avail))
    t = lambda v: torch.tensor([v])  # noqa: E731  (a [1, ...] batch row)
    zeros = torch.zeros(1, 3, 2, 2)
    extra = {
        k: zeros
        for k in ("encoded", "shared", "exclusive", "reconstructed", "exclusive_cycle", "shared_logits")
        + ("exclusive_logits", "shared_edges", "exclusive_edges")
    }
    if with_similarity:
        extra |= {"shared_similarity": t(D_SHARED_SIM), "exclusive_similarity": t(D_EXCL_SIM)}
    out = Output(logits=t(D_LOGITS), fused=torch.zeros(1, 3, 2), states=zeros, extra=extra)
    method = build_method("decoupled", **options)
    states = teacher_states if teacher_states is not None else torch.zeros(1, 3, 2, 2)
    teacher = Output(logits=t(D_LOGITS), fused=torch.zeros(1, 3, 2), states=states)
    ctx = StepContext(
        batch=batch,
        view=view,
        output=out,
        teacher=teacher if method.needs_teacher else None,
        model=model if model is not None else nn.Identity(),
        generator=torch_generator("unused"),
    )
    return method.loss(ctx)


CE = (py_ce(D_LOGITS[0], 1) + py_ce(D_LOGITS[1], 0)) / 2


def test_dictionary_matching_loss_by_hand():
    """Both spaces, the mean over the real utterances of each utterance's mean over its edges.

    shared: u0 l [1/4, 3/4], a [1/2, 1/2] -> ln 3 / 8 (as above); u1 observes only l -> 0; mean ln 3 / 16.
    exclusive: u0 l [1/4, 3/4], a [3/4, 1/4]: KL either way = 3/4 ln 3 + 1/4 ln(1/3) = 1/2 ln 3; u1 -> 0 (its hidden a,
    [1/4, 3/4] vs l's [3/4, 1/4], would add 1/2 ln 3 if it counted); mean ln 3 / 4."""
    total, terms = _loss(dict_temperature=1 / LN3, l_dict=0.5, **COARSE_OFF)
    assert set(terms) == {"ce", "dict_shared", "dict_exclusive"}
    assert terms["dict_shared"].item() == pytest.approx(LN3 / 16)
    assert terms["dict_exclusive"].item() == pytest.approx(LN3 / 4)
    assert total.item() == pytest.approx(CE + 0.5 * (LN3 / 16 + LN3 / 4))


def test_the_stage_off_is_exactly_the_coarse_loss_and_on_adds_only_its_terms():
    """Defaults (the two-stage loss) minus l_dict * (its two terms) = the loss with l_dict 0, term for term; with the
    stage off no similarity is read at all (the coarse model has no dictionary)."""
    on_total, on = _loss()
    off_total, off = _loss(l_dict=0.0, with_similarity=False)
    assert set(on) - set(off) == {"dict_shared", "dict_exclusive"}
    assert all(torch.equal(on[k], off[k]) for k in off)
    default = build_method("decoupled").options
    assert default.l_dict == 0.1 and default.dict_size == 32 and default.dict_temperature == 0.1
    assert on_total.item() == pytest.approx((off_total + 0.1 * (on["dict_shared"] + on["dict_exclusive"])).item())
    assert not build_method("decoupled").needs_teacher and build_method("decoupled", l_dict_kd=0.5).needs_teacher


def _identity_model():
    """A DecoupledModel (H = 8, K = 2) whose shared and exclusive encoders are the identity and whose atoms are the
    first two unit vectors: a teacher state [x, y, 0, ...] has cosines [x, y] / |(x, y)| in both spaces."""
    cfg = ModelConfig(hidden=8, heads=2, dropout=0.0)
    model = DecoupledModel(cfg, {"l": 3, "a": 3}, 2, dictionary_size=2)
    with torch.no_grad():
        for linear in (model.shared, *model.exclusive.values()):
            linear.weight.copy_(torch.eye(8))
            linear.bias.zero_()
        model.shared_dictionary.copy_(torch.eye(8)[:2])
        model.exclusive_dictionary.copy_(torch.eye(8)[:2])
    return model


def test_teacher_to_student_matching_by_hand():
    """l_dict_kd: each observed student modality j imitates every modality i of the teacher's complete view.

    Teacher states (first two dims; the identity model): u0 l [0, 1] -> [1/4, 3/4], a [1, 1] -> [1/2, 1/2];
    u1 l [1, 0] -> [3/4, 1/4]; u1's a is not available in the complete view, so never a source (its state [1, 1]
    would turn u1's shared mean into ln 2 / 2 and its exclusive mean into ln 2 / 2 - ln 3 / 4).
    shared, student u0 l [1/4, 3/4], a [1/2, 1/2]: edges l<-l 0, a<-a 0, l<-a ln 2 - ln 3 / 2, a<-l 3/4 ln 3 - ln 2,
      mean ln 3 / 16; u1 l [1/4, 3/4] <- teacher l [3/4, 1/4]: 1/2 ln 3. Mean over u0, u1: (ln 3 / 16 + ln 3 / 2) / 2.
    exclusive, student u0 l [1/4, 3/4], a [3/4, 1/4]: l<-l 0, l<-a KL([1/2,1/2] || [1/4,3/4]) = ln 2 - ln 3 / 2,
      a<-l 1/2 ln 3, a<-a KL([1/2,1/2] || [3/4,1/4]) = ln 2 - ln 3 / 2: mean (2 ln 2 - ln 3 / 2) / 4;
      u1 l [3/4, 1/4] <- teacher l [3/4, 1/4]: 0."""
    avail = torch.tensor([[[True, True], [True, False], [False, False]]])
    batch = made_up_batch(avail, avail, D_LABELS, D_UTT, ("l", "a"))
    states = torch.zeros(1, 3, 2, 8)
    states[0, 0, 0, 1] = 1.0  # u0 l: [0, 1]
    states[0, 0, 1, :2] = 1.0  # u0 a: [1, 1]
    states[0, 1, 0, 0] = 1.0  # u1 l: [1, 0]
    states[0, 1, 1, :2] = torch.tensor([1.0, 1.0])  # u1 a: not available, never a source
    states[0, 2] = torch.tensor([0.0, 1.0] + [0.0] * 6)  # padding
    total, terms = _loss(
        batch=batch,
        model=_identity_model(),
        teacher_states=states,
        dict_temperature=1 / LN3,
        l_dict=0.0,
        l_dict_kd=2.0,
        **COARSE_OFF,
    )
    assert set(terms) == {"ce", "dict_kd_shared", "dict_kd_exclusive"}
    shared = (LN3 / 16 + LN3 / 2) / 2
    exclusive = ((2 * LN2 - LN3 / 2) / 4 + 0.0) / 2
    assert terms["dict_kd_shared"].item() == pytest.approx(shared, abs=1e-6)
    assert terms["dict_kd_exclusive"].item() == pytest.approx(exclusive, abs=1e-6)
    assert total.item() == pytest.approx(CE + 2.0 * (shared + exclusive), abs=1e-6)


def test_teacher_to_student_matching_needs_the_decoupled_model():
    with pytest.raises(TypeError, match="l_dict_kd needs its DecoupledModel, got Identity"):
        _loss(l_dict=0.0, l_dict_kd=1.0)


# ---------------------------------------------------------------- the model
def test_the_model_has_dictionaries_only_with_the_stage_on(tiny_corpus, tiny_batch):
    dims, c = corpus_dims(tiny_corpus), len(tiny_corpus.labels)
    cfg = ModelConfig(hidden=16, heads=2, dropout=0.0)
    on = init_model(cfg, dims, c, 0, "student", build=build_method("decoupled", dict_size=5).build_model).eval()
    off = init_model(cfg, dims, c, 0, "student", build=build_method("decoupled", l_dict=0.0).build_model).eval()
    kd_only = build_method("decoupled", l_dict=0.0, l_dict_kd=1.0).build_model(cfg, dims, c)
    assert on.shared_dictionary.shape == (5, 16) and on.exclusive_dictionary.shape == (5, 16)
    assert kd_only.architecture_options() == {"graph_size": 32, "dictionary_size": 32}
    # off: the coarse model, its checkpoint options as before the stage existed; on: the same weights plus two atoms sets
    assert off.architecture_options() == {"graph_size": 32} and not hasattr(off, "shared_dictionary")
    on_weights, off_weights = on.state_dict(), off.state_dict()
    assert set(on_weights) - set(off_weights) == {"shared_dictionary", "exclusive_dictionary"}
    assert all(torch.equal(on_weights[k], off_weights[k]) for k in off_weights)
    out = on(tiny_batch)
    b, u, m = tiny_batch.mask.shape
    assert out.extra["shared_similarity"].shape == (b, u, m, 5)
    assert torch.allclose(
        out.extra["shared_similarity"], dictionary_similarity(out.extra["shared"], on.shared_dictionary)
    )
    assert torch.allclose(
        out.extra["exclusive_similarity"], dictionary_similarity(out.extra["exclusive"], on.exclusive_dictionary)
    )
    assert "shared_similarity" not in off(tiny_batch).extra
    assert torch.equal(
        on(tiny_batch).logits, off(tiny_batch).logits
    )  # the dictionaries shape the loss, not the readout


# ---------------------------------------------------------------- end to end
def test_run_with_teacher_trains_saves_reloads_and_predicts_with_the_dictionaries(tmp_path, tiny_corpus):
    raw = quick_config(
        methods=[{"name": "teacher"}, {"name": "decoupled", "options": {"dict_size": 6, "l_dict_kd": 0.5}}],
        evaluation={"batch_size": 8, "random_rates": [0.0], "analyses": False, "figures": False},
    )
    out = tmp_path / "run"
    result = run(validate_config(raw, "cfg.yaml"), out)
    history = next(t for t in result.trainings if t["method"] == "decoupled")["history"]
    assert {"dict_shared", "dict_exclusive", "dict_kd_shared", "dict_kd_exclusive"} <= set(history[-1])
    assert all(math.isfinite(e["loss"]) for e in history)
    model, info = load_checkpoint(out / "checkpoints" / "decoupled" / "seed0")
    assert type(model) is DecoupledModel and info["architecture"]["options"]["dictionary_size"] == 6
    assert model.shared_dictionary.shape == (6, 16)
    bundle = export_bundle(out, "decoupled", tmp_path / "bundle")
    predictor = corekd.load(bundle)
    assert torch.equal(predictor.bundle.model.shared_dictionary, model.shared_dictionary)
    split = SplitTensors.from_corpus(tiny_corpus, "test")
    masks = split.avail.clone()
    masks[..., 1] = False  # audio missing everywhere
    reference = eval_predict(model, split, masks, 4, "cpu").probs
    dialogues = [as_interchange(d, tiny_corpus, masks[i].numpy()) for i, d in enumerate(tiny_corpus.split("test"))]
    rows = [r for rs in predictor.predict_many(dialogues) for r in rs]
    probs = np.array([[r["probabilities"][name] for name in tiny_corpus.labels] for r in rows])
    assert len(rows) == split.num_utterances and np.abs(probs - reference).max() < 1e-5


def test_search_space_names_real_options_within_their_bounds():
    """Each searched option is a field of the options, and its range's ends are valid values of it."""
    cls = type(build_method("decoupled"))
    assert {"l_dict", "dict_size", "dict_temperature"} <= set(cls.search_space)
    for name, spec in cls.search_space.items():
        assert name in cls.Options.model_fields
        values = spec.get("float") or spec.get("int") or spec["choice"]
        for value in values:
            cls.Options(**{name: value})  # raises if out of the option's bounds
