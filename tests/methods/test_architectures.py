"""Methods whose student has its own modules: ``decoupled`` (DMD) and ``reconstruction`` (MMIN/GCNet family).

Every loss term on a hand-computed tiny case; the models' extra outputs and their masks; one training
step lowering each method's loss on a fixed batch; the architecture's checkpoint round trip; a tiny
``corekd run`` with both methods, resumed, and their analyses.
"""

import json

import pytest
import torch

from corekd.config import TrainingConfig, validate_config
from corekd.data.protocols import TrainingMissing
from corekd.errors import CorekdError
from corekd.experiments import run
from corekd.methods import StepContext, method_class
from corekd.methods.decoupled import DecoupledModel
from corekd.methods.reconstruction import ReconstructionModel
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import torch_generator
from corekd.training import Trainer, init_model, load_checkpoint, save_checkpoint
from helpers import corpus_dims, quick_config

CFG = ModelConfig(hidden=16, heads=2, dropout=0.0)


def _method(name, **options):
    cls = method_class(name)
    return cls(cls.Options(**options), TrainingMissing())


# ---------------------------------------------------------------- fairness of the initial weights
@pytest.mark.parametrize("name", ["decoupled", "reconstruction"])
def test_base_weights_are_the_plain_models_of_the_same_seed(name, tiny_corpus):
    dims, c = corpus_dims(tiny_corpus), len(tiny_corpus.labels)
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
    "decoupled+coarse": {"l_dict": 0.0},
    "decoupled+dict_kd": {"l_dict_kd": 1.0},
    "reconstruction+attached": {"rec_target": "attached", "rec_over": "missing"},
}


def _fixed_loss(method, model, batch, teacher):
    """The method's loss on a fixed view of ``batch`` (same masks and draws every call)."""
    view = method.train_view(batch, torch_generator("mask", 0), torch_generator("method", 0))
    ctx = StepContext(
        batch=batch,
        view=view,
        output=method.forward(model, view),
        teacher=teacher(batch.complete()) if method.needs_teacher else None,
        model=model,
        generator=torch_generator("method", 0),
    )
    return method.loss(ctx)


@pytest.mark.parametrize("case", sorted(ONE_STEP_CASES))
def test_one_training_step_lowers_the_loss(case, tiny_corpus, tiny_batch):
    name = case.split("+")[0]
    method = _method(name, **ONE_STEP_CASES[case])
    dims, c = corpus_dims(tiny_corpus), len(tiny_corpus.labels)
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
    model = init_model(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), 0, "student", build=method.build_model)
    start = model.imputer[0].weight.detach().clone()
    Trainer(method, model, TrainingConfig(batch_size=4), seed=0, device=torch.device("cpu")).step(tiny_batch)
    assert not torch.equal(start, model.imputer[0].weight)


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("name", ["decoupled", "reconstruction"])
def test_checkpoint_rebuilds_the_architecture(name, tiny_corpus, tiny_batch, tmp_path):
    method = _method(name, **({"graph_size": 8} if name == "decoupled" else {"imputer_hidden": 12}))
    model = init_model(
        CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), 0, "student", build=method.build_model
    ).eval()
    save_checkpoint(model, tmp_path / "ck", {"method": name})
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert type(loaded) is type(model) and info["architecture"]["name"] == name
    assert loaded.architecture_options() == model.architecture_options()
    assert torch.allclose(loaded(tiny_batch).logits, model(tiny_batch).logits)


def test_old_checkpoints_load_as_the_plain_model_and_unknown_architectures_are_named(tiny_corpus, tmp_path):
    model = init_model(CFG, corpus_dims(tiny_corpus), len(tiny_corpus.labels), 0, "student")
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
