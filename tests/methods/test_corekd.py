"""CoRe-KD's anchors (issue 28): view-dependent modality states, the refusal of L_mstate on a backbone whose states
cannot depend on the view, NCE at its stated share, and the analyses and history that show both."""

import json
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from corekd.config import validate_config
from corekd.data.batching import Batch
from corekd.data.protocols import TrainingMissing
from corekd.errors import CorekdError
from corekd.experiments import run
from corekd.methods import StepContext, TrainView, method_class
from corekd.methods.nce import ConflictView, nce_view
from corekd.models.model import ERCModel, ModelConfig, Output, states_depend_on_view
from corekd.seeding import torch_generator
from helpers import build_method, made_up_batch, py_ce, quick_config


def _model(corpus, **options):
    dims = {m: s.dim for m, s in corpus.modalities.items()}
    torch.manual_seed(0)
    return ERCModel(ModelConfig(hidden=16, heads=2, **options), dims, len(corpus.labels)).eval()


def _hide(batch: Batch, modality: str) -> Batch:
    mask = batch.avail.clone()
    mask[..., batch.modalities.index(modality)] = False
    return batch.view(mask)


@pytest.mark.parametrize("state", ["context", "crossmodal"])
def test_an_observed_modalitys_state_changes_when_another_modality_is_hidden(tiny_corpus, tiny_batch, state):
    model = _model(tiny_corpus, modality_state=state)
    complete, without_v = model(tiny_batch.complete()), model(_hide(tiny_batch, "v"))
    both = tiny_batch.avail[..., 0] & tiny_batch.avail[..., 1] & tiny_batch.utt_mask  # l and a observed in both views
    for j in (0, 1):  # l, a
        diff = (complete.states[:, :, j] - without_v.states[:, :, j]).abs().amax(-1)[both]  # [n]
        assert diff.min() > 1e-6
    assert states_depend_on_view(model.cfg)


def test_a_context_free_encoding_is_the_same_whatever_else_is_hidden(tiny_corpus, tiny_batch):
    model = _model(tiny_corpus, modality_state="encoding")  # context_over: fused
    complete, without_v = model(tiny_batch.complete()), model(_hide(tiny_batch, "v"))
    assert torch.equal(complete.states[..., :2, :], without_v.states[..., :2, :])
    assert not states_depend_on_view(model.cfg)


def test_the_head_reads_the_context_modality_states(tiny_corpus, tiny_batch):
    """Under `context`, the fused state is the observed mean of the h_m: moving h_m moves the prediction."""
    model = _model(tiny_corpus, modality_state="context")
    out = model(tiny_batch)
    observed = (tiny_batch.mask & tiny_batch.utt_mask[..., None]).float()  # [B, U, M]
    mean = (out.states * observed[..., None]).sum(2) / observed.sum(-1, keepdim=True).clamp(min=1)
    assert torch.allclose(out.fused, mean, atol=1e-6)
    assert torch.allclose(out.logits, model.head(mean), atol=1e-6)


def test_a_hidden_modalitys_context_state_is_computed_from_the_view(tiny_corpus, tiny_batch):
    """mstate_over: all anchors something: the state of a hidden modality is not a constant."""
    model = _model(tiny_corpus, modality_state="context")
    out = model(_hide(tiny_batch, "v"))
    hidden_v = out.states[..., 2, :][tiny_batch.utt_mask]  # [n, H]
    assert hidden_v.std(0).max() > 1e-4


@pytest.mark.parametrize(
    "options,state,refused",
    [
        ({}, "encoding", True),
        ({"l_mstate": 0.0}, "encoding", False),
        ({}, "context", False),
        ({}, "crossmodal", False),
        ({"mstate_over": "all"}, "encoding", True),
    ],
)
def test_l_mstate_on_a_view_independent_backbone_is_refused(options, state, refused):
    raw = quick_config(
        model={"hidden": 16, "heads": 2, "modality_state": state}, methods=[{"name": "corekd", "options": options}]
    )
    if not refused:
        validate_config(raw, "x.yaml")
        return
    with pytest.raises(CorekdError) as err:
        validate_config(raw, "x.yaml")
    assert err.value.field == "methods[0].options.l_mstate"
    assert "model.modality_state" in str(err.value)


def test_context_over_modality_with_a_context_counts_as_view_dependent():
    assert states_depend_on_view(ModelConfig(context_over="modality"))
    assert not states_depend_on_view(ModelConfig(context_over="modality", context_layers=0))
    with pytest.raises(ValueError, match="context_over 'fused'"):
        ModelConfig(context_over="modality", modality_state="context")


def _batch(n_real: int, n_language: int) -> Batch:
    """One dialogue of ``n_real`` utterances with alternating labels; language observed on the first ``n_language``."""
    avail = torch.ones(1, n_real, 3, dtype=torch.bool)
    mask = avail.clone()
    mask[0, n_language:, 0] = False
    feats = {m: torch.randn(1, n_real, 2, generator=torch_generator("f", i)) for i, m in enumerate("lav")}
    return Batch(
        features=feats,
        mask=mask,
        avail=avail,
        labels=(torch.arange(n_real) % 2)[None],
        utt_mask=torch.ones(1, n_real, dtype=torch.bool),
        speakers=torch.zeros(1, n_real, dtype=torch.long),
        modalities=("l", "a", "v"),
        index=torch.tensor([0]),
    )


def test_the_draw_among_the_eligible_keeps_the_stated_share():
    # 10 real utterances, 5 with language: share 0.2 needs 2 targets in expectation -> 0.4 among the 5 eligible
    cv = nce_view(_batch(10, 5), _batch(10, 5), 0.2, ("a",), torch_generator("nce", 0))
    assert cv.draw_prob == pytest.approx(0.4) and not cv.capped
    # share 0.6 would need 6 of 5 eligible: capped at 1, and said
    cv = nce_view(_batch(10, 5), _batch(10, 5), 0.6, ("a",), torch_generator("nce", 0))
    assert cv.draw_prob == 1.0 and cv.capped and int(cv.selected.sum()) == 5
    # every utterance eligible: the draw is the share itself
    cv = nce_view(_batch(10, 10), _batch(10, 10), 0.2, ("a",), torch_generator("nce", 0))
    assert cv.draw_prob == pytest.approx(0.2)


def test_the_realised_share_is_nce_prob_in_expectation():
    selected = total = 0
    for seed in range(300):
        cv = nce_view(_batch(10, 4), _batch(10, 4), 0.2, ("a", "v"), torch_generator("nce", seed))
        selected, total = selected + int(cv.selected.sum()), total + 10
    assert selected / total == pytest.approx(0.2, abs=0.015)  # 0.2 * 10 / 4 = 0.5 among the 4 eligible


def test_a_run_records_nce_share_and_mstate_drift(tmp_path):
    cfg = validate_config(
        quick_config(
            model={"hidden": 16, "heads": 2, "modality_state": "context"},
            training={"epochs": 2, "patience": 2, "batch_size": 4},
            methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}],
        )
    )
    run(cfg, tmp_path / "r")
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    corekd = [t for t in results["trainings"] if t["variant"] == "corekd"][0]
    shares = [h["nce_share"] for h in corekd["history"]]
    assert len(shares) == corekd["epochs_run"] and all(0.05 < s < 0.4 for s in shares)
    assert all("nce_share" not in h for t in results["trainings"] if t["variant"] != "corekd" for h in t["history"])
    analyses = json.loads((tmp_path / "r" / "analyses.json").read_text())
    rows = analyses["mstate_drift"]
    assert {r["modality"] for r in rows} == {"l", "a", "v"}
    assert {r["variant"] for r in rows} == {"teacher", "no_kd", "corekd"}
    by = {(r["variant"], r["condition"], r["modality"]): r for r in rows}
    assert by[("corekd", "fixed:l", "a")]["utterances"] == 0  # a hidden modality has no observed utterance
    assert by[("corekd", "complete", "l")]["normalized"] != by[("corekd", "fixed:la", "l")]["normalized"]
    ref = by[("no_kd", "complete", "l")]["normalized"]
    assert by[("corekd", "complete", "l")]["relative_to_no_kd"] == pytest.approx(
        (by[("corekd", "complete", "l")]["normalized"] - ref) / ref
    )
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Modality-state drift" in report and "realised share" in report


def test_config_check_and_run_refuse_l_mstate_on_encodings_in_one_line(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from corekd.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            quick_config(model={"hidden": 16, "heads": 2, "modality_state": "encoding"}, methods=[{"name": "corekd"}])
        )
    )
    for command in (["config", "check", str(path)], ["run", str(path), "--out", str(tmp_path / "r")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "methods[0].options.l_mstate" in lines[0] and "c.yaml" in lines[0]
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_written_before_modality_states_loads_as_encodings(tmp_path):
    from corekd.training import (
        MODEL_META_FILE,
        init_model,
        load_checkpoint,
        save_checkpoint,
    )

    model = init_model(ModelConfig(hidden=16, heads=2, modality_state="encoding"), {"l": 4, "a": 3}, 2, 0, "student")
    save_checkpoint(model, tmp_path, {"labels": ["x", "y"], "task": "classification"})
    meta = json.loads((tmp_path / MODEL_META_FILE).read_text())
    del meta["model"]["modality_state"]  # as an older corekd wrote it
    (tmp_path / MODEL_META_FILE).write_text(json.dumps(meta))
    loaded, _ = load_checkpoint(tmp_path)
    assert loaded.cfg.modality_state == "encoding"


# ---------------------------------------------------------------- CoRe-KD's conflict views and margin
def _corekd(**options):
    cls = method_class("corekd")
    return cls(cls.Options(**options), TrainingMissing())


def test_corekd_conflicts_come_from_its_own_stream_only(tiny_batch):
    method = _corekd(nce_prob=0.5)
    views = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # the global RNG must not matter
        views.append(
            method.train_view(tiny_batch, torch_generator("m", 3), torch_generator("nce", 3)).extra["conflict"]
        )
    assert views[0].selected.any()
    assert torch.equal(views[0].selected, views[1].selected) and torch.equal(views[0].donor, views[1].donor)


def test_nce_targets_option_decides_whether_targets_keep_their_language(tiny_batch):
    found = {}
    for targets in ("language_observed", "all"):
        method = _corekd(nce_prob=1.0, nce_targets=targets)
        method.missing = TrainingMissing(low=0.6, high=0.6)  # language hidden on a good share of utterances
        view = method.train_view(tiny_batch, torch_generator("m", 0), torch_generator("nce", 0))
        conflict = view.extra["conflict"]
        drawn = method.missing.masks(tiny_batch.avail, torch_generator("m", 0))
        found[targets] = drawn[..., 0][conflict.selected]
    assert found["language_observed"].numel() > 0 and found["language_observed"].all()
    assert not found["all"].all()


def test_margin_reads_the_donor_label_at_flat_index_zero():
    """Target (0, 1) has label 0; its donor is flat index 0, label 1: the margin uses that label."""
    labels = torch.tensor([[1, 0]])
    avail = torch.ones(1, 2, 3, dtype=torch.bool)
    batch = Batch(
        features={m: torch.zeros(1, 2, 1) for m in "lav"},
        mask=avail,
        avail=avail,
        speakers=torch.zeros(1, 2, dtype=torch.long),
        labels=labels,
        utt_mask=torch.ones(1, 2, dtype=torch.bool),
        modalities=("l", "a", "v"),
        index=torch.tensor([0]),
    )
    conflict = ConflictView(
        batch=batch,
        selected=torch.tensor([[False, True]]),
        donor=torch.tensor([[-1, 0]]),
        kind=torch.tensor([[-1, 0]]),
        types=("av",),
    )
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    out = Output(logits=logits, fused=torch.zeros(1, 2, 2), states=torch.zeros(1, 2, 3, 2))
    method = _corekd(
        nce_mode="inline",
        l_kd=0.0,
        l_state=0.0,
        l_mstate=0.0,
        l_nce=0.0,
        l_nce_margin=1.0,
        nce_margin=2.0,
        nce_average="targets",
    )
    ctx = StepContext(
        batch=batch,
        view=TrainView(batch, {"conflict": conflict}),
        output=out,
        teacher=None,
        model=None,
        generator=torch_generator("x"),
    )
    _, terms = method.loss(ctx)
    assert terms["nce_margin"].item() == pytest.approx(2.0 - math.log(3.0), abs=1e-6)


# edge scores [U, M, M] (target, source); with graph_alpha 1: u0's weights softmax([0, ln 3]) = (1/4, 3/4)
LN3 = math.log(3.0)


def _corekd_loss(batch, logits, options, teacher=None, conflict=None, conflict_logits=None, label_smoothing=0.0):
    b, u = batch.utt_mask.shape
    z = lambda *s: torch.zeros(b, u, *s)  # noqa: E731
    extra = {}
    if conflict is not None:
        extra = {"conflict": conflict, "conflict_output": Output(torch.tensor([conflict_logits]), z(2), z(2, 2))}
    method = build_method("corekd", **options)
    ctx = StepContext(
        batch=batch,
        view=TrainView(batch, extra),
        output=Output(torch.tensor([logits]), z(2), z(2, 2)),
        teacher=Output(torch.tensor([teacher]), z(2), z(2, 2)) if teacher is not None else None,
        model=nn.Identity(),
        generator=torch_generator("unused"),
        label_smoothing=label_smoothing,
    )
    return method.loss(ctx)


CK_OFF = dict(l_kd=0.0, l_state=0.0, l_mstate=0.0, l_nce=0.0)


def test_corekd_kd_and_conflict_kd_on_regression_are_squared_errors_by_hand():
    """Regression, u2 padding: CE = L1 over u0, u1: (|0.5 - 1| + |-1 + 2|) / 2 = 0.75; KD = squared error to the
    teacher: ((0.5 - 1.5)^2 + (-1 - 1)^2) / 2 = 2.5; NCE-KD on the one target u0: (2 - 1.5)^2 = 0.25.
    Kills corekd.CoReKD.loss `regression = None`; CoReKD.loss `distill_loss(..., None)` (the classification KD of a
    one-output head is 0)."""
    utt = torch.tensor([[True, True, False]])
    full = torch.ones(1, 3, 2, dtype=torch.bool)
    batch = replace(
        made_up_batch(full, full, torch.zeros(1, 3, dtype=torch.long), utt, ("l", "a")),
        targets=torch.tensor([[1.0, -2.0, 0.0]]),
    )
    conflict = ConflictView(
        batch=batch,
        selected=torch.tensor([[True, False, False]]),
        donor=torch.tensor([[1, -1, -1]]),
        kind=torch.tensor([[0, -1, -1]]),
        types=("a",),
    )
    total, terms = _corekd_loss(
        batch,
        [[0.5], [-1.0], [3.0]],
        dict(CK_OFF, l_kd=0.5, l_nce_kd=0.4, nce_types=["a"], nce_average="targets"),
        teacher=[[1.5], [1.0], [9.0]],
        conflict=conflict,
        conflict_logits=[[2.0], [7.0], [7.0]],
    )
    assert set(terms) == {"ce", "kd", "nce_kd"}
    assert {k: v.item() for k, v in terms.items()} == pytest.approx({"ce": 0.75, "kd": 2.5, "nce_kd": 0.25})
    assert total.item() == pytest.approx(0.75 + 0.5 * 2.5 + 0.4 * 0.25)


def test_corekd_ce_takes_the_label_smoothing():
    """Kills corekd.CoReKD.loss `supervised_loss(out.logits, ctx.batch, )`."""
    utt = torch.tensor([[True, True]])
    full = torch.ones(1, 2, 2, dtype=torch.bool)
    batch = made_up_batch(full, full, torch.tensor([[1, 0]]), utt, ("l", "a"))
    logits = [[0.0, 1.0], [2.0, 0.0]]
    total, terms = _corekd_loss(batch, logits, CK_OFF, label_smoothing=0.2)
    want = (py_ce(logits[0], 1, 0.2) + py_ce(logits[1], 0, 0.2)) / 2
    assert set(terms) == {"ce"} and total.item() == pytest.approx(want, abs=1e-6)


def test_corekd_nce_averaged_over_the_utterances_of_a_one_utterance_batch():
    """nce_average utterances: the targets' sum over the real utterances; one real utterance, itself the target:
    scale 1/1, so L_nce is its CE (-log 1/4 = ln 4). Kills corekd.CoReKD.loss `clamp(min=2)` (scale 1/2)."""
    utt = torch.tensor([[True, False]])
    full = torch.ones(1, 2, 2, dtype=torch.bool)
    batch = made_up_batch(full, full, torch.tensor([[1, 0]]), utt, ("l", "a"))
    conflict = ConflictView(
        batch=batch,
        selected=torch.tensor([[True, False]]),
        donor=torch.tensor([[1, -1]]),
        kind=torch.tensor([[0, -1]]),
        types=("a",),
    )
    total, terms = _corekd_loss(
        batch,
        [[0.0, 0.0], [0.0, 0.0]],
        dict(CK_OFF, l_nce=1.0, nce_types=["a"], nce_average="utterances"),
        conflict=conflict,
        conflict_logits=[[LN3, 0.0], [9.0, 0.0]],
    )
    assert terms["nce"].item() == pytest.approx(math.log(4.0), abs=1e-6)
    assert total.item() == pytest.approx(math.log(2.0) + math.log(4.0), abs=1e-6)


def test_corekd_corpus_and_task_checks_say_how_to_fix_the_config():
    """Kills corekd.CoReKD.check_modalities the `XX...XX` and lower-cased `nce` hints; CoReKD.check_task the `XX...XX`
    and upper-cased texts."""
    field, text = build_method("corekd", nce_types=["v"]).check_modalities(("l", "a"))
    assert field == "nce_types"
    assert text.endswith(
        "(it has ['l', 'a']); list only types of its nonverbal modalities, or switch NCE off with l_nce: 0"
    )
    field, text = build_method("corekd", l_nce_margin=0.5).check_task("regression")
    assert field == "l_nce_margin"
    assert text == "the conflict margin compares class log-probabilities; it has no regression form (set 0)"
