"""CoRe-KD's anchors (issue 28): view-dependent modality states, the refusal of L_mstate on a backbone whose states
cannot depend on the view, NCE at its stated share, and the analyses and history that show both."""

import json

import pytest
import torch
from helpers import quick_config

from corekd.config import validate_config
from corekd.data.batching import Batch
from corekd.errors import CorekdError
from corekd.methods.nce import nce_view
from corekd.models.model import ERCModel, ModelConfig, states_depend_on_view
from corekd.pipeline import run
from corekd.seeding import torch_generator


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


@pytest.mark.parametrize("options,state,refused", [
    ({}, "encoding", True), ({"l_mstate": 0.0}, "encoding", False), ({}, "context", False),
    ({}, "crossmodal", False), ({"mstate_over": "all"}, "encoding", True),
])
def test_l_mstate_on_a_view_independent_backbone_is_refused(options, state, refused):
    raw = quick_config(model={"hidden": 16, "heads": 2, "modality_state": state},
                       methods=[{"name": "corekd", "options": options}])
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
    return Batch(features=feats, mask=mask, avail=avail, labels=(torch.arange(n_real) % 2)[None],
                 utt_mask=torch.ones(1, n_real, dtype=torch.bool), speakers=torch.zeros(1, n_real, dtype=torch.long),
                 modalities=("l", "a", "v"), index=torch.tensor([0]))


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
    cfg = validate_config(quick_config(
        model={"hidden": 16, "heads": 2, "modality_state": "context"},
        training={"epochs": 2, "patience": 2, "batch_size": 4},
        methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}]))
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
        (by[("corekd", "complete", "l")]["normalized"] - ref) / ref)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Modality-state drift" in report and "realised share" in report


def test_config_check_and_run_refuse_l_mstate_on_encodings_in_one_line(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from corekd.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(quick_config(model={"hidden": 16, "heads": 2, "modality_state": "encoding"},
                                                methods=[{"name": "corekd"}])))
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
