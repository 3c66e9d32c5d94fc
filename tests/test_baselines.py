"""The issue-14 baselines ``corrkd`` and ``contrastive_view``: their options, views, tasks, and a tiny run of both."""

import json

import pytest
import torch
from helpers import loss_before_and_after_one_step, quick_config

from corekd.config import TrainingConfig, validate_config
from corekd.data.protocols import Condition, TrainingMissing, standard_conditions
from corekd.errors import CorekdError
from corekd.methods import method_class
from corekd.methods.base import StepContext
from corekd.methods.batch_losses import contrastive_distill
from corekd.models.model import ERCModel, ModelConfig
from corekd.pipeline import run
from corekd.reporting.tables import NOT_APPLICABLE
from corekd.seeding import torch_generator
from corekd.training import TeacherReference, Trainer, init_model


def _build(name, **options):
    cls = method_class(name)
    return cls(cls.Options(**options), TrainingMissing())


def _loss(method, batch, splits, corpus, targets=None):
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    classes = 1 if targets is not None else len(corpus.labels)
    torch.manual_seed(0)
    student = ERCModel(ModelConfig(hidden=16, heads=2), dims, classes)
    teacher = ERCModel(ModelConfig(hidden=16, heads=2), dims, classes)
    view = method.train_view(batch, torch_generator("m"), torch_generator("x"))
    out = method.forward(student, view)
    with torch.no_grad():
        t_out = teacher(batch.complete())
    ctx = StepContext(batch=batch, view=view, output=out, teacher=t_out if method.needs_teacher else None,
                      model=student, generator=torch_generator("x"), auxiliary=method.auxiliary(student))
    return method.loss(ctx), out, t_out


# ------------------------------------------------------------------ corrkd
def test_corrkd_defaults_are_the_papers_weights_and_zero_weights_switch_terms_off(tiny_corpus, tiny_splits, tiny_batch):
    o = method_class("corrkd").Options()
    assert (o.l_scd, o.l_cpd, o.l_rcd, o.eta) == (1.0, 1.0, 1.0, 1.4)
    (total, terms), _, _ = _loss(_build("corrkd", l_cpd=0, l_rcd=0), tiny_batch, tiny_splits, tiny_corpus)
    assert set(terms) == {"ce", "scd"}
    assert torch.isclose(total, terms["ce"] + terms["scd"])
    off = _build("corrkd", l_scd=0, l_cpd=0, l_rcd=0)
    assert not off.needs_teacher and off.auxiliary(ERCModel(ModelConfig(hidden=16, heads=2), {"l": 3}, 4)) is None


def test_corrkd_total_weighs_each_term(tiny_corpus, tiny_splits, tiny_batch):
    (total, terms), _, _ = _loss(_build("corrkd", l_scd=0.5, l_cpd=2.0, l_rcd=3.0), tiny_batch, tiny_splits, tiny_corpus)
    expected = terms["ce"] + 0.5 * terms["scd"] + 2.0 * terms["cpd"] + 3.0 * terms["rcd"]
    assert torch.isclose(total, expected)


def test_corrkd_scd_uses_the_fused_states_of_real_utterances_and_its_reduction(tiny_corpus, tiny_splits, tiny_batch):
    valid = tiny_batch.utt_mask
    assert not bool(valid.all())  # the batch has padding, which must not enter the term
    for space in ("raw", "normalized"):
        (_, terms), out, t_out = _loss(_build("corrkd", l_cpd=0, l_rcd=0, scd_space=space, eta=3.0), tiny_batch,
                                       tiny_splits, tiny_corpus)
        s, t = out.fused[valid], t_out.fused[valid]
        if space == "normalized":
            s, t = torch.nn.functional.normalize(s, dim=-1), torch.nn.functional.normalize(t, dim=-1)
        assert torch.isclose(terms["scd"], contrastive_distill(s, t, 3.0).mean())
    n = int(valid.sum())
    (_, mean_terms), _, _ = _loss(_build("corrkd", l_cpd=0, l_rcd=0), tiny_batch, tiny_splits, tiny_corpus)
    (_, sum_terms), _, _ = _loss(_build("corrkd", l_cpd=0, l_rcd=0, scd_reduction="sum"), tiny_batch, tiny_splits, tiny_corpus)
    assert torch.isclose(sum_terms["scd"], mean_terms["scd"] * n * (n - 1), rtol=1e-5)  # eq. 1 as printed


def test_corrkd_trains_its_statistics_networks_without_touching_the_students_initial_weights(tiny_splits):
    _, _, trainer = loss_before_and_after_one_step("corrkd", tiny_splits)
    critics = trainer.auxiliary
    assert critics is not None and len(trainer.optimizer.param_groups) == 2
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in critics.parameters())
    # the critics are not part of the model: its state dict (what is saved and evaluated) is the plain model's
    assert not any(k.startswith(("target", "non_target")) for k in trainer.model.state_dict())
    # built from its own seeded stream: the same critics for the same seed, the global RNG untouched
    dims = {m: int(x.shape[-1]) for m, x in tiny_splits["train"].features.items()}
    cfg = ModelConfig(hidden=16, heads=2)
    ref = TeacherReference(init_model(cfg, dims, 4, 0, "teacher"), tiny_splits["train"], cache=True, batch_size=8,
                           device=torch.device("cpu"))
    state = torch.get_rng_state()
    first, second = (Trainer(_build("corrkd"), init_model(cfg, dims, 4, 0, "student"), TrainingConfig(), seed=0,
                             device=torch.device("cpu"), teacher=ref) for _ in range(2))
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.auxiliary.parameters(), second.auxiliary.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(first.model.state_dict().values(), init_model(cfg, dims, 4, 0, "student").state_dict().values()):
        assert torch.equal(a, b)  # the student's initial weights are every student's of the seed


def test_corrkd_on_regression_refuses_rcd_and_runs_scd_and_cpd_on_the_sentiment_sign(tiny_corpus, tiny_splits, tiny_batch):
    field, text = _build("corrkd").check_task("regression")
    assert field == "l_rcd" and "no regression form" in text
    method = _build("corrkd", l_rcd=0)
    assert method.check_task("regression") is None and _build("corrkd").check_task("classification") is None
    targets = torch.linspace(-3, 3, tiny_batch.utt_mask.numel()).view_as(tiny_batch.utt_mask)
    from dataclasses import replace

    batch = replace(tiny_batch, targets=targets)
    (total, terms), _, _ = _loss(method, batch, tiny_splits, tiny_corpus, targets=targets)
    assert set(terms) == {"ce", "scd", "cpd"} and torch.isfinite(total)


def test_corrkd_regression_run_is_refused_with_the_option_named(tmp_path):
    cfg = quick_config(methods=[{"name": "corrkd"}])
    cfg["data"]["synth"]["task"] = "regression"
    with pytest.raises(CorekdError) as err:
        run(validate_config(cfg), tmp_path / "out")
    assert err.value.field == "methods[0].options.l_rcd"


# ------------------------------------------------------------------ contrastive_view
def test_contrastive_view_sees_only_its_subset_in_training_and_on_dev(tiny_batch):
    method = _build("contrastive_view", modalities=["v", "a"])
    view = method.train_view(tiny_batch, torch_generator("m"), torch_generator("x")).batch
    mods = tiny_batch.modalities
    assert not view.mask[..., mods.index("l")].any()
    for m in ("a", "v"):  # exactly what the data has of the subset: no random missing on top
        assert torch.equal(view.mask[..., mods.index(m)], tiny_batch.avail[..., mods.index(m)])
        assert torch.equal(view.features["l"], torch.zeros_like(view.features["l"]))
    dev = method.dev_masks(tiny_batch.avail, torch_generator("d"), mods)
    assert torch.equal(dev, view.mask)
    with pytest.raises(ValueError, match="modality names"):
        method.dev_masks(tiny_batch.avail, torch_generator("d"))


def test_contrastive_view_is_applicable_to_its_own_subset_only():
    mods = ("l", "a", "v")
    method = _build("contrastive_view", modalities=["a"])
    conditions = standard_conditions(mods, [0.0, 0.5])
    applicable = [c.name for c in conditions if method.not_applicable(c, mods) is None]
    assert applicable == ["fixed:a"]
    assert "scored under fixed:a only" in method.not_applicable(Condition("complete"), mods)
    every = _build("contrastive_view", modalities=["v", "l", "a"])  # the whole corpus: its own condition is complete
    assert [c.name for c in conditions if every.not_applicable(c, mods) is None] == ["complete"]
    for name in ("no_kd", "corrkd", "corekd", "teacher"):
        assert all(_build(name).not_applicable(c, mods) is None for c in conditions)


def test_contrastive_view_options_and_corpus_check():
    with pytest.raises(Exception, match="must not repeat"):
        method_class("contrastive_view").Options(modalities=["a", "a"])
    with pytest.raises(Exception):
        method_class("contrastive_view").Options(modalities=[])
    field, text = _build("contrastive_view", modalities=["a", "x"]).check_modalities(("l", "a", "v"))
    assert field == "modalities" and "['x']" in text
    assert _build("contrastive_view").check_modalities(("l", "a", "v")) is None


def test_contrastive_view_loss_is_ce_plus_weighted_info_nce(tiny_corpus, tiny_splits, tiny_batch):
    (total, terms), out, t_out = _loss(_build("contrastive_view", l_contrast=0.5, temperature=0.2), tiny_batch,
                                       tiny_splits, tiny_corpus)
    valid = tiny_batch.utt_mask
    s = torch.nn.functional.normalize(out.fused[valid], dim=-1)
    t = torch.nn.functional.normalize(t_out.fused[valid], dim=-1)
    nce = -(s @ t.T / 0.2).log_softmax(-1).diagonal().mean()
    assert torch.isclose(terms["contrast"], nce, rtol=1e-5)
    assert torch.isclose(total, terms["ce"] + 0.5 * nce)
    assert not _build("contrastive_view", l_contrast=0).needs_teacher


# ------------------------------------------------------------------ a tiny run of both
def test_tiny_run_scores_contrastive_view_on_its_subset_only_and_corrkd_everywhere(tmp_path):
    cfg = quick_config(methods=[{"name": "no_kd"}, {"name": "corrkd"},
                                {"name": "contrastive_view", "options": {"modalities": ["a"]}}],
                       evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "figures": True})  # the t-SNE note
    result = run(validate_config(cfg), tmp_path / "out")
    conditions = {r["condition"] for r in result.records}
    assert len(conditions) == 9  # complete, six fixed, random 0.0 and 0.5
    for split in ("dev", "test"):
        rows = [r for r in result.records if r["split"] == split]
        corr = [r for r in rows if r["variant"] == "corrkd"]
        assert {r["condition"] for r in corr} == conditions
        assert all(r.get("applicable", True) and 0 <= r["weighted_f1"] <= 1 for r in corr)
        view = {r["condition"]: r for r in rows if r["variant"] == "contrastive_view"}
        assert set(view) == conditions
        assert view["fixed:a"].get("applicable", True) and 0 <= view["fixed:a"]["weighted_f1"] <= 1
        for name, r in view.items():
            if name != "fixed:a":
                assert r["applicable"] is False and "weighted_f1" not in r and "fixed:a only" in r["reason"]
    # the report: n/a cells (never a number), its fixed Avg n/a, the reason listed; corrkd has numbers everywhere
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Conditions a method is not scored under" in report and "`contrastive_view`: 8 condition(s) n/a" in report
    table = report.split("## Fixed missing modalities (weighted F1)")[1].split("\n## ")[0]
    row = next(line for line in table.splitlines() if line.startswith("| contrastive_view |"))
    cells = [c.strip() for c in row.strip("|").split("|")][1:]  # l, a, v, la, lv, av, Avg, complete
    assert cells[1] not in (NOT_APPLICABLE, "–") and [c for i, c in enumerate(cells) if i != 1] == [NOT_APPLICABLE] * 7
    dev_table = report.split("## Dev split (complete views and fixed-condition average)")[1].split("\n\n")[2]
    assert f"| contrastive_view | {NOT_APPLICABLE} | {NOT_APPLICABLE} |" in dev_table
    corr_row = next(line for line in table.splitlines() if line.startswith("| corrkd |"))
    assert NOT_APPLICABLE not in corr_row and "–" not in corr_row
    # the analyses: contrastive_view only under fixed:a, no rejection, and notes saying what was skipped and why
    analyses = json.loads((tmp_path / "out" / "analyses.json").read_text())
    assert {r["condition"] for r in analyses["drift"] if r["variant"] == "contrastive_view"} == {"fixed:a"}
    assert {r["condition"] for r in analyses["drift"] if r["variant"] == "corrkd"} == conditions
    assert {"no_kd", "corrkd"} <= {r["variant"] for r in analyses["rejection"]}
    assert not any(r["variant"] == "contrastive_view" for r in analyses["rejection"] + analyses["natural_conflicts"]["records"])
    notes = " ".join(analyses["notes"])
    assert "contrastive_view (contrastive_view): conflict rejection" in notes and "t-SNE" in notes
