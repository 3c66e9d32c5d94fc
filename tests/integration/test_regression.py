"""Sentiment regression (task: regression): losses, metrics, selection direction, NCE donors, synthetic corpus,
config, and a tiny pipeline end to end."""

import json
import math

import numpy as np
import pytest
import torch

from corekd.config import validate_config
from corekd.data.batching import SplitTensors
from corekd.data.corpus import load_corpus
from corekd.data.synth import SynthConfig, generate, label_valence
from corekd.errors import CorekdError
from corekd.evaluation.metrics import better, regression_metrics, task_metrics
from corekd.experiments import run
from corekd.methods import method_class
from corekd.methods.losses import distill_loss, l1_error, squared_error, supervised_loss
from corekd.methods.nce import nce_view
from corekd.reporting.run import render_report
from corekd.seeding import torch_generator
from helpers import TINY_SYNTH, quick_config


@pytest.fixture(scope="module")
def reg_corpus():
    return generate(SynthConfig(**TINY_SYNTH, task="regression"))


@pytest.fixture(scope="module")
def reg_train(reg_corpus):
    return SplitTensors.from_corpus(reg_corpus, "train", "regression")


# ------------------------------------------------------------------ losses (hand-computed)
def test_l1_and_squared_error_by_hand():
    p, t = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.5, 1.0, 2.0])
    assert torch.allclose(l1_error(p, t), torch.tensor([0.5, 1.5, 0.0]))
    assert torch.allclose(squared_error(p, t), torch.tensor([0.25, 2.25, 0.0]))


class _B:  # the two fields supervised_loss reads
    def __init__(self, labels, targets):
        self.labels, self.targets = labels, targets


def test_supervised_loss_dispatches_on_the_task():
    logits = torch.tensor([[[1.5], [-1.0]]])  # [B=1, U=2, 1]
    reg = supervised_loss(logits, _B(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0.5, 1.0]])))
    assert torch.allclose(reg, torch.tensor([[1.0, 2.0]]))  # |1.5-0.5|, |-1-1|
    two = torch.tensor([[[0.0, math.log(3.0)]]])  # softmax = (1/4, 3/4)
    ce = supervised_loss(two, _B(torch.tensor([[1]]), None))
    assert torch.allclose(ce, torch.tensor([[-math.log(0.75)]]))


def test_distill_loss_is_squared_error_for_regression_and_kl_for_classification():
    s, t = torch.tensor([[2.0], [0.0]]), torch.tensor([[0.5], [-1.0]])
    assert torch.allclose(distill_loss(s, t, 4.0, True), torch.tensor([2.25, 1.0]))  # the temperature plays no part
    same = torch.tensor([[1.0, 2.0]])
    assert torch.allclose(distill_loss(same, same, 2.0, False), torch.zeros(1), atol=1e-7)


# ------------------------------------------------------------------ metrics (hand-computed)
def test_regression_metrics_by_hand():
    y = np.array([-2.0, -0.4, 0.0, 0.6, 2.0, 3.0])
    p = np.array([-1.0, 0.2, -0.3, 0.6, 2.6, 4.0])
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx((1 + 0.6 + 0.3 + 0 + 0.6 + 1) / 6)
    # negative/non-negative: truth [N N P P P P], pred [N P N P P P] -> 4 of 6
    assert m["acc2"] == pytest.approx(4 / 6)
    # weighted F1: class N (support 2): tp 1, fp 1, fn 1 -> 0.5; class P (support 4): tp 3, fp 1, fn 1 -> 0.75
    assert m["f1_2"] == pytest.approx((2 * 0.5 + 4 * 0.75) / 6)
    # non-zero truth only (drops 0.0): truth [N N P P P], pred [N P P P P] -> 4 of 5
    assert m["acc2_nz"] == pytest.approx(4 / 5)
    # N (support 2): tp 1, fp 0, fn 1 -> 2/3; P (support 3): tp 3, fp 1, fn 0 -> 6/7
    assert m["f1_2_nz"] == pytest.approx((2 * (2 / 3) + 3 * (6 / 7)) / 5)
    # 7 classes: truth rounds to [-2, -0, 0, 1, 2, 3], pred clipped+rounded to [-1, 0, -0, 1, 3, 3] -> 4 of 6
    assert m["acc7"] == pytest.approx(4 / 6)
    assert m["corr"] == pytest.approx(float(np.corrcoef(y, p)[0, 1]))
    # 5 classes: truth clipped to [-2, 2] rounds to [-2, -0, 0, 1, 2, 2], pred to [-1, 0, -0, 1, 2, 2] -> 5 of 6
    assert m["acc5"] == pytest.approx(5 / 6)
    assert regression_metrics(y, np.ones_like(y))["corr"] is None  # a constant prediction: r undefined


def test_metric_direction_and_task_dispatch():
    from corekd.config import REGRESSION_SELECT
    from corekd.evaluation.metrics import REGRESSION_METRICS

    assert REGRESSION_SELECT == REGRESSION_METRICS  # the config (which does not import sklearn) lists the same metrics
    assert better("mae", 0.5, 0.7) and not better("mae", 0.7, 0.5)
    assert better("weighted_f1", 0.7, 0.5) and not better("acc2", 0.5, 0.7)
    assert "mae" in task_metrics(np.zeros(3), np.zeros(3), [], "regression")
    assert "weighted_f1" in task_metrics(np.array([0, 1]), np.array([0, 1]), ["x", "y"], "classification")


# ------------------------------------------------------------------ data
def test_synthetic_regression_corpus_is_the_classification_corpus_plus_a_sentiment(reg_corpus):
    base = generate(SynthConfig(**TINY_SYNTH))
    assert base.task == "classification" and reg_corpus.task == "regression"
    assert "task" not in base.info["config"]  # the classification corpus's provenance is unchanged
    valence = label_valence(base.labels)
    for d0, d1 in zip(base.dialogues, reg_corpus.dialogues):
        assert d0.sentiment is None and d0.split == d1.split
        assert np.array_equal(d0.labels, d1.labels)
        assert all(np.array_equal(d0.features[m], d1.features[m]) for m in d0.features)
        s = d1.sentiment
        assert s.dtype == np.float32 and np.all(np.abs(s) <= 3)
        assert np.allclose(s * 3, np.round(s * 3), atol=1e-5)  # multiples of 1/3
    all_s = np.concatenate([d.sentiment for d in reg_corpus.dialogues])
    all_v = np.concatenate([valence[d.labels] for d in reg_corpus.dialogues])
    assert np.corrcoef(all_s, all_v)[0, 1] > 0.8  # the score follows the emotion's valence
    again = generate(SynthConfig(**TINY_SYNTH, task="regression"))
    assert all(np.array_equal(a.sentiment, b.sentiment) for a, b in zip(again.dialogues, reg_corpus.dialogues))


def test_split_targets_and_batches_carry_the_sentiment(reg_corpus, reg_train):
    d = reg_corpus.split("train")[0]
    assert torch.equal(reg_train.targets[0, : len(d)], torch.from_numpy(d.sentiment))
    batch = reg_train.batch([0, 1])
    assert batch.targets.shape == batch.labels.shape and batch.targets.dtype == torch.float32
    assert SplitTensors.from_corpus(reg_corpus, "train").targets is None  # classification view of the same corpus


def test_regression_needs_a_sentiment_everywhere(tmp_path, reg_corpus):
    with pytest.raises(CorekdError, match="sentiment"):
        SplitTensors.from_corpus(generate(SynthConfig(**TINY_SYNTH)), "train", "regression")
    folder = reg_corpus.save(tmp_path / "c")
    assert load_corpus(folder).task == "regression"
    meta = json.loads((folder / "corpus.json").read_text())
    del meta["dialogues"][0]["utterances"][0]["sentiment"]
    (folder / "corpus.json").write_text(json.dumps(meta))
    with pytest.raises(CorekdError, match=r"dialogues\[0\]\.utterances\[0\]\.sentiment"):
        load_corpus(folder)


def test_nce_donors_have_another_sentiment_sign(reg_train):
    batch = reg_train.batch(list(range(min(4, len(reg_train)))))
    cv = nce_view(batch, batch, prob=1.0, types=("a", "v"), generator=torch_generator("nce", 0))
    sel = cv.selected
    assert sel.any()
    signs = torch.sign(batch.targets)
    assert (signs.reshape(-1)[cv.donor[sel]] != signs[sel]).all()


# ------------------------------------------------------------------ config
def test_regression_selects_on_dev_mae_by_default():
    cfg = validate_config({"data": {"synth": {"task": "regression"}}})
    assert cfg.task == "regression" and cfg.training.select_metric == "mae"
    assert validate_config({}).training.select_metric == "weighted_f1"
    assert (
        validate_config({"task": "regression", "training": {"select_metric": "acc7"}}).training.select_metric == "acc7"
    )
    with pytest.raises(CorekdError, match="classification metric"):
        validate_config({"task": "regression", "training": {"select_metric": "weighted_f1"}})
    with pytest.raises(CorekdError, match="regression metric"):
        validate_config({"training": {"select_metric": "mae"}})


def test_margin_term_is_refused_for_regression():
    cls = method_class("corekd")
    method = cls(cls.Options(l_nce_margin=0.5), None)
    assert method.check_task("regression")[0] == "l_nce_margin"
    assert method.check_task("classification") is None


# ------------------------------------------------------------------ end to end
def test_tiny_regression_pipeline_end_to_end(tmp_path):
    cfg = quick_config(
        methods=[{"name": "teacher"}, {"name": "vanilla_kd"}, {"name": "corekd"}],
        training={"epochs": 3, "patience": 3, "batch_size": 4},
    )
    cfg["data"]["synth"]["task"] = "regression"
    result = run(validate_config(cfg), tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["meta"]["task"] == "regression"
    test = [r for r in result.records if r["split"] == "test" and r.get("applicable", True)]
    assert {r["variant"] for r in test} == {"teacher", "vanilla_kd", "corekd"}
    for r in test:
        assert {"mae", "corr", "acc2", "f1_2", "acc2_nz", "f1_2_nz", "acc5", "acc7"} <= set(
            r
        ) and "weighted_f1" not in r
        assert 0 <= r["mae"] <= 6 and 0 <= r["acc2"] <= 1
    for t in result.trainings:  # selection on the LOWEST dev MAE
        curve = [h["dev_mae"] for h in t["history"]]
        assert t["selected_epoch"] == 1 + int(np.argmin(curve))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Fixed missing modalities (MAE)" in report and "## Random missing, rate p (Acc-2" in report
    assert "## All sentiment metrics at random:0.5" in report and "weighted F1" not in report
    # report.md = the rendered tables, then the mechanism analyses section (from analyses.json)
    assert report.startswith(render_report(saved["meta"], saved["records"], saved["trainings"]).rstrip("\n"))
    assert "## Mechanism analyses" in report and "### Conflict rejection rate" not in report  # skipped for regression


def _reg_records(seed_values):
    """Test records of one variant at every fixed condition and random:0.5; ``seed_values``: seed -> corr value."""
    out = []
    for seed, corr in seed_values.items():
        for cond in ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av", "complete", "random:0.5"]:
            out.append(
                {
                    "method": "no_kd",
                    "variant": "no_kd",
                    "seed": seed,
                    "condition": cond,
                    "split": "test",
                    "mae": 0.5,
                    "corr": corr,
                    "acc2": 0.6,
                    "f1_2": 0.6,
                    "acc2_nz": None,
                    "f1_2_nz": None,
                    "acc5": 0.3,
                    "acc7": 0.2,
                    "missing_rate": 0.5 if cond == "random:0.5" else 0.0,
                }
            )
    return out


def test_undefined_metrics_read_n_a_in_reports_never_zero():
    """acc2_nz / f1_2_nz undefined (every true score 0) and corr undefined for one seed: "n/a" where no seed has a
    value, the mean over the seeds that have one (n=...) otherwise; never 0.00."""
    from corekd.reporting.tables import records_frame

    records = _reg_records({0: None, 1: 0.4})
    meta = {"corpus": "x", "task": "regression", "seeds": [0, 1], "methods": ["no_kd"]}
    report = render_report(meta, records, [])
    section = report.split("## All sentiment metrics at random:0.5")[1]
    row = next(line for line in section.split("\n") if line.startswith("| no_kd |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells == [
        "no_kd",
        "0.500 ± 0.000",
        "0.400 (n=1)",
        "60.00 ± 0.00",
        "60.00 ± 0.00",
        "n/a",
        "n/a",
        "30.00 ± 0.00",
        "20.00 ± 0.00",
    ]
    assert "Acc-5" in report
    frame = records_frame(records)
    avg = frame[frame.condition == "fixed:avg"].set_index("seed")
    assert np.isnan(avg.loc[0, "corr"]) and avg.loc[1, "corr"] == pytest.approx(0.4)
    # one condition undefined -> that seed's fixed average is undefined, not the mean of the other five
    records[0]["corr"] = None
    records[8]["corr"] = None  # seed 1, fixed:l
    frame = records_frame(records)
    assert frame[(frame.condition == "fixed:avg")]["corr"].isna().all()


def test_an_undefined_dev_score_reads_n_a_in_the_training_table():
    meta = {"corpus": "x", "task": "regression", "seeds": [0], "methods": ["no_kd"]}
    trainings = [
        {
            "variant": "no_kd",
            "seed": 0,
            "best_epoch": 1,
            "selected_epoch": 1,
            "epochs_run": 2,
            "dev_corr": None,
            "seconds": 1.0,
        }
    ]
    report = render_report(meta, _reg_records({0: 0.1}), trainings)
    assert "| no_kd | 1.0 | 2.0 | n/a | 1.0 |" in report
