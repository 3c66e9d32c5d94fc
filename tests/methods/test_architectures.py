"""Methods whose student has its own modules: ``decoupled`` (DMD) and ``reconstruction`` (MMIN/GCNet family).

Every loss term on a hand-computed tiny case; the models' extra outputs and their masks; one training
step lowering each method's loss on a fixed batch; the architecture's checkpoint round trip; a tiny
``corekd run`` with both methods, resumed, and their analyses.
"""

import json
import math

import pytest
import torch
from helpers import quick_config

from corekd.config import TrainingConfig, validate_config
from corekd.data.protocols import TrainingMissing
from corekd.errors import CorekdError
from corekd.methods import StepContext, method_class
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
from corekd.methods.reconstruction import ReconstructionModel, imputation_loss
from corekd.models.model import ERCModel, ModelConfig, Output
from corekd.pipeline import run
from corekd.seeding import torch_generator
from corekd.training import Trainer, init_model, load_checkpoint, save_checkpoint

CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)


def _method(name, **options):
    cls = method_class(name)
    return cls(cls.Options(**options), TrainingMissing())


def _dims(corpus):
    return {m: s.dim for m, s in corpus.modalities.items()}


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
    batch = Batch(features={}, mask=torch.ones(1, 1, 2, dtype=torch.bool), avail=torch.ones(1, 1, 2, dtype=torch.bool),
                  speakers=torch.zeros(1, 1, dtype=torch.long), labels=torch.tensor([[0]]),
                  utt_mask=torch.ones(1, 1, dtype=torch.bool), modalities=("l", "a"), index=torch.tensor([0]))
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
    valid = torch.tensor([[[[False, True], [True, False]], [[False, True], [False, False]],
                           [[False, True], [True, False]]]])
    real = torch.tensor([[True, True, False]])
    prior = torch.tensor([[0.0, 0.5], [0.5, 0.0]])
    # edge [0,1]: mean(0.2, 0.6) = 0.4 -> (0.4 - 0.5)^2 = 0.01; edge [1,0]: 0.8 -> 0.09; total 0.1
    assert edge_prior_penalty(weights, valid, real, prior).item() == pytest.approx(0.1)


def test_imputation_loss_by_hand():
    imputed = torch.tensor([[[1.0, 1.0], [0.0, 0.0], [3.0, 3.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])  # [2, M=3, H=2]
    target = torch.tensor([[[0.0, 2.0], [4.0, 4.0], [3.0, 5.0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]])
    selected = torch.tensor([[True, False, True], [False, False, False]])
    values, usable = imputation_loss(imputed, target, selected)
    # utterance 1: modality 0 -> (1 + 1) / 2 = 1, modality 2 -> (0 + 4) / 2 = 2; mean 1.5. utterance 2: nothing.
    assert values.tolist() == pytest.approx([1.5, 0.0]) and usable.tolist() == [True, False]


# ---------------------------------------------------------------- the models
def test_decoupled_model_outputs_and_masks(tiny_corpus, tiny_batch):
    model = DecoupledModel(CFG, _dims(tiny_corpus), len(tiny_corpus.labels)).eval()
    out = model(tiny_batch)
    b, u, m = tiny_batch.mask.shape
    assert out.extra["shared"].shape == (b, u, m, 16) and out.extra["shared_edges"].shape == (b, u, m, m)
    assert out.extra["shared_logits"].shape == (b, u, m, len(tiny_corpus.labels))
    # the shared encoder is one map for all modalities: equal encodings give equal shared parts, not exclusive ones
    x = out.extra["encoded"]
    assert torch.allclose(out.extra["shared"], model.shared(x))
    assert not torch.allclose(model.exclusive["l"](x[:, :, 1]), model.exclusive["a"](x[:, :, 1]))


def test_reconstruction_model_keeps_observed_encodings_and_never_reads_missing_features(tiny_corpus, tiny_batch):
    model = ReconstructionModel(CFG, _dims(tiny_corpus), len(tiny_corpus.labels)).eval()
    mask = tiny_batch.avail.clone()
    mask[..., 1:] = False  # language only
    view = tiny_batch.view(mask)
    noisy = tiny_batch.view(mask)
    noisy.features = {k: v + (0 if k == "l" else 5.0) for k, v in view.features.items()}  # junk where missing
    noisy.features["l"] = view.features["l"]
    a, b = model(view), model(noisy)
    assert torch.allclose(a.logits, b.logits)  # missing modalities' features never reach the prediction
    x, _ = model.encode(view)
    assert torch.allclose(model.impute(x, view.mask & view.utt_mask[..., None]), a.extra["imputed"])
    # the imputation depends on what is observed: another language input changes it
    other = tiny_batch.view(mask)
    other.features = {**view.features, "l": view.features["l"] + 1.0}
    assert not torch.allclose(model(other).extra["imputed"], a.extra["imputed"])


def test_output_extra_survives_detach_select_and_split():
    t = torch.arange(24.0).view(4, 1, 2, 3)
    out = Output(torch.zeros(4, 1, 2), torch.zeros(4, 1, 3), t, {"imputed": t * 2})
    halves = out.split(2)
    assert torch.equal(halves[1].extra["imputed"], (t * 2)[2:])
    assert torch.equal(out.select(torch.tensor([3])).extra["imputed"], (t * 2)[3:])
    assert not out.detach().extra["imputed"].requires_grad and set(out.detach().extra) == {"imputed"}


# ---------------------------------------------------------------- fairness of the initial weights
@pytest.mark.parametrize("name", ["decoupled", "reconstruction"])
def test_base_weights_are_the_plain_models_of_the_same_seed(name, tiny_corpus):
    dims, c = _dims(tiny_corpus), len(tiny_corpus.labels)
    plain = init_model(CFG, dims, c, 3, "student").state_dict()
    built = init_model(CFG, dims, c, 3, "student", build=_method(name).build_model)
    got = built.state_dict()
    assert type(built).__name__ != "ERCModel" and set(plain) < set(got)
    assert all(torch.equal(plain[k], got[k]) for k in plain)
    again = init_model(CFG, dims, c, 3, "student", build=_method(name).build_model).state_dict()
    assert all(torch.equal(got[k], again[k]) for k in got)  # the extra modules are seeded too


# ---------------------------------------------------------------- one step lowers the loss
# One entry per method with its own model: name -> options (a registry meta-test can list these names).
ONE_STEP_CASES = {
    "decoupled": {},
    "reconstruction": {},
    "decoupled+kd": {"l_kd": 1.0},
    "reconstruction+attached": {"rec_target": "attached", "rec_over": "missing"},
}


def _fixed_loss(method, model, batch, teacher):
    """The method's loss on a fixed view of ``batch`` (same masks and draws every call)."""
    view = method.train_view(batch, torch_generator("mask", 0), torch_generator("method", 0))
    ctx = StepContext(batch=batch, view=view, output=method.forward(model, view),
                      teacher=teacher(batch.complete()) if method.needs_teacher else None,
                      model=model, generator=torch_generator("method", 0))
    return method.loss(ctx)


@pytest.mark.parametrize("case", sorted(ONE_STEP_CASES))
def test_one_training_step_lowers_the_loss(case, tiny_corpus, tiny_batch):
    name = case.split("+")[0]
    method = _method(name, **ONE_STEP_CASES[case])
    dims, c = _dims(tiny_corpus), len(tiny_corpus.labels)
    model = init_model(CFG, dims, c, 0, "student", build=method.build_model)
    teacher = init_model(CFG, dims, c, 0, "teacher").eval()
    before, terms = _fixed_loss(method, model, tiny_batch, teacher)
    assert torch.isfinite(before) and len(terms) > 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    optimizer.zero_grad()
    before.backward()
    extra = [p for n, p in model.named_parameters() if n not in ERCModel(CFG, dims, c).state_dict()]
    assert extra and all(p.grad is not None for p in extra)  # every extra module is trained by the loss
    optimizer.step()
    after, _ = _fixed_loss(method, model, tiny_batch, teacher)
    assert after.item() < before.item()


def test_trainer_optimises_the_extra_modules(tiny_corpus, tiny_batch):
    method = _method("reconstruction")
    model = init_model(CFG, _dims(tiny_corpus), len(tiny_corpus.labels), 0, "student", build=method.build_model)
    start = model.imputer[0].weight.detach().clone()
    Trainer(method, model, TrainingConfig(batch_size=4), seed=0, device=torch.device("cpu")).step(tiny_batch)
    assert not torch.equal(start, model.imputer[0].weight)


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ["decoupled", "reconstruction"])
def test_checkpoint_rebuilds_the_architecture(name, tiny_corpus, tiny_batch, tmp_path):
    method = _method(name, **({"graph_size": 8} if name == "decoupled" else {"imputer_hidden": 12}))
    model = init_model(CFG, _dims(tiny_corpus), len(tiny_corpus.labels), 0, "student", build=method.build_model).eval()
    save_checkpoint(model, tmp_path / "ck", {"method": name})
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert type(loaded) is type(model) and info["architecture"]["name"] == name
    assert loaded.architecture_options() == model.architecture_options()
    assert torch.allclose(loaded(tiny_batch).logits, model(tiny_batch).logits)


def test_old_checkpoints_load_as_the_plain_model_and_unknown_architectures_are_named(tiny_corpus, tmp_path):
    model = init_model(CFG, _dims(tiny_corpus), len(tiny_corpus.labels), 0, "student")
    save_checkpoint(model, tmp_path / "ck", {"method": "no_kd"})
    meta = tmp_path / "ck" / "model.json"
    info = json.loads(meta.read_text())
    assert info["architecture"] == {"name": "erc", "options": {}}
    del info["architecture"]  # as written before architectures were recorded
    meta.write_text(json.dumps(info))
    assert type(load_checkpoint(tmp_path / "ck")[0]) is ERCModel
    info["architecture"] = {"name": "nonesuch", "options": {}}
    meta.write_text(json.dumps(info))
    with pytest.raises(CorekdError, match="unknown model architecture 'nonesuch'"):
        load_checkpoint(tmp_path / "ck")


def test_decoupled_rejects_prior_sources_the_corpus_lacks(tmp_path):
    raw = quick_config(methods=[{"name": "decoupled", "options": {"prior_sources": ["x"]}}])
    with pytest.raises(CorekdError, match="prior_sources"):
        run(validate_config(raw), tmp_path / "out")


# ---------------------------------------------------------------- end to end
def test_run_trains_both_resumes_them_from_their_checkpoints_and_analyses_them(tmp_path):
    raw = quick_config(methods=[{"name": "no_kd"}, {"name": "decoupled"}, {"name": "reconstruction"}])
    raw["evaluation"]["analyses"] = True
    raw["evaluation"]["figures"] = False
    out = tmp_path / "out"
    first = run(validate_config(raw), out)
    for name, cls in (("decoupled", DecoupledModel), ("reconstruction", ReconstructionModel)):
        model, info = load_checkpoint(out / "checkpoints" / name / "seed0")
        assert type(model) is cls and info["architecture"]["name"] == name
        assert {r["condition"] for r in first.records if r["variant"] == name} >= {"complete"}
    analyses = json.loads((out / "analyses.json").read_text())
    assert {"decoupled", "reconstruction"} <= set(json.dumps(analyses).split('"')), "analyses miss a method"
    # --resume of a finished run: every model is kept, reloaded through its checkpoint, and analysed again
    second = run(validate_config(raw), out, resume=True)
    key = lambda r: (r["variant"], r["split"], r["condition"])  # noqa: E731
    assert sorted(map(key, second.records)) == sorted(map(key, first.records))
    same = {key(r): r for r in first.records}
    assert all(r == same[key(r)] for r in second.records)
    assert json.loads((out / "analyses.json").read_text()).keys() == analyses.keys()
