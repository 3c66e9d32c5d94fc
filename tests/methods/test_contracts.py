"""Every registered method: a finite loss, gradients, its named terms; registry rules; ablations by weight."""

import re

import pytest
import torch

import corekd.methods.corekd as corekd_module
from corekd.errors import CorekdError
from corekd.methods import method_class, register, registered
from corekd.methods.base import Method, StepContext
from corekd.models.model import ERCModel, ModelConfig
from corekd.seeding import torch_generator
from corekd.training import TeacherReference
from helpers import build_method, loss_before_and_after_one_step

# The terms each method logs with default options. A registered method missing here fails the
# meta-test below: a new method must come with its expectations.
EXPECTED_TERMS = {
    "teacher": {"ce"},
    "no_kd": {"ce"},
    "vanilla_kd": {"ce", "kd"},
    "corekd": {"ce", "kd", "state", "mstate", "nce"},
    "decoupled": {
        "ce",
        "aux_ce",
        "graph_shared",
        "prior_shared",
        "graph_exclusive",
        "prior_exclusive",
        "rec",
        "cyc",
        "ort",
        "dict_shared",
        "dict_exclusive",
    },
    "reconstruction": {"ce", "rec"},
    "mmin": {"ce", "forward", "cycle"},
    "gcnet": {"ce", "rec"},
    "corrkd": {"ce", "scd", "cpd", "rcd"},
    "contrastive_view": {"ce", "contrast"},
}


def test_every_registered_method_is_covered_here():
    assert set(registered()) == set(EXPECTED_TERMS)


def _models(corpus):
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    torch.manual_seed(0)
    student = ERCModel(ModelConfig(hidden=16, heads=2), dims, len(corpus.labels))
    teacher = ERCModel(ModelConfig(hidden=16, heads=2), dims, len(corpus.labels))
    return student, teacher


def _step(method, student, batch, teacher_ref, seed=0):
    view = method.train_view(batch, torch_generator("mask", seed), torch_generator("method", seed))
    out = method.forward(student, view)
    ctx = StepContext(
        batch=batch,
        view=view,
        output=out,
        teacher=teacher_ref.outputs(batch) if method.needs_teacher else None,
        model=student,
        generator=torch_generator("method", seed),
        auxiliary=method.auxiliary(student),
    )
    return view, method.loss(ctx)


@pytest.mark.parametrize("name", sorted(EXPECTED_TERMS))
def test_method_gives_finite_loss_gradients_and_terms(name, tiny_corpus, tiny_splits, tiny_batch):
    student, teacher = _models(tiny_corpus)
    ref = TeacherReference(teacher, tiny_splits["train"], cache=True, batch_size=4, device="cpu")
    method = build_method(name)
    torch.manual_seed(0)
    student = method.build_model(student.cfg, student.dims, student.num_classes)  # the method's own architecture
    _, (total, terms) = _step(method, student, tiny_batch, ref)
    assert total.dim() == 0 and torch.isfinite(total)
    assert set(terms) == EXPECTED_TERMS[name]
    assert all(torch.isfinite(v) for v in terms.values())
    total.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    # The teacher stays frozen: TeacherReference took it out of autograd and out of train mode.
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_trains_on_complete_views_students_on_incomplete(tiny_batch):
    teacher_view = build_method("teacher").train_view(tiny_batch, torch_generator("m"), torch_generator("x")).batch
    assert torch.equal(teacher_view.mask, tiny_batch.avail)
    student_view = build_method("no_kd").train_view(tiny_batch, torch_generator("m", 5), torch_generator("x")).batch
    real = tiny_batch.utt_mask
    assert (student_view.mask[real].sum(-1) >= 1).all()
    # Students of one seed draw the same masks (fair comparison), whatever else they draw.
    other = build_method("corekd", l_nce=0).train_view(tiny_batch, torch_generator("m", 5), torch_generator("y")).batch
    assert torch.equal(student_view.mask, other.mask)


@pytest.mark.parametrize(
    "weight,fn", [("l_state", "state_anchor"), ("l_mstate", "modality_anchor"), ("l_kd", "distill_loss")]
)
def test_zero_weight_term_is_not_computed(weight, fn, monkeypatch, tiny_corpus, tiny_splits, tiny_batch):
    def boom(*a, **k):
        raise AssertionError(f"{fn} computed although {weight} = 0")

    monkeypatch.setattr(corekd_module, fn, boom)
    student, teacher = _models(tiny_corpus)
    ref = TeacherReference(teacher, tiny_splits["train"], cache=True, batch_size=4, device="cpu")
    options = {weight: 0.0}
    if fn == "distill_loss":
        options["l_nce_kd"] = 0.0
    _, (_, terms) = _step(build_method("corekd", **options), student, tiny_batch, ref)
    assert weight.removeprefix("l_") not in terms


@pytest.mark.parametrize("off", [{"l_nce": 0.0}, {"nce_prob": 0.0}])
def test_nce_off_gives_no_conflicts_and_no_term(off, tiny_corpus, tiny_splits, tiny_batch):
    student, teacher = _models(tiny_corpus)
    student.eval()
    ref = TeacherReference(teacher, tiny_splits["train"], cache=True, batch_size=4, device="cpu")
    method = build_method("corekd", **off)
    view, (total, terms) = _step(method, student, tiny_batch, ref)
    assert "conflict" not in view.extra
    assert set(terms) == {"ce", "kd", "state", "mstate"}
    # The student trains on the plain random-missing view, every real utterance scored by CE and CSA.
    plain = build_method("no_kd").train_view(tiny_batch, torch_generator("mask", 0), torch_generator("method", 0)).batch
    assert torch.equal(view.batch.mask, plain.mask)
    _, (ce, _) = _step(build_method("no_kd"), student, tiny_batch, ref)
    assert torch.allclose(terms["ce"], ce)
    assert torch.allclose(total, terms["ce"] + terms["kd"] + 0.5 * terms["state"] + 0.5 * terms["mstate"])


def test_corekd_without_state_terms_and_nce_equals_vanilla_kd(tiny_corpus, tiny_splits, tiny_batch):
    student, teacher = _models(tiny_corpus)
    student.eval()  # no dropout: the two forwards must see the same function
    ref = TeacherReference(teacher, tiny_splits["train"], cache=True, batch_size=4, device="cpu")
    _, (a, _) = _step(build_method("corekd", l_state=0, l_mstate=0, l_nce=0), student, tiny_batch, ref, seed=3)
    _, (b, _) = _step(build_method("vanilla_kd"), student, tiny_batch, ref, seed=3)
    assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("mode", ["inline", "separate"])
def test_nce_modes_cost_one_forward(mode, tiny_corpus, tiny_splits, tiny_batch):
    """inline: the conflicts are in the training view; separate: the training view and its conflict copy, stacked."""
    student, teacher = _models(tiny_corpus)
    ref = TeacherReference(teacher, tiny_splits["train"], cache=True, batch_size=4, device="cpu")
    rows = []
    student.register_forward_pre_hook(lambda module, args: rows.append(args[0].size))
    method = build_method("corekd", nce_mode=mode, nce_prob=0.5)
    view, (total, terms) = _step(method, student, tiny_batch, ref)
    conflict = view.extra["conflict"]
    assert "nce" in terms and conflict.selected.any()
    if mode == "inline":
        assert rows == [tiny_batch.size] and view.batch is conflict.batch  # the student trains on the conflict view
    else:
        assert rows == [2 * tiny_batch.size] and view.batch is not conflict.batch
        assert torch.equal(
            view.batch.mask, method.missing.masks(tiny_batch.avail, torch_generator("mask", 0)) & tiny_batch.avail
        )


def test_stacked_views_give_what_separate_forwards_give(tiny_corpus, tiny_splits, tiny_batch):
    """The default's one stacked forward = a forward of the training view + a forward of the conflict copy: the
    donors' features reach no utterance of the clean view (rows are independent dialogues)."""
    student, _ = _models(tiny_corpus)
    student.eval()  # no dropout: the forwards must see the same function
    method = build_method("corekd", nce_prob=0.5)
    view = method.train_view(tiny_batch, torch_generator("mask", 0), torch_generator("method", 0))
    clean = method.forward(student, view)
    alone, conflict_alone = student(view.batch), student(view.extra["conflict"].batch)
    for got, want in ((clean, alone), (view.extra["conflict_output"], conflict_alone)):
        assert torch.allclose(got.logits, want.logits, atol=1e-5) and torch.allclose(got.fused, want.fused, atol=1e-5)
        assert torch.allclose(got.states, want.states, atol=1e-5)
    assert not torch.allclose(alone.fused, conflict_alone.fused, atol=1e-4)  # the conflicts change something


@pytest.mark.parametrize("source", ["complete", "view"])
def test_nce_donor_source(source, tiny_batch):
    """complete: the donor's swapped modality as the data has it; view: as the student's own view has it."""
    method = build_method("corekd", nce_prob=1.0, nce_donor_source=source)
    view = method.train_view(tiny_batch, torch_generator("mask", 0), torch_generator("method", 0))
    conflict = view.extra["conflict"]
    donors = view.batch if source == "view" else tiny_batch
    mods = tiny_batch.modalities
    hidden_donor_modality = 0
    for b, u in conflict.selected.nonzero().tolist():
        d = int(conflict.donor[b, u])
        db, du = divmod(d, tiny_batch.utt_mask.shape[1])
        for m in conflict.types[int(conflict.kind[b, u])]:
            j = mods.index(m)
            assert bool(conflict.batch.mask[b, u, j]) == bool(donors.mask[db, du, j])
            assert torch.equal(conflict.batch.features[m][b, u], donors.features[m][db, du])
            hidden_donor_modality += int(tiny_batch.avail[db, du, j] and not view.batch.mask[db, du, j])
    assert hidden_donor_modality > 0  # the two sources differ on this batch


def test_optional_nce_terms(tiny_corpus, tiny_splits, tiny_batch):
    student, teacher = _models(tiny_corpus)
    ref = TeacherReference(teacher, tiny_splits["train"], cache=True, batch_size=4, device="cpu")
    _, (_, terms) = _step(
        build_method("corekd", l_nce_kd=0.5, l_nce_margin=0.5, nce_prob=0.5), student, tiny_batch, ref
    )
    assert {"nce_kd", "nce_margin"} <= set(terms)


def test_teacher_need_follows_weights():
    assert build_method("corekd").needs_teacher
    assert not build_method("corekd", l_kd=0, l_state=0, l_mstate=0).needs_teacher
    assert not build_method("vanilla_kd", l_kd=0).needs_teacher
    assert not build_method("no_kd").needs_teacher


def test_registry_rejects_duplicates_and_names_unknown_methods():
    class Impostor(Method):
        name = "corekd"

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor)
    assert {"corekd", "no_kd", "teacher", "vanilla_kd"} <= set(registered())
    with pytest.raises(CorekdError, match=re.escape("registered: " + ", ".join(sorted(registered())) + ")")):
        method_class("mystery")


def test_teacher_cache_equals_running_the_teacher(tiny_corpus, tiny_splits):
    _, teacher = _models(tiny_corpus)
    train = tiny_splits["train"]
    cached = TeacherReference(teacher, train, cache=True, batch_size=3, device="cpu")
    direct = TeacherReference(teacher, train, cache=False, batch_size=3, device="cpu")
    batch = train.batch([2, 0, 5])
    a, b = cached.outputs(batch), direct.outputs(batch)
    real = batch.utt_mask
    for field in ("logits", "fused", "states"):
        assert torch.allclose(getattr(a, field)[real], getattr(b, field)[real], atol=1e-5)


# method -> the options of its one-step case ({} = defaults). A registered method missing here fails the
# meta-test below: a new method comes with its one-step case (one entry).
ONE_STEP_CASES = {
    "teacher": {},
    "no_kd": {},
    "vanilla_kd": {},
    "corekd": {},
    "corrkd": {},
    "contrastive_view": {},
    "decoupled": {},
    "reconstruction": {},
    "mmin": {"blocks": 2, "block_hidden": [16, 8]},
    "gcnet": {},
}


def test_every_registered_method_has_a_one_step_case():
    assert set(registered()) == set(ONE_STEP_CASES), "add the new method's one-step case to ONE_STEP_CASES"


@pytest.mark.parametrize("name", sorted(ONE_STEP_CASES))
def test_one_step_lowers_the_loss_on_a_fixed_batch(name, tiny_splits):
    before, after, _ = loss_before_and_after_one_step(name, tiny_splits, ONE_STEP_CASES[name])
    assert after < before, f"{name}: loss {before:.6f} -> {after:.6f} after one step"
