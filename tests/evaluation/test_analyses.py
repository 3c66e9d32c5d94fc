"""Mechanism analyses (corekd.evaluation.analyses): drift, rejection, conflict pairs and views, the synthetic
conflict flag, and a tiny run writing analyses.json, the figures and the report section."""

import json
import math

import pytest
import torch
from helpers import TINY_SYNTH, quick_config
from typer.testing import CliRunner

from corekd.cli import app
from corekd.config import RunConfig
from corekd.data.corpus import load_corpus
from corekd.data.synth import SynthConfig, generate
from corekd.errors import CorekdError
from corekd.evaluation.analyses import (
    CONFLICT_TYPES,
    add_relative_to_no_kd,
    conflict_flags,
    conflict_pairs,
    conflict_view,
    drift,
    read_analyses,
    rejected,
)
from corekd.pipeline import run
from corekd.rundir import corpus_fingerprint

# corpus_fingerprint (ids, splits, speakers, labels, availability, features) of generate(TINY_SYNTH) before the
# conflict flag was recorded: recording it must change no draw.
TINY_FINGERPRINT = "ab2d21ca73368a9aa8c69d2ba951b3fc2b0387147341334df08f59a7765bad07"


def test_drift_by_hand_ignores_padding():
    fused = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]]])  # [1, 3, 2]
    teacher = torch.tensor([[[0.0, 2.0], [1.0, 0.0], [-9.0, 0.0]]])
    valid = torch.tensor([[True, True, False]])
    normalized, raw = drift(fused, teacher, valid)
    # utterance 1: (0.6, 0.8) - (0, 1) -> 0.36 + 0.04 = 0.4; raw |(3, 2)| = sqrt(13); utterance 2: 0 and 0
    assert normalized == pytest.approx(0.2)
    assert raw == pytest.approx(math.sqrt(13) / 2)


def test_relative_to_no_kd_same_seed_and_condition_only():
    rows = [
        {"variant": "no_kd", "method": "no_kd", "seed": 0, "condition": "fixed:l", "normalized": 0.5},
        {"variant": "corekd", "method": "corekd", "seed": 0, "condition": "fixed:l", "normalized": 0.4},
        {"variant": "teacher", "method": "teacher", "seed": 0, "condition": "fixed:l", "normalized": 0.1},
        {"variant": "corekd", "method": "corekd", "seed": 1, "condition": "fixed:l", "normalized": 0.4},
    ]
    out = add_relative_to_no_kd(rows)
    assert out[0]["relative_to_no_kd"] == 0.0
    assert out[1]["relative_to_no_kd"] == pytest.approx(-0.2)
    assert out[2]["relative_to_no_kd"] is None  # the teacher is no student
    assert out[3]["relative_to_no_kd"] is None  # no no_kd for seed 1


def test_rejection_by_hand():
    q_target = torch.tensor([[0.8, 0.2], [0.8, 0.2], [0.5, 0.5]])
    q_donor = torch.tensor([[0.1, 0.9], [0.1, 0.9], [0.5, 0.5]])
    q_conflict = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.3, 0.7]])
    # nearer the target's / the donor's / a tie (not rejected: strictly nearer is required)
    assert rejected(q_conflict, q_target, q_donor).tolist() == [True, False, False]


def test_pairs_are_deterministic_shared_and_valid(tiny_splits):
    test = tiny_splits["test"]
    pairs = conflict_pairs(test, 0)
    again = conflict_pairs(test, 0)
    assert len(pairs) > 0 and pairs.types == ("a", "v", "av")
    assert torch.equal(pairs.target, again.target) and torch.equal(pairs.donor, again.donor)
    other = conflict_pairs(test, 1)
    assert not (torch.equal(pairs.target, other.target) and torch.equal(pairs.donor, other.donor))
    (tr, tu), (dr, du) = pairs.target.T, pairs.donor.T
    assert bool((test.labels[tr, tu] != test.labels[dr, du]).all())  # donors carry another label
    assert bool(test.utt_mask[tr, tu].all() and test.avail[tr, tu, 0].all())  # real targets, language observed
    for row in range(len(test)):  # at most 20% of a dialogue (at least one)
        assert int((tr == row).sum()) <= max(1, int(0.2 * int(test.lengths[row])))


@pytest.mark.parametrize("kind", ["a", "v", "av"])
def test_conflict_view_swaps_only_the_chosen_modalities(tiny_splits, kind):
    test = tiny_splits["test"]
    pairs = conflict_pairs(test, 0)
    view = conflict_view(test, pairs, CONFLICT_TYPES[kind])
    (tr, tu), (dr, du) = pairs.target.T, pairs.donor.T
    assert torch.equal(view.labels, test.labels) and torch.equal(view.speakers, test.speakers)
    assert torch.equal(view.features["l"], test.features["l"])  # language and context kept
    is_target = torch.zeros_like(test.utt_mask)
    is_target[tr, tu] = True
    for m in ("a", "v"):
        if m in CONFLICT_TYPES[kind]:
            assert torch.equal(view.features[m][tr, tu], test.features[m][dr, du])
            assert torch.equal(view.features[m][~is_target], test.features[m][~is_target])
            assert not torch.equal(view.features[m], test.features[m])
        else:
            assert torch.equal(view.features[m], test.features[m])
    assert not torch.equal(test.features["a"][tr, tu], test.features["a"][dr, du])  # the original is untouched


def test_synthetic_conflict_flag_matches_info_and_changes_no_draw(tmp_path):
    corpus = generate(SynthConfig(**TINY_SYNTH))
    flags = [e["nonverbal_conflict"] for d in corpus.dialogues for e in d.extras]
    assert len(flags) == corpus.num_utterances
    assert sum(flags) == corpus.info["conflict_utterances"] > 0
    assert corpus_fingerprint(corpus) == TINY_FINGERPRINT
    back = load_corpus(corpus.save(tmp_path / "c"))
    assert [d.extras for d in back.dialogues] == [d.extras for d in corpus.dialogues]
    test_flags = conflict_flags(back, "test")
    assert int(test_flags.sum()) == sum(e["nonverbal_conflict"] for d in corpus.split("test") for e in d.extras)


def test_real_corpus_without_flag_gets_none():
    stripped = generate(SynthConfig(**TINY_SYNTH))
    for d in stripped.dialogues:
        d.extras = None
    assert conflict_flags(stripped, "test") is None


def test_run_writes_analyses_figures_and_report_section(tmp_path):
    cfg = quick_config(methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}], seeds=[0, 1],
                       evaluation={"batch_size": 8, "random_rates": [0.0, 0.5]})  # figures on (the default)
    out = tmp_path / "run"
    run(RunConfig.model_validate(cfg), out)
    payload = json.loads((out / "analyses.json").read_text())
    assert payload["format"] == "corekd-analyses" and payload["version"] == 1
    assert {"pairs", "drift", "rejection", "natural_conflicts", "figures"} <= set(payload)
    assert payload["figures"] == ["figures/tsne_random0.5.png", "figures/f1_vs_missing_rate.png"]
    for fig in payload["figures"]:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    targets = payload["pairs"]["targets"]
    assert targets > 0
    rejection = payload["rejection"]
    assert {(r["variant"], r["seed"], r["type"]) for r in rejection} == {
        (v, s, t) for v in ("teacher", "no_kd", "corekd") for s in (0, 1) for t in ("a", "v", "av")}
    assert all(r["pairs"] == targets and 0 <= r["rate"] <= 1 for r in rejection)
    drift_rows = payload["drift"]
    conditions = {r["condition"] for r in drift_rows}
    assert {"fixed:l", "fixed:av", "random:0.5"} <= conditions
    teacher_complete = [r for r in drift_rows if r["variant"] == "teacher" and r["condition"] == "complete"]
    assert all(r["normalized"] == pytest.approx(0, abs=1e-9) for r in teacher_complete)
    assert all(r["relative_to_no_kd"] == 0 for r in drift_rows if r["variant"] == "no_kd")
    assert all(r["relative_to_no_kd"] is not None for r in drift_rows if r["variant"] == "corekd")
    natural = payload["natural_conflicts"]
    assert natural["flagged"] and natural["utterances"] > 0
    assert {r["condition"] for r in natural["records"]} == {"complete", "random:0.5"}
    report = (out / "report.md").read_text()
    section = report[report.index("## Mechanism analyses"):]
    assert "### State drift" in section and "### Conflict rejection rate" in section and "### Natural conflicts" in section
    assert "](figures/tsne_random0.5.png)" in section and "](figures/f1_vs_missing_rate.png)" in section
    (out / "report.md").unlink()
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    rebuilt = (out / "report.md").read_text()
    assert rebuilt[rebuilt.index("## Mechanism analyses"):] == section


def test_no_teacher_and_switches(tmp_path):
    cfg = quick_config(evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "figures": False})
    out = tmp_path / "plain"
    run(RunConfig.model_validate(cfg), out)
    payload = read_analyses(out)
    assert payload["drift"] == [] and payload["rejection"] == [] and payload["figures"] == []
    assert any("no teacher" in n for n in payload["notes"])
    assert not (out / "figures" / "tsne_random0.5.png").exists()
    off = tmp_path / "off"
    run(RunConfig.model_validate(quick_config(evaluation={"batch_size": 8, "random_rates": [0.0, 0.5],
                                                          "analyses": False})), off)
    assert not (off / "analyses.json").exists()
    assert "Mechanism analyses" not in (off / "report.md").read_text()


def test_bad_analyses_file_is_named(tmp_path):
    (tmp_path / "analyses.json").write_text("{\"format\": \"other\"}")
    with pytest.raises(CorekdError) as err:
        read_analyses(tmp_path)
    assert "analyses.json" in str(err.value)


def test_resume_analyses_kept_models_from_their_checkpoints(tmp_path):
    cfg = RunConfig.model_validate(quick_config(methods=[{"name": "teacher"}, {"name": "corekd"}],
                                                evaluation={"batch_size": 8, "random_rates": [0.5], "figures": False}))
    out = tmp_path / "run"
    run(cfg, out)
    first = json.loads((out / "analyses.json").read_text())
    (out / "analyses.json").unlink()
    run(cfg, out, resume=True)  # every model kept: analysed from the loaded checkpoints
    again = json.loads((out / "analyses.json").read_text())
    assert again["rejection"] == first["rejection"] and again["natural_conflicts"] == first["natural_conflicts"]
    assert [r["normalized"] for r in again["drift"]] == pytest.approx([r["normalized"] for r in first["drift"]], abs=1e-6)


def test_analyses_change_no_result(tmp_path):
    """The analyses draw from no shared stream: every record and training entry is the same with them off."""
    base = quick_config(methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}], seeds=[0, 1])
    results = []
    for on in (True, False):
        cfg = {**base, "evaluation": {**base["evaluation"], "analyses": on}}
        res = run(RunConfig.model_validate(cfg), tmp_path / str(on))
        results.append((res.records, [{k: v for k, v in t.items() if k != "seconds"} for t in res.trainings]))
    assert results[0] == results[1]
