"""`corekd data import --task regression`: jsonl and mmsa-pickle make the sentiment the target, and the
imported corpus trains end to end as a regression run."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from corekd.cli import app
from corekd.config import validate_config
from corekd.data.corpus import load_corpus
from corekd.data.importers import import_corpus
from corekd.errors import CorekdError
from corekd.experiments import run
from helpers import mmsa_pickle, quick_config

runner = CliRunner()


def _regression_jsonl(path, rng, n_train=10, n_test=3, labels=False):
    lines = []
    for k in range(n_train + n_test):
        utts = []
        for i in range(4):
            s = [-2.0, 0.0, 1.5, -0.5][(k + i) % 4]
            u = {
                "id": f"d{k}_u{i}",
                "speaker": f"s{k}_{i % 2}",
                "sentiment": s,
                "l": (rng.normal(size=5) + s).tolist(),
                "a": rng.normal(size=3).tolist(),
            }
            if labels:
                u["label"] = "pos" if s > 0 else "other"
            utts.append(u)
        lines.append({"dialogue_id": f"d{k}", "split": "train" if k < n_train else "test", "utterances": utts})
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return lines


def test_jsonl_regression_round_trip_without_labels_gets_sign_classes_and_runs(tmp_path):
    src = tmp_path / "sent.jsonl"
    raw = _regression_jsonl(src, np.random.default_rng(0))
    result = runner.invoke(
        app, ["data", "import", "jsonl", str(src), "--out", str(tmp_path / "c"), "--task", "regression"]
    )
    assert result.exit_code == 0, result.output
    assert "target: sentiment (regression)" in result.output
    corpus = load_corpus(tmp_path / "c")
    assert corpus.task == "regression" and corpus.labels == ["negative", "non-negative"]
    by_id = {d.id: d for d in corpus.dialogues}
    for line in raw:
        d = by_id[line["dialogue_id"]]
        want = [u["sentiment"] for u in line["utterances"]]
        np.testing.assert_array_equal(d.sentiment, np.float32(want))
        assert [corpus.labels[i] for i in d.labels] == ["negative" if s < 0 else "non-negative" for s in want]
    cfg = quick_config(methods=[{"name": "no_kd"}])
    cfg["data"] = {"source": "corpus", "path": str(tmp_path / "c")}  # the task follows the corpus: regression
    out = run(validate_config(cfg), tmp_path / "run")
    assert out.trainings[0]["history"][0].keys() >= {"dev_mae"}
    assert all("mae" in r for r in out.records if r.get("applicable", True))
    again = run(validate_config(cfg), tmp_path / "run", resume=True)  # the settled task matches the stored config
    assert again.records == out.records


def test_jsonl_regression_keeps_given_labels_and_needs_a_sentiment(tmp_path):
    src = tmp_path / "l.jsonl"
    _regression_jsonl(src, np.random.default_rng(1), labels=True)
    corpus = import_corpus("jsonl", src, tmp_path / "c", task="regression").corpus
    assert corpus.task == "regression" and sorted(corpus.labels) == ["other", "pos"]
    lines = src.read_text().splitlines()
    first = json.loads(lines[0])
    del first["utterances"][1]["sentiment"]
    src.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    with pytest.raises(CorekdError, match=r"l\.jsonl: line 1: utterances\[1\]\.sentiment: required field is missing"):
        import_corpus("jsonl", src, tmp_path / "c2", task="regression")
    assert import_corpus("jsonl", src, tmp_path / "c3").corpus.task == "classification"  # labels suffice there


def test_mmsa_regression_import_and_refusals(tmp_path):
    data = mmsa_pickle(np.random.default_rng(5), aligned=False)
    src = tmp_path / "m.pkl"
    src.write_bytes(pickle.dumps(data))
    result = runner.invoke(
        app, ["data", "import", "mmsa-pickle", str(src), "--out", str(tmp_path / "c"), "--task", "regression"]
    )
    assert result.exit_code == 0, result.output
    assert "is the target (task regression)" in result.output
    corpus = load_corpus(tmp_path / "c")
    assert corpus.task == "regression"
    got = sorted(float(s) for d in corpus.dialogues for s in d.sentiment)
    want = sorted(float(s) for part in data.values() for s in part["regression_labels"])
    assert got == want
    bad = runner.invoke(
        app, ["data", "import", "mmsa-pickle", str(src), "--out", str(tmp_path / "x"), "--task", "ordinal"]
    )
    assert bad.exit_code == 2 and "--task: expected classification or regression, got 'ordinal'" in bad.output
    with pytest.raises(CorekdError, match="conversation-pickle files hold class labels only"):
        import_corpus("conversation-pickle", src, tmp_path / "y", task="regression")
