"""``contrastive_view``: its subset view, its applicability, options, loss, and a tiny run."""

import json

import pytest
import torch

from corekd.config import validate_config
from corekd.data.protocols import Condition, standard_conditions
from corekd.experiments import run
from corekd.methods import method_class
from corekd.reporting.tables import NOT_APPLICABLE
from corekd.seeding import torch_generator
from helpers import (
    C_S_LOGITS,
    build_method,
    made_up_context,
    method_loss,
    py_ce,
    quick_config,
)


# ------------------------------------------------------------------ contrastive_view
def test_contrastive_view_sees_only_its_subset_in_training_and_on_dev(tiny_batch):
    method = build_method("contrastive_view", modalities=["v", "a"])
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
    method = build_method("contrastive_view", modalities=["a"])
    conditions = standard_conditions(mods, [0.0, 0.5])
    applicable = [c.name for c in conditions if method.not_applicable(c, mods) is None]
    assert applicable == ["fixed:a"]
    assert "scored under fixed:a only" in method.not_applicable(Condition("complete"), mods)
    # the whole corpus: its own condition is complete
    every = build_method("contrastive_view", modalities=["v", "l", "a"])
    assert [c.name for c in conditions if every.not_applicable(c, mods) is None] == ["complete"]
    for name in ("no_kd", "corrkd", "corekd", "teacher"):
        assert all(build_method(name).not_applicable(c, mods) is None for c in conditions)


def test_contrastive_view_options_and_corpus_check():
    with pytest.raises(Exception, match="must not repeat"):
        method_class("contrastive_view").Options(modalities=["a", "a"])
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        method_class("contrastive_view").Options(modalities=[])
    field, text = build_method("contrastive_view", modalities=["a", "x"]).check_modalities(("l", "a", "v"))
    assert field == "modalities" and "['x']" in text
    assert build_method("contrastive_view").check_modalities(("l", "a", "v")) is None


def test_contrastive_view_loss_is_ce_plus_weighted_info_nce(tiny_corpus, tiny_splits, tiny_batch):
    (total, terms), out, t_out = method_loss(
        build_method("contrastive_view", l_contrast=0.5, temperature=0.2), tiny_batch, tiny_splits, tiny_corpus
    )
    valid = tiny_batch.utt_mask
    s = torch.nn.functional.normalize(out.fused[valid], dim=-1)
    t = torch.nn.functional.normalize(t_out.fused[valid], dim=-1)
    nce = -(s @ t.T / 0.2).log_softmax(-1).diagonal().mean()
    assert torch.isclose(terms["contrast"], nce, rtol=1e-5)
    assert torch.isclose(total, terms["ce"] + 0.5 * nce)
    assert not build_method("contrastive_view", l_contrast=0).needs_teacher


# ------------------------------------------------------------------ a tiny run of both
def test_tiny_run_scores_contrastive_view_on_its_subset_only_and_corrkd_everywhere(tmp_path):
    cfg = quick_config(
        methods=[{"name": "no_kd"}, {"name": "corrkd"}, {"name": "contrastive_view", "options": {"modalities": ["a"]}}],
        evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "figures": True},
    )  # the t-SNE note
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
    assert not any(
        r["variant"] == "contrastive_view" for r in analyses["rejection"] + analyses["natural_conflicts"]["records"]
    )
    notes = " ".join(analyses["notes"])
    assert "contrastive_view (contrastive_view): conflict rejection" in notes and "t-SNE" in notes


def test_contrastive_view_without_contrast_is_smoothed_ce_only():
    """l_contrast = 0: no teacher, no contrast term; label smoothing reaches the CE.
    Kills contrastive_view.ContrastiveView.loss `supervised_loss(ctx.output.logits, ctx.batch, )`; ContrastiveView.loss
    `l_contrast >= 0`."""
    method = build_method("contrastive_view", modalities=["l"], l_contrast=0.0)
    assert not method.needs_teacher
    ctx = made_up_context(method, None, label_smoothing=0.2)
    ctx.teacher = None
    total, terms = method.loss(ctx)
    ce = (py_ce(C_S_LOGITS[0][0], 2, 0.2) + py_ce(C_S_LOGITS[0][1], 0, 0.2) + py_ce(C_S_LOGITS[1][0], 2, 0.2)) / 3
    assert set(terms) == {"ce"} and total.item() == pytest.approx(ce, abs=1e-6)


def test_contrastive_view_not_applicable_text():
    """The report's note for conditions other than the student's own. Kills
    contrastive_view.ContrastiveView.not_applicable `'XX,XX'.join`; ContrastiveView.not_applicable the wording of "(the
    contrastive_view method)"."""
    method = build_method("contrastive_view", modalities=["v", "a"])
    note = method.not_applicable(Condition("complete"), ("l", "a", "v"))
    assert note == "this student sees only {a,v} and is scored under fixed:av only (the contrastive_view method)"
