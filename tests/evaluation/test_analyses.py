"""Mechanism analyses (corekd.evaluation.analyses): drift, rejection, conflict pairs and views, the synthetic
conflict flag, and a tiny run writing analyses.json, the figures and the report section."""

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import corekd.evaluation.analyses as A
from corekd.cli import app
from corekd.config import RunConfig
from corekd.data.batching import SplitTensors
from corekd.data.corpus import load_corpus
from corekd.data.synth import SynthConfig, generate
from corekd.errors import CorekdError
from corekd.evaluation.analyses import (
    CONFLICT_TYPES,
    ConflictPairs,
    add_relative_to_no_kd,
    conflict_flags,
    conflict_pairs,
    conflict_view,
    drift,
    read_analyses,
    rejected,
    relative,
)
from corekd.experiments import run
from corekd.experiments.folder import corpus_fingerprint
from corekd.models.model import Output
from corekd.seeding import numpy_generator, torch_generator
from helpers import TINY_SYNTH, quick_config

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
    cfg = quick_config(
        methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}],
        seeds=[0, 1],
        evaluation={"batch_size": 8, "random_rates": [0.0, 0.5]},
    )  # figures on (the default)
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
        (v, s, t) for v in ("teacher", "no_kd", "corekd") for s in (0, 1) for t in ("a", "v", "av")
    }
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
    section = report[report.index("## Mechanism analyses") :]
    assert (
        "### State drift" in section and "### Conflict rejection rate" in section and "### Natural conflicts" in section
    )
    assert "](figures/tsne_random0.5.png)" in section and "](figures/f1_vs_missing_rate.png)" in section
    (out / "report.md").unlink()
    assert CliRunner().invoke(app, ["report", str(out)]).exit_code == 0
    rebuilt = (out / "report.md").read_text()
    assert rebuilt[rebuilt.index("## Mechanism analyses") :] == section


def test_no_teacher_and_switches(tmp_path):
    cfg = quick_config(evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "figures": False})
    out = tmp_path / "plain"
    run(RunConfig.model_validate(cfg), out)
    payload = read_analyses(out)
    assert payload["drift"] == [] and payload["rejection"] == [] and payload["figures"] == []
    assert any("no teacher" in n for n in payload["notes"])
    assert not (out / "figures" / "tsne_random0.5.png").exists()
    off = tmp_path / "off"
    run(
        RunConfig.model_validate(
            quick_config(evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "analyses": False})
        ),
        off,
    )
    assert not (off / "analyses.json").exists()
    assert "Mechanism analyses" not in (off / "report.md").read_text()


def test_bad_analyses_file_is_named(tmp_path):
    (tmp_path / "analyses.json").write_text('{"format": "other"}')
    with pytest.raises(CorekdError) as err:
        read_analyses(tmp_path)
    assert "analyses.json" in str(err.value)


def test_resume_analyses_kept_models_from_their_checkpoints(tmp_path):
    cfg = RunConfig.model_validate(
        quick_config(
            methods=[{"name": "teacher"}, {"name": "corekd"}],
            evaluation={"batch_size": 8, "random_rates": [0.5], "figures": False},
        )
    )
    out = tmp_path / "run"
    run(cfg, out)
    first = json.loads((out / "analyses.json").read_text())
    (out / "analyses.json").unlink()
    for done in out.glob("checkpoints/*/seed*/complete.json"):  # as an older corekd wrote them: no analyses rows
        unit = json.loads(done.read_text())
        del unit["analyses"]
        done.write_text(json.dumps(unit))
    run(cfg, out, resume=True)  # every model kept: analysed from the loaded checkpoints
    again = json.loads((out / "analyses.json").read_text())
    assert again["rejection"] == first["rejection"] and again["natural_conflicts"] == first["natural_conflicts"]
    assert [r["normalized"] for r in again["drift"]] == pytest.approx(
        [r["normalized"] for r in first["drift"]], abs=1e-6
    )


def test_analyses_change_no_result(tmp_path):
    """The analyses draw from no shared stream: every record and training entry is the same with them off."""
    base = quick_config(methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}], seeds=[0, 1])
    results = []
    for on in (True, False):
        cfg = {**base, "evaluation": {**base["evaluation"], "analyses": on}}
        res = run(RunConfig.model_validate(cfg), tmp_path / str(on))
        results.append((res.records, [{k: v for k, v in t.items() if k != "seconds"} for t in res.trainings]))
    assert results[0] == results[1]


DEVICE = torch.device("cpu")


# ------------------------------------------------------------------ hand-built inputs
def make_split(labels, avail=None, modalities=("l", "a", "v"), name="test", targets=None) -> SplitTensors:
    """A split of ``labels`` (one list per dialogue); every modality's features are the one-hot label [N, U, 3];
    ``avail`` (per dialogue, per utterance, per modality) defaults to all observed on real utterances."""
    n, u_max = len(labels), max(len(d) for d in labels)
    lab = torch.zeros(n, u_max, dtype=torch.long)
    utt = torch.zeros(n, u_max, dtype=torch.bool)
    av = torch.zeros(n, u_max, len(modalities), dtype=torch.bool)
    for i, d in enumerate(labels):
        lab[i, : len(d)] = torch.tensor(d)
        utt[i, : len(d)] = True
        av[i, : len(d)] = torch.tensor(avail[i]) if avail is not None else True
    onehot = torch.nn.functional.one_hot(lab, 3).float() * utt[..., None]
    tgt = None
    if targets is not None:
        tgt = torch.zeros(n, u_max)
        for i, d in enumerate(targets):
            tgt[i, : len(d)] = torch.tensor(d)
    return SplitTensors(
        name=name,
        modalities=tuple(modalities),
        features={m: onehot.clone() for m in modalities},
        avail=av,
        speakers=torch.zeros(n, u_max, dtype=torch.long),
        labels=lab,
        utt_mask=utt,
        lengths=torch.tensor([len(d) for d in labels]),
        dialogue_ids=[f"d{i}" for i in range(n)],
        utterance_ids=[[f"d{i}_{u}" for u in range(len(d))] for i, d in enumerate(labels)],
        targets=tgt,
    )


class Masks(dict):
    """The test-table masks as the pipeline passes them: a dict with optional ``not_applicable`` / ``frames``."""


def uniform_mask(split, pattern):
    return split.utt_mask[..., None] & torch.tensor(pattern)  # [N, U, M]


# Conditions (a mask per name) and, per condition, the stand-in's fused direction on every real utterance.
DIRECTION = {"complete": (3.0, 4.0), "fixed:l": (4.0, -3.0), "random:0.5": (6.0, 8.0), "frames:0.5": (3.0, 4.0)}
PATTERN = {
    "complete": (True, True, True),
    "fixed:l": (True, False, False),
    "random:0.5": (True, False, True),
    "fixed:a": (False, True, False),
    "frames:0.5": (True, True, True),
    "features:0.5": (True, True, True),
}
W = {"l": 1.0, "a": 2.0, "v": 0.5}  # a conflict view's logits: 10 * sum_m W[m] * one-hot feature of m


class FakeModel:
    """Outputs chosen by hand. Under a test condition: fused = scale * DIRECTION[condition] (times (u + 1) at
    random:0.5), logits = 10 * one-hot(prediction), prediction = the label except ``wrong[condition]``; padding
    (100, -7) and prediction 1. On the complete test view (mask None): fused (3, 4) * scale, logits 10 * one-hot(label).
    On any other split (a conflict view): logits from the (swapped) features, 10 * sum_m W[m] * features[m]."""

    def __init__(self, name, scale=1.0, wrong=None, classes=3):
        self.name, self.scale, self.wrong, self.classes = name, scale, wrong or {}, classes

    def outputs(self, split, test, condition):
        n, u_max = split.utt_mask.shape
        real = split.utt_mask
        if split is not test:
            logits = 10 * sum(
                W[m] * split.features[m] * split.avail[..., j, None] for j, m in enumerate(split.modalities)
            )
            return Output(logits=logits, fused=torch.zeros(n, u_max, 2), states=torch.zeros(n, u_max, 3, 2))
        key = condition or "complete"
        fused = torch.tensor([100.0, -7.0]).expand(n, u_max, 2).clone()
        factor = torch.arange(1, u_max + 1, dtype=torch.float)[None, :, None] if key == "random:0.5" else 1.0
        direction = torch.tensor(DIRECTION.get(key, (1.0, 1.0)))
        fused = torch.where(real[..., None], self.scale * factor * direction, fused)
        pred = torch.where(real, split.labels, torch.ones_like(split.labels))
        for (i, u), c in self.wrong.get(condition, {}).items():
            pred[i, u] = c
        if self.classes == 1:  # a regression head: one score per utterance
            logits = pred[..., None].float()
        else:
            logits = 10 * torch.nn.functional.one_hot(pred, self.classes).float()
        return Output(logits=logits, fused=fused, states=torch.zeros(n, u_max, 3, 2))


class CallLog(list):
    """The recorded run_model calls; ``fake`` is the stand-in (its ``test`` split and ``masks`` set by ``build``)."""


@pytest.fixture()
def calls(monkeypatch):
    """Replaces ``run_model`` in the analyses module; records (model, view, batch_size, device, frame_keep), and each
    call's feature_keep in ``made.features``."""
    made = CallLog()
    made.features = []

    def fake_run_model(model, split, masks, batch_size, device, frame_keep=None, feature_keep=None):
        test = fake_run_model.test
        if split is test:
            view = "complete" if masks is None else next(n for n, m in fake_run_model.masks.items() if m is masks)
        else:
            assert masks is None
            view = "conflict"
        made.append((model.name, view, batch_size, device, frame_keep))
        made.features.append(feature_keep)
        return model.outputs(split, test, None if masks is None else view)

    fake_run_model.test, fake_run_model.masks = None, {}
    monkeypatch.setattr(A, "run_model", fake_run_model)
    made.fake = fake_run_model
    return made


LABELS = [[0, 1, 2], [1, 0]]
FLAGS = torch.tensor([[True, False, True], [False, True, True]])  # (1, 2) is padding
STUDENT_WRONG = {"complete": {(0, 0): 1}, "random:0.5": {(0, 2): 0, (1, 1): 2}}


def build(
    calls,
    tmp_path,
    conditions=("complete", "fixed:l", "random:0.5"),
    flags=FLAGS,
    task="classification",
    figures=True,
    labels=LABELS,
    targets=None,
    masks_cls=Masks,
    **attrs,
):
    test = make_split(labels, targets=targets)
    masks = masks_cls({c: uniform_mask(test, PATTERN[c]) for c in conditions})
    for k, v in attrs.items():
        setattr(masks, k, v)
    calls.fake.test, calls.fake.masks = test, masks
    run = A.RunAnalyses(test, masks, flags, ["x", "y", "z"], task, 3, 4, DEVICE, figures=figures)
    return run


# ------------------------------------------------------------------ add_relative_to_no_kd
def test_relative_to_no_kd_matches_seed_and_condition_and_takes_the_first_no_kd():
    rows = [
        {"method": "corekd", "seed": 0, "condition": "fixed:l", "normalized": 0.3},
        {"method": "no_kd", "seed": 0, "condition": "fixed:l", "normalized": 0.5},
        {"method": "no_kd", "seed": 0, "condition": "fixed:l", "normalized": 2.0},  # a second no_kd variant
        {"method": "no_kd", "seed": 0, "condition": "complete", "normalized": 0.25},
        {"method": "no_kd", "seed": 1, "condition": "fixed:l", "normalized": 0.1},
        {"method": "corekd", "seed": 1, "condition": "fixed:l", "normalized": 0.4},
        {"method": "corekd", "seed": 0, "condition": "complete", "normalized": 0.5},
        {"method": "teacher", "seed": 0, "condition": "fixed:l", "normalized": 0.5},
        {"method": "corekd", "seed": 2, "condition": "fixed:l", "normalized": 0.5},
    ]
    out = add_rel(rows)
    assert out is rows
    got = [r["relative_to_no_kd"] for r in out]
    expected = [(0.3 - 0.5) / 0.5, 0.0, (2.0 - 0.5) / 0.5, 0.0, 0.0, (0.4 - 0.1) / 0.1, (0.5 - 0.25) / 0.25, None, None]
    assert [None if g is None else round(g, 9) for g in got] == [None if e is None else round(e, 9) for e in expected]
    assert got[7] is None and got[8] is None


def add_rel(rows):
    return A.add_relative_to_no_kd(rows)


def test_relative_to_no_kd_of_no_rows_is_empty():
    assert A.add_relative_to_no_kd([]) == []


# ------------------------------------------------------------------ conflict_pairs
def test_pairs_forced_by_hand():
    """Dialogue 0: only utterance 1 has l (the only target); dialogue 1: no l at all (no target, skipped, not the end);
    dialogue 2: utterance 0 the only one with l. Donors need a and v: (0, 2) label 2 and (2, 1) label 0 and (1, 1)
    label 1 qualify; (0, 0) lacks v, (1, 0) lacks a."""
    labels = [[0, 1, 2], [1, 1], [1, 0]]
    avail = [
        [[False, True, False], [True, False, False], [False, True, True]],
        [[False, True, True], [False, True, True]],
        [[True, False, False], [False, True, True]],
    ]
    avail[1][0] = [False, False, True]
    split = make_split(labels, avail)
    pairs = A.conflict_pairs(split, 5)
    # targets (0, 1) label 1 and (2, 0) label 1: donors of another label: (0, 2) label 2 or (2, 1) label 0
    assert pairs.target.tolist() == [[0, 1], [2, 0]]
    assert pairs.target.dtype == torch.long and pairs.donor.dtype == torch.long
    assert all(d in ([0, 2], [2, 1]) for d in pairs.donor.tolist())
    assert pairs.seed == 5 and pairs.types == ("a", "v", "av") and len(pairs) == 2
    # the donors follow the seeded draw: one randint over the two candidates per target
    gen = torch_generator("conflict-pairs", 5, "test")
    expected = []
    for _ in range(2):  # each target dialogue: randperm of its single eligible utterance, then the donor draw
        torch.randperm(1, generator=gen)
        expected.append([[0, 2], [2, 1]][int(torch.randint(2, (1,), generator=gen))])
    assert pairs.donor.tolist() == expected


def test_pairs_seeded_draws_by_hand():
    """One dialogue of 10 utterances: k = floor(0.2 * 10) = 2 targets drawn by randperm, then a donor per target by
    randint among the utterances of another label, all from torch_generator("conflict-pairs", seed, split name)."""
    labels = [[0, 1, 2, 0, 1, 2, 0, 1, 2, 0]]
    split = make_split(labels, name="dev")
    for seed in (0, 1, 7):
        pairs = A.conflict_pairs(split, seed)
        gen = torch_generator("conflict-pairs", seed, "dev")
        picks = torch.randperm(10, generator=gen)[:2].sort().values.tolist()
        donors = []
        for u in picks:
            other = [w for w in range(10) if labels[0][w] != labels[0][u]]
            donors.append([0, other[int(torch.randint(len(other), (1,), generator=gen))]])
        assert pairs.target.tolist() == [[0, u] for u in picks]
        assert pairs.donor.tolist() == donors
        assert len(pairs) == 2 and pairs.target.shape == (2, 2)


def test_pairs_share_argument_and_at_least_one_target():
    split = make_split([[0, 1, 2, 0, 1, 2, 0, 1, 2, 0], [0, 1, 2, 0]])
    assert sorted(set(A.conflict_pairs(split, 0).target[:, 0].tolist())) == [0, 1]
    assert int((A.conflict_pairs(split, 0).target[:, 0] == 0).sum()) == 2  # floor(0.2 * 10)
    assert int((A.conflict_pairs(split, 0).target[:, 0] == 1).sum()) == 1  # floor(0.8) = 0 -> at least one
    assert int((A.conflict_pairs(split, 0, share=0.5).target[:, 0] == 0).sum()) == 5
    assert int((A.conflict_pairs(split, 0, share=0.5).target[:, 0] == 1).sum()) == 2
    assert len(A.conflict_pairs(split, 0, share=1.0)) == 14


def test_pairs_donor_label_is_read_at_the_donor_position():
    """Dialogue 0 holds labels (0, 0) and dialogue 1 (1, 1) at positions where row/utterance swapped would read
    another label: a target of label 0 must get a donor from dialogue 1."""
    split = make_split([[0, 0, 0], [1, 1, 2]])
    pairs = A.conflict_pairs(split, 3, share=1.0)
    tl = split.labels[pairs.target[:, 0], pairs.target[:, 1]]
    dl = split.labels[pairs.donor[:, 0], pairs.donor[:, 1]]
    assert len(pairs) == 6 and bool((tl != dl).all())


def test_pairs_without_language_every_utterance_is_eligible_and_without_a_or_v_none():
    labels = [[0, 1], [1, 0]]
    no_l = make_split(labels, modalities=("a", "v"))
    pairs = A.conflict_pairs(no_l, 0, share=1.0)
    assert sorted(map(tuple, pairs.target.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert pairs.types == ("a", "v", "av")
    only_l = A.conflict_pairs(make_split(labels, modalities=("l",)), 0, share=1.0)
    assert only_l.types == () and len(only_l) == 0
    assert only_l.target.shape == (0, 2) and only_l.donor.shape == (0, 2)
    assert only_l.target.dtype == torch.long and only_l.donor.dtype == torch.long
    la = A.conflict_pairs(make_split(labels, modalities=("l", "a")), 0)
    assert la.types == ("a",) and len(la) == 2


def test_pairs_donor_needs_every_swappable_modality():
    # the only other-label utterances lack a (1, 0) or v (1, 1); (1, 2) has both
    labels = [[0], [1, 1, 1]]
    avail = [[[True, True, True]], [[True, False, True], [True, True, False], [True, True, True]]]
    pairs = A.conflict_pairs(make_split(labels, avail), 0)
    assert [0, 0] in pairs.target.tolist()
    assert pairs.donor[pairs.target.tolist().index([0, 0])].tolist() == [1, 2]
    # a target with no donor of another label is dropped, not paired with a same-label one
    same = A.conflict_pairs(make_split([[1], [1, 1]]), 0)
    assert len(same) == 0 and same.target.shape == (0, 2)


def test_conflict_pairs_len_counts_pairs():
    pairs = A.ConflictPairs(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 0, ("a",))
    assert len(pairs) == 3


# ------------------------------------------------------------------ conflict_flags
def fake_corpus(splits):
    return SimpleNamespace(split=lambda name: splits[name])


class _D:
    def __init__(self, n, extras):
        self.n, self.extras = n, extras

    def __len__(self):
        return self.n


def test_conflict_flags_by_hand():
    corpus = fake_corpus(
        {
            "test": [
                _D(3, [{"nonverbal_conflict": True}, {"nonverbal_conflict": False}, {}]),
                _D(1, None),
                _D(2, [{"other": 1}, {"nonverbal_conflict": True}]),
            ],
            "dev": [_D(2, [{"nonverbal_conflict": False}, {"nonverbal_conflict": False}])],
        }
    )
    flags = A.conflict_flags(corpus, "test")
    assert flags.dtype == torch.bool
    assert flags.tolist() == [[True, False, False], [False, False, False], [False, True, False]]
    dev = A.conflict_flags(corpus, "dev")
    assert dev.dtype == torch.bool and dev.tolist() == [[False, False]]


def test_conflict_flags_none_without_the_flag():
    corpus = fake_corpus({"test": [_D(2, [{"other": True}, {}]), _D(1, None)], "none": [_D(1, None)], "empty": []})
    assert A.conflict_flags(corpus, "test") is None
    assert A.conflict_flags(corpus, "none") is None
    assert A.conflict_flags(corpus, "empty") is None


# ------------------------------------------------------------------ RunAnalyses: one classification run
SQ50, SQ125 = math.sqrt(50.0), math.sqrt(125.0)


def test_run_analyses_records_by_hand(calls, tmp_path):
    run = build(calls, tmp_path)
    teacher = FakeModel("T", 1.0)
    student = FakeModel("S", 2.0, STUDENT_WRONG)
    assert len(run.pairs) == 2 and run.pairs.seed == 3  # one target per dialogue (floor(0.2 * 3) = 0 -> 1)
    assert run.first_seed is None
    run.add("kd", "corekd", 4, student, teacher)
    assert run.first_seed == 4
    # teacher's complete view once, then the student under each condition, then the three conflict views
    assert calls == [
        ("T", "complete", 4, DEVICE, None),
        ("S", "complete", 4, DEVICE, None),
        ("S", "fixed:l", 4, DEVICE, None),
        ("S", "random:0.5", 4, DEVICE, None),
        ("S", "conflict", 4, DEVICE, None),
        ("S", "conflict", 4, DEVICE, None),
        ("S", "conflict", 4, DEVICE, None),
    ]
    base = {"variant": "kd", "method": "corekd", "seed": 4}
    # s = 2 * (3, 4) / 2 * (4, -3) / 2 * (u + 1) * (6, 8) against t = (3, 4): normalised 0 / 2.0 / 0; raw 5 /
    # |(5, -10)| / mean of 5 * |4 (u + 1) - 1| over u = 0, 1, 2, 0, 1 -> (15 + 35 + 55 + 15 + 35) / 5 = 31
    assert len(run.drift) == 3
    for row, (cond, norm, raw) in zip(
        run.drift, [("complete", 0.0, 5.0), ("fixed:l", 2.0, SQ125), ("random:0.5", 0.0, 31.0)]
    ):
        assert row == {
            **base,
            "condition": cond,
            "normalized": pytest.approx(norm, abs=1e-9),
            "raw": pytest.approx(raw, rel=1e-9),
            "relative_to_no_kd": None,
        }
        assert list(row) == ["variant", "method", "seed", "condition", "normalized", "raw", "relative_to_no_kd"]
    # conflict views: swapped a -> the donor's label wins (2 > 1 + 0.5): not rejected; v -> 1 + 2 > 0.5: rejected;
    # a and v -> 2.5 > 1: not rejected
    assert run.rejection == [
        {**base, "type": "a", "rate": 0.0, "pairs": 2},
        {**base, "type": "v", "rate": 1.0, "pairs": 2},
        {**base, "type": "av", "rate": 0.0, "pairs": 2},
    ]
    # flagged real utterances (0, 0), (0, 2), (1, 1), labels 0, 2, 0. complete: predictions 1, 2, 0 -> accuracy 2/3,
    # weighted F1 (2 * 2/3 + 1 * 1) / 3 = 7/9; random:0.5: 0, 0, 2 -> 1/3 and (2 * 0.5 + 0) / 3 = 1/3
    assert run.natural == [
        {**base, "condition": "complete", "accuracy": pytest.approx(2 / 3), "weighted_f1": pytest.approx(7 / 9)},
        {**base, "condition": "random:0.5", "accuracy": pytest.approx(1 / 3), "weighted_f1": pytest.approx(1 / 3)},
    ]
    assert list(run.natural[0]) == ["variant", "method", "seed", "condition", "accuracy", "weighted_f1"]
    assert run.notes == []
    fused, target = run.embeddings["kd"]
    # all 5 real utterances in order at random:0.5: 2 * (u + 1) * (6, 8)
    assert fused.tolist() == [[12.0, 16.0], [24.0, 32.0], [36.0, 48.0], [12.0, 16.0], [24.0, 32.0]]
    assert target.tolist() == [0, 1, 2, 1, 0]
    assert list(run.embeddings) == ["kd"]


def test_run_analyses_teacher_rows_cached_per_seed_and_first_seed_only_embeds(calls, tmp_path):
    run = build(calls, tmp_path, conditions=("complete", "random:0.5"))
    t0, t1 = FakeModel("T0", 1.0), FakeModel("T1", 2.0)
    run.add("teacher", "teacher", 0, t0, t0)
    run.add("kd", "corekd", 0, FakeModel("S", 2.0), t0)
    run.add("teacher", "teacher", 1, t1, t1)
    run.add("kd1", "corekd", 1, FakeModel("S", 2.0), t1)
    teacher_complete = [c for c in calls if c[1] == "complete" and c[0].startswith("T")]
    # the teacher's complete view: once per seed (reused by its seed's students), plus its own scoring under complete
    assert [c[0] for c in calls if c[1] == "complete"] == ["T0", "T0", "S", "T1", "T1", "S"]
    assert len(teacher_complete) == 4
    assert run.first_seed == 0 and list(run.embeddings) == ["teacher", "kd"]
    rows = {(r["variant"], r["seed"], r["condition"]): r for r in run.drift}
    assert rows[("teacher", 0, "complete")]["raw"] == pytest.approx(0.0)
    # seed 1's student (scale 2) against seed 1's teacher (scale 2): same states at complete
    assert rows[("kd1", 1, "complete")]["raw"] == pytest.approx(0.0)
    assert rows[("kd", 0, "complete")]["raw"] == pytest.approx(5.0)


def test_run_analyses_tsne_subsample_is_seeded_by_the_mask_seed(calls, tmp_path, monkeypatch):
    monkeypatch.setattr(A, "TSNE_POINTS", 3)
    run = build(calls, tmp_path, labels=[[0, 1, 2, 0], [1, 0, 2]], flags=None)
    student = FakeModel("S", 1.0)
    run.add("kd", "corekd", 0, student, FakeModel("T"))
    real = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    pick = np.sort(numpy_generator("tsne", 3).permutation(7)[:3])
    chosen = [real[i] for i in pick]
    fused, target = run.embeddings["kd"]
    assert fused.tolist() == [[6.0 * (u + 1), 8.0 * (u + 1)] for _, u in chosen]
    labels = [[0, 1, 2, 0], [1, 0, 2]]
    assert target.tolist() == [labels[i][u] for i, u in chosen]
    assert fused.dtype == np.float32


def test_run_analyses_own_and_data_exclusions(calls, tmp_path):
    run = build(
        calls,
        tmp_path,
        conditions=("fixed:a", "complete", "fixed:l", "random:0.5"),
        not_applicable={"fixed:a": "the data has no a"},
    )
    own = {"random:0.5": "subset model", "fixed:a": "method says a", "complete": "needs all", "gone:x": "absent"}
    run.add("sub", "subset", 0, FakeModel("S", 2.0, STUDENT_WRONG), FakeModel("T"), not_applicable=own)
    assert [c[1] for c in calls] == ["complete", "fixed:l"]  # teacher's complete view; the student's only condition
    assert [(r["condition"], r["raw"]) for r in run.drift] == [("fixed:l", pytest.approx(SQ125))]
    assert run.rejection == [] and run.natural == [] and run.embeddings == {}
    assert run.notes == [
        "sub (subset): state drift under the 2 condition(s) it is not scored under skipped: subset model",
        "sub (subset): conflict rejection (its conflict views are complete views) skipped: needs all",
        "sub (subset): natural conflicts (views complete and random:0.5) skipped: needs all",
        "sub (subset): t-SNE panel (drawn at random:0.5) skipped: subset model",
    ]
    run.add("sub", "subset", 1, FakeModel("S", 2.0), FakeModel("T"), not_applicable=own)
    assert len(run.notes) == 4  # the same note is not repeated


def test_run_analyses_only_complete_excluded(calls, tmp_path):
    run = build(calls, tmp_path, figures=False)
    run.add("sub", "subset", 0, FakeModel("S", 2.0, STUDENT_WRONG), FakeModel("T"), not_applicable={"complete": "no"})
    assert run.notes == [
        "sub (subset): state drift under the 1 condition(s) it is not scored under skipped: no",
        "sub (subset): conflict rejection (its conflict views are complete views) skipped: no",
    ]
    assert [r["condition"] for r in run.natural] == ["random:0.5"]
    assert run.natural[0]["accuracy"] == pytest.approx(1 / 3)
    assert run.embeddings == {}  # figures off


def test_run_analyses_data_exclusion_alone_gives_no_note(calls, tmp_path):
    run = build(calls, tmp_path, conditions=("complete", "fixed:a", "fixed:l"), not_applicable={"fixed:a": "no a"})
    run.add("kd", "corekd", 0, FakeModel("S", 2.0), FakeModel("T"))
    assert [c[1] for c in calls] == ["complete", "complete", "fixed:l", "conflict", "conflict", "conflict"]
    assert run.notes == []
    assert [r["condition"] for r in run.drift] == ["complete", "fixed:l"]


def test_run_analyses_frames_reach_run_model(calls, tmp_path):
    keep = {"a": torch.ones(2, 3, 4, dtype=torch.bool)}
    run = build(calls, tmp_path, conditions=("complete", "frames:0.5"), frames={"frames:0.5": keep})
    run.add("kd", "corekd", 0, FakeModel("S"), None)
    assert calls == [("S", "complete", 4, DEVICE, None), ("S", "frames:0.5", 4, DEVICE, keep)]


def test_run_analyses_feature_corruption_reaches_run_model(calls, tmp_path):
    """Drift under features:p is measured on the corrupted features, not on the complete view's."""
    keep = {"l": torch.ones(2, 3, 5, dtype=torch.bool)}
    run = build(calls, tmp_path, conditions=("complete", "features:0.5"), features={"features:0.5": keep})
    run.add("kd", "corekd", 0, FakeModel("S"), None)
    assert [c[1] for c in calls] == ["complete", "features:0.5"] and calls.features == [None, keep]


def test_run_analyses_without_teacher(calls, tmp_path):
    run = build(calls, tmp_path)
    run.add("kd", "no_kd", 0, FakeModel("S", 2.0, STUDENT_WRONG), None)
    assert [c[0] for c in calls] == ["S", "S", "S"]  # no teacher, no conflict view
    assert run.drift == [] and run.rejection == []
    assert [(r["condition"], round(r["accuracy"], 6)) for r in run.natural] == [
        ("complete", round(2 / 3, 6)),
        ("random:0.5", round(1 / 3, 6)),
    ]
    assert list(run.embeddings) == ["kd"]
    payload = run.payload()
    assert payload["notes"] == [
        "no teacher in this run: state drift and rejection need the teacher's complete-view outputs"
    ]


def test_run_analyses_without_flags_or_flagged_utterances(calls, tmp_path):
    run = build(calls, tmp_path, flags=None)
    run.add("kd", "corekd", 0, FakeModel("S"), FakeModel("T"))
    assert run.natural == [] and len(run.rejection) == 3
    none_real = build(calls, tmp_path, flags=torch.tensor([[False, False, False], [False, False, True]]))
    none_real.add("kd", "corekd", 0, FakeModel("S"), FakeModel("T"))
    assert none_real.natural == []  # only padding flagged


def test_run_analyses_regression(calls, tmp_path):
    targets = [[0.5, -1.0, 2.0], [1.5, 0.25]]
    run = build(calls, tmp_path, task="regression", targets=targets)
    teacher = FakeModel("T", 1.0, classes=1)
    run.add("kd", "corekd", 0, FakeModel("S", 2.0, classes=1), teacher)
    assert [c[1] for c in calls] == ["complete", "complete", "fixed:l", "random:0.5"]  # no conflict view
    assert [r["condition"] for r in run.drift] == ["complete", "fixed:l", "random:0.5"]
    assert run.rejection == [] and run.natural == [] and run.notes == []
    fused, target = run.embeddings["kd"]
    assert target.tolist() == [0.5, -1.0, 2.0, 1.5, 0.25]
    payload = run.payload()
    assert payload["task"] == "regression"
    assert payload["notes"] == [
        "regression run: rejection rate and natural-conflict accuracy are skipped (a sentiment score has no donor "
        "label to reject, and accuracy/F1 are classification scores)"
    ]
    assert payload["natural_conflicts"] == {"flagged": True, "utterances": 3, "records": []}


def test_run_analyses_add_leaves_the_global_stream_alone(calls, tmp_path):
    run = build(calls, tmp_path)
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    run.add("kd", "corekd", 0, FakeModel("S"), FakeModel("T"))
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ payload, save, read back
def test_payload_by_hand(calls, tmp_path):
    run = build(calls, tmp_path)
    t = FakeModel("T", 1.0)
    run.add("no_kd", "no_kd", 0, FakeModel("S", 2.0), t)
    run.add("kd", "corekd", 0, FakeModel("S", 1.0, STUDENT_WRONG), t)
    run.notes.append("a note")
    payload = run.payload(["figures/x.png"])
    assert list(payload) == [
        "format",
        "version",
        "pairs",
        "task",
        "drift",
        "mstate_drift",
        "rejection",
        "natural_conflicts",
        "modality_diagnostics",  # empty here: add() was given no records
        "notes",
        "figures",
    ]
    assert payload["format"] == "corekd-analyses" and payload["version"] == 1
    assert payload["modality_diagnostics"] == []
    assert payload["pairs"] == {"seed": 3, "targets": 2, "types": ["a", "v", "av"], "share_per_dialogue": 0.2}
    assert payload["task"] == "classification"
    # no_kd raw at fixed:l: |(8, -6) - (3, 4)| = sqrt(125); kd: |(4, -3) - (3, 4)| = sqrt(50); normalised both 2.0
    rel = {(r["variant"], r["condition"]): r["relative_to_no_kd"] for r in payload["drift"]}
    assert rel[("no_kd", "fixed:l")] == 0.0 and rel[("kd", "fixed:l")] == pytest.approx(0.0)
    assert rel[("kd", "complete")] is None  # a zero reference (no_kd's normalised drift is 0 at complete)
    assert all(r["relative_to_no_kd"] is None for r in run.drift)  # the collected rows are not modified
    assert payload["rejection"] is run.rejection and len(payload["rejection"]) == 6
    assert payload["natural_conflicts"] == {"flagged": True, "utterances": 3, "records": run.natural}
    assert len(run.natural) == 4
    assert payload["notes"] == ["a note"]
    assert payload["figures"] == ["figures/x.png"]
    assert run.payload()["figures"] == []


def test_payload_notes_without_flags_and_no_teacher(calls, tmp_path):
    run = build(calls, tmp_path, flags=None)
    run.notes.append("first")
    payload = run.payload()
    assert payload["natural_conflicts"] == {"flagged": False, "utterances": 0, "records": []}
    assert payload["notes"] == [
        "first",
        "no teacher in this run: state drift and rejection need the teacher's complete-view outputs",
        "this corpus records no natural conflict flag (real corpora have none): no natural-conflict numbers",
    ]
    assert run.notes == ["first"]


def test_read_analyses_reads_back_what_a_run_wrote(calls, tmp_path):
    run = build(calls, tmp_path)
    run.add("kd", "corekd", 0, FakeModel("S", 2.0, STUDENT_WRONG), FakeModel("T"))
    (tmp_path / "analyses.json").write_text(json.dumps(run.payload(["figures/x.png"]), indent=1))
    back = A.read_analyses(tmp_path)
    assert back == json.loads(json.dumps(run.payload(["figures/x.png"])))
    assert A.read_analyses(str(tmp_path)) == back
    assert A.read_analyses(tmp_path / "nothing-here") is None


def test_merged_parts_equal_one_collector_over_every_model(calls, tmp_path):
    """analyses.json assembled from per-model parts (the engine's way) is what one collector over all models gives."""
    whole = build(calls, tmp_path)
    parts = []
    models = (("teacher", FakeModel("T")), ("no_kd", FakeModel("N", 3.0)), ("kd", FakeModel("S", 2.0, STUDENT_WRONG)))
    for variant, model in models:
        whole.add(variant, variant, 0, model, FakeModel("T"))
        one = A.RunAnalyses(whole.test, whole.masks, FLAGS, ["x", "y", "z"], "classification", 3, 4, DEVICE)
        one.add(variant, variant, 0, model, FakeModel("T"))
        parts.append({**one.payload(), "skipped": list(one.notes)})
    merged = A.merge_parts(parts)
    expected = whole.payload()
    expected.pop("figures")
    assert merged == expected
    assert any(r["relative_to_no_kd"] not in (None, 1.0) for r in merged["drift"])  # computed over the merged rows


def test_read_analyses_missing_bad_and_foreign(tmp_path):
    assert A.read_analyses(tmp_path) is None
    (tmp_path / "analyses.json").mkdir()
    assert A.read_analyses(tmp_path) is None  # not a file
    other = tmp_path / "o"
    other.mkdir()
    (other / "analyses.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CorekdError) as err:
        A.read_analyses(other)
    assert "unreadable analyses file (" in str(err.value) and err.value.path == str(other / "analyses.json")
    (other / "analyses.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(CorekdError) as err:
        A.read_analyses(other)
    assert err.value.detail == 'not a corekd analyses file (expected "format": "corekd-analyses")'
    assert err.value.path == str(other / "analyses.json") and err.value.field == "format"
    (other / "analyses.json").write_text('{"format": "corekd-analyses", "note": "±"}', encoding="utf-8")
    assert A.read_analyses(other) == {"format": "corekd-analyses", "note": "±"}
    (other / "analyses.json").write_text('{"FORMAT": "corekd-analyses"}', encoding="utf-8")
    with pytest.raises(CorekdError):
        A.read_analyses(other)


class FixedModel:
    """The teacher's complete-view logits given by hand; on a conflict view every output is uniform (logits 0)."""

    def __init__(self, name, logits):
        self.name, self.logits = name, logits

    def outputs(self, split, test, condition):
        n, u_max = split.utt_mask.shape
        logits = self.logits if split is test else torch.zeros(n, u_max, 3)
        return Output(logits=logits, fused=torch.ones(n, u_max, 2), states=torch.zeros(n, u_max, 3, 2))


def test_rejection_compares_each_utterance_class_distribution(calls, tmp_path):
    """One pair, target (0, 0), donor (1, 0); the model's conflict output is uniform u = (1/3, 1/3, 1/3). The teacher is
    sure at the target (logits (5, 0, 0): q = (0.987, 0.007, 0.007), ||u - q|| ~ 0.80) and unsure at the donor
    ((0.1, 0, 0): (0.355, 0.322, 0.322), ||u - q|| ~ 0.027): u is nearer the donor's -> not rejected (rate 0); the
    reverse pair is rejected (rate 1). Probabilities are over classes: normalised over a dialogue's utterances
    instead, the target's row would be exactly uniform (its dialogue's rows are all (5, 0, 0))."""
    teacher_logits = torch.zeros(2, 3, 3)
    teacher_logits[0, :, 0] = 5.0
    teacher_logits[1, 0, 0] = 0.1
    for target, donor, rate in (([0, 0], [1, 0], 0.0), ([1, 0], [0, 0], 1.0)):
        calls.clear()
        run = build(calls, tmp_path, conditions=("complete",), flags=None)
        run.pairs = A.ConflictPairs(torch.tensor([target]), torch.tensor([donor]), 3, ("a",))
        run.add("kd", "corekd", 0, FixedModel("S", torch.zeros(2, 3, 3)), FixedModel("T", teacher_logits))
        assert run.rejection == [
            {"variant": "kd", "method": "corekd", "seed": 0, "type": "a", "rate": rate, "pairs": 1}
        ]


def test_drift_of_an_empty_selection_is_nan_not_an_error():
    fused = torch.ones(1, 2, 3)  # [N, U, H]
    normalized, raw = drift(fused, fused * 2, torch.zeros(1, 2, dtype=torch.bool))
    assert math.isnan(normalized) and math.isnan(raw)


@pytest.mark.parametrize("reference", [None, 0.0, float("nan"), float("inf")])
def test_relative_without_a_usable_reference_is_none(reference):
    assert relative(0.5, reference) is None


def test_relative_by_hand():
    assert relative(3.0, 2.0) == pytest.approx(0.5)
    assert relative(3.0, 1.0) == pytest.approx(2.0)  # a reference of exactly 1 is an ordinary one
    assert relative(0.5, -0.25) == pytest.approx(-3.0)


def test_conflict_view_swaps_the_availability_of_the_swapped_modality_only(tiny_splits):
    """A target without ``a`` gets its donor's ``a`` (and its availability); a donor without ``l`` gives no ``l``."""
    test = tiny_splits["test"]
    assert test.modalities == ("l", "a", "v") and len(test) >= 2 and int(test.lengths[:2].min()) >= 2
    avail = test.avail.clone()
    avail[0, 0] = torch.tensor([True, False, True])  # target: language and vision, no audio
    avail[1, 1] = torch.tensor([False, True, False])  # donor: audio only
    split = replace(test, avail=avail)
    pairs = ConflictPairs(target=torch.tensor([[0, 0]]), donor=torch.tensor([[1, 1]]), seed=0, types=("a",))

    view = conflict_view(split, pairs, ("a",))

    assert view.avail[0, 0].tolist() == [True, True, True]  # a now observed (the donor's); l and v the target's own
    assert torch.equal(view.features["a"][0, 0], split.features["a"][1, 1])
    untouched = torch.ones_like(split.utt_mask)
    untouched[0, 0] = False
    assert torch.equal(view.avail[untouched], split.avail[untouched])
    assert split.avail[0, 0].tolist() == [True, False, True]  # the source split is not modified

    both = conflict_view(split, pairs, ("a", "v"))
    assert both.avail[0, 0].tolist() == [True, True, False]  # the donor has no v: the target loses its own
