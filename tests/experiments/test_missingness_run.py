"""The issue-32 conditions through a run: evaluation masks on real splits (frames:1.0, features:p filled with the
model's standardisation mean), a tiny ``corekd run`` whose report has the imbalanced, burst and feature tables, and
the one-line refusals (exit 2) of malformed rates."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from corekd.cli import app
from corekd.data.batching import SplitTensors
from corekd.data.protocols import Condition, standard_conditions
from corekd.data.synth import SynthConfig, generate
from corekd.evaluation.conditions import evaluation_masks
from corekd.evaluation.predict import run_model
from corekd.models.model import ERCModel, ModelConfig
from helpers import TINY_FRAMES, corpus_dims, quick_config

runner = CliRunner()
NEW = {
    "imbalanced_rates": [[0.6, 0.15, 0.15], [0.15, 0.6, 0.15]],
    "burst_rates": [0.3, 0.5],
    "feature_rates": [0.5],
}


@pytest.fixture(scope="module")
def frames_test():
    corpus = generate(SynthConfig(**TINY_FRAMES))
    return corpus, SplitTensors.from_corpus(corpus, "test")


def test_frames_one_turns_every_sequence_off_and_keeps_the_vector(frames_test):
    corpus, test = frames_test
    conds = standard_conditions(test.modalities, [], [0.5, 1.0])
    masks = evaluation_masks(conds, test, test.modalities, 0, "calibrated")
    valid = test.utt_mask
    full = masks["frames:1.0"][valid]  # [n, M]; l and a are sequences, v a vector
    assert not full[:, 0].any() and not full[:, 1].any()
    assert torch.equal(full[:, 2], test.avail[valid][:, 2])
    assert torch.equal(masks["frames:0.5"], test.avail)  # below 1 every modality stays observed (records unchanged)
    assert "frames:1.0" not in masks.not_applicable


def test_frames_one_is_not_applicable_when_every_modality_is_a_sequence():
    cfg = dict(TINY_FRAMES, frames=dict(TINY_FRAMES["frames"], modalities=["l", "a", "v"]))
    cfg["frames"]["mean_frames"] = {"l": 3, "a": 4, "v": 3}
    cfg["frames"]["signal_share"] = {"l": 0.5, "a": 0.5, "v": 0.5}
    test = SplitTensors.from_corpus(generate(SynthConfig(**cfg)), "test")
    masks = evaluation_masks([Condition.parse("frames:1.0")], test, test.modalities, 0, "calibrated")
    assert "every modality is a frame sequence" in masks.not_applicable["frames:1.0"]


def test_features_condition_is_vector_only_and_zero_after_standardisation(frames_test):
    corpus, test = frames_test
    masks = evaluation_masks([Condition.parse("features:0.5")], test, test.modalities, 0, "calibrated")
    keep = masks.features["features:0.5"]
    assert set(keep) == {"v"}  # l and a are sequences: untouched
    d = test.features["v"].shape[-1]
    assert ((~keep["v"]).sum(-1) == round(0.5 * d)).all()
    # With non-trivial statistics (mean 3, std 2) the model's standardised input is exactly 0 at the hidden
    # dimensions of every observed row, and only there (the raw features are continuous: no other exact 0).
    kinds = {m: s.kind for m, s in corpus.modalities.items()}
    model = ERCModel(ModelConfig(hidden=8, heads=2), corpus_dims(corpus), len(corpus.labels), kinds)
    model.standardizer.set_statistics(
        {**model.standardizer.statistics(), "v": (torch.full((d,), 3.0), torch.full((d,), 2.0))}
    )
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def grab(module, args, out):
        if args[0] == "v":
            seen.append((out, args[2]))  # z [B, U, D], observed [B, U]

    handle = model.standardizer.register_forward_hook(grab)
    run_model(model, test, masks["features:0.5"], 64, "cpu", None, keep)
    handle.remove()
    assert seen
    for z, observed in seen:
        zeros = (z[observed] == 0).sum(-1)  # [n_observed]
        assert (zeros == round(0.5 * d)).all()


def test_tiny_run_reports_the_new_tables_and_records(tmp_path):
    cfg = quick_config(evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "figures": False, **NEW})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "o" / "results.json").read_text())
    test = [r for r in payload["records"] if r["split"] == "test"]
    names = [r["condition"] for r in test]
    for name in ("imbalanced:0.6,0.15,0.15", "imbalanced:0.15,0.6,0.15", "burst:0.3", "burst:0.5", "features:0.5"):
        assert name in names
    by_name = {r["condition"]: r for r in test}
    assert set(by_name["imbalanced:0.6,0.15,0.15"]["missing_rate_by_modality"]) == {"l", "a", "v"}
    assert set(by_name["burst:0.3"]["missing_rate_by_modality"]) == {"l", "a", "v"}
    assert "missing_rate_by_modality" not in by_name["random:0.5"]  # old conditions' records: as before
    assert by_name["features:0.5"]["feature_missing_rate"] == pytest.approx(0.5, abs=0.02)
    assert payload["meta"]["burst_length"] == 4.0
    report = (tmp_path / "o" / "report.md").read_text()
    for heading in (
        "## Imbalanced missing rates (weighted F1)",
        "## Missing runs across turns, burst rate p (weighted F1)",
        "## Feature missing, rate p (weighted F1)",
        "## Averages per missingness protocol (weighted F1)",
    ):
        assert heading in report
    assert "| method | l 0.6 · a 0.15 · v 0.15 | l 0.15 · a 0.6 · v 0.15 | mean |" in report
    assert "| method | fixed Avg | random Avg | imbalanced Avg | burst Avg | complete |" in report


@pytest.mark.parametrize(
    "evaluation, expected",
    [
        (
            {"imbalanced_rates": [[0.1, 0.2]]},
            "evaluation.imbalanced_rates[0]: [0.1, 0.2] gives 2 rate(s); corpus 'synthetic-iemocap6-seed0' has 3 "
            "modalities (l, a, v)",
        ),
        ({"burst_rates": [1.5]}, "evaluation.burst_rates: missing rate 1.5 is outside [0, 1)"),
        ({"burst_rates": [0.85]}, "evaluation.burst_rates: burst rate 0.85 with mean run length 4"),
        ({"feature_rates": ["half"]}, "evaluation.feature_rates[0]: Input should be a valid number"),
        ({"imbalanced_rates": [[0.1, "x", 0.1]]}, "evaluation.imbalanced_rates[0][1]: Input should be a valid number"),
    ],
)
def test_malformed_rates_are_refused_in_one_line_with_exit_2(tmp_path, evaluation, expected):
    cfg = quick_config()
    cfg["evaluation"].update(evaluation)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for args in (["config", "check", str(path)], ["run", str(path), "--out", str(tmp_path / "o")]):
        result = runner.invoke(app, args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and expected in lines[0], result.output
    assert not (tmp_path / "o" / "results.json").exists()


def test_training_rates_of_the_wrong_arity_are_refused(tmp_path):
    cfg = quick_config()
    cfg["training"]["missing"] = {"rates": [0.1, 0.2]}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2 and "training.missing.rates: [0.1, 0.2] gives 2 rate(s)" in result.output


def test_independent_frame_scheme_turns_emptied_sequences_off_and_keeps_one_modality(frames_test):
    corpus, test = frames_test
    conds = [Condition.parse("frames:0.9")]
    old = evaluation_masks(conds, test, test.modalities, 0, "calibrated")
    new = evaluation_masks(conds, test, test.modalities, 0, "calibrated", frame_scheme="independent")
    valid = test.utt_mask
    assert torch.equal(old["frames:0.9"], test.avail)  # keep_one: every modality stays observed
    lost = test.avail[valid] & ~new["frames:0.9"][valid]
    assert lost[:, :2].any() and not lost[:, 2].any()  # some l / a sequences lost every frame; v is a vector
    assert new["frames:0.9"][valid].any(-1).all()  # at least one modality per utterance
    for m in ("l", "a"):  # an observed sequence keeps a frame, a lost one none
        j = test.modalities.index(m)
        shown = new.frames["frames:0.9"][m].any(-1)
        assert torch.equal(shown[valid], new["frames:0.9"][valid][:, j] & test.avail[valid][:, j])
