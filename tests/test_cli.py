"""The command line: a tiny end-to-end run, the data commands, and one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from corekd.cli import app
from corekd.config import load_config
from helpers import ROOT, edit_features, edit_meta

runner = CliRunner()
CONDITIONS = [
    "complete",
    "fixed:l",
    "fixed:a",
    "fixed:v",
    "fixed:la",
    "fixed:lv",
    "fixed:av",
    *[f"random:{k / 10:.1f}" for k in range(8)],
]
METRIC_KEYS = {"method", "seed", "condition", "accuracy", "weighted_f1", "macro_f1", "uar", "per_class_f1"}


@pytest.fixture()
def tiny_yaml(tmp_path, tiny_config_dict):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict))
    return path


@pytest.mark.parametrize(
    "args", [[], ["run"], ["compare"], ["report"], ["data"], ["data", "synth"], ["data", "inspect"], ["data", "probe"]]
)
def test_every_command_has_help(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_tiny_end_to_end_run(tmp_path, tiny_yaml):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "results.json").read_text())
    assert {r["split"] for r in payload["records"]} == {"dev", "test"}  # every model on dev and test
    records = [r for r in payload["records"] if r["split"] == "test"]
    assert all(METRIC_KEYS <= set(r) for r in records)
    got = {(r["method"], r["seed"], r["condition"]) for r in records}
    want = {(m, s, c) for m in ("teacher", "no_kd", "vanilla_kd", "corekd") for s in (0, 1) for c in CONDITIONS}
    assert got == want and len(records) == len(want)
    for r in records:
        assert 0 <= r["accuracy"] <= 1 and set(r["per_class_f1"]) == set(payload["meta"]["labels"])
    # One set of evaluation masks for every method and seed.
    rates = {}
    for r in records:
        rates.setdefault(r["condition"], set()).add(r["missing_rate"])
    assert all(len(v) == 1 for v in rates.values())
    assert abs(next(iter(rates["random:0.5"])) - 0.5) < 0.05
    report = (out / "report.md").read_text()
    assert "## Fixed missing modalities (weighted F1)" in report and "## Random missing" in report
    assert "| {l} | {a} | {v} | {l,a} | {l,v} | {a,v} | Avg | complete |" in report
    assert "Re-run: `corekd run" in report and "--seeds 0,1" in report
    for method in ("teacher", "no_kd", "vanilla_kd", "corekd"):
        assert f"| {method} |" in report
        for seed in (0, 1):
            assert (out / "checkpoints" / method / f"seed{seed}" / "model.safetensors").is_file()
    resolved = load_config(out / "config.yaml")
    assert resolved.seeds == [0, 1] and resolved.methods[3].options["l_state"] == 0.5
    # `corekd report` rebuilds the same report from results.json.
    (out / "report.md").unlink()
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    assert (out / "report.md").read_text() == report


def test_data_commands(tmp_path, tiny_yaml):
    folder = tmp_path / "corpus"
    result = runner.invoke(app, ["data", "synth", "--out", str(folder), "--config", str(tiny_yaml), "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "14 dialogues" in result.output and "seed 4" in result.output
    result = runner.invoke(app, ["data", "inspect", str(folder), "--json"])
    info = json.loads(result.output)
    assert sum(s["dialogues"] for s in info["splits"].values()) == 14
    # The only problem of this tiny corpus: its one dev dialogue lacks some classes (a warning, not an error).
    absent = [n for n in info["labels"] if info["splits"]["dev"]["labels"][n] == 0]
    assert absent and len(info["problems"]) == 1
    assert "dev split" in info["problems"][0] and all(repr(n) in info["problems"][0] for n in absent)
    assert info["modalities"]["v"]["dim"] == 16
    result = runner.invoke(app, ["data", "inspect", str(folder)])
    assert result.exit_code == 0 and "problem: label" in result.output
    result = runner.invoke(app, ["data", "probe", str(folder)])
    assert result.exit_code == 0 and "l+a+v" in result.output


# ---------------------------------------------------------------------------- bad input
@pytest.fixture()
def corpus_dir(tmp_path, tiny_corpus):
    return tiny_corpus.save(tmp_path / "bad")


def _nan(t):
    t["l"][0, 0] = np.nan


BAD_CORPORA = {
    "missing file": (lambda f: (f / "features.safetensors").unlink(), "features.safetensors: file not found"),
    "dims": (
        lambda f: edit_features(f, lambda t: t.update(v=t["v"][:, :8].copy())),
        "features.safetensors: v: expected shape",
    ),
    "nan": (lambda f: edit_features(f, _nan), "features.safetensors: l: 1 non-finite values"),
    "label": (
        lambda f: edit_meta(f, lambda m: m["dialogues"][0]["utterances"][0].update(label="bored")),
        "corpus.json: dialogues[0].utterances[0].label: unknown label 'bored'",
    ),
    "empty": (
        lambda f: edit_meta(f, lambda m: m["dialogues"][3].update(utterances=[])),
        "corpus.json: dialogues[3].utterances: empty dialogue",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_bad_corpus_gives_one_line_error(case, corpus_dir):
    breaker, expected = BAD_CORPORA[case]
    breaker(corpus_dir)
    result = runner.invoke(app, ["data", "inspect", str(corpus_dir)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert str(corpus_dir) in lines[0]


def test_run_on_a_bad_corpus_and_bad_configs(tmp_path, corpus_dir, tiny_config_dict):
    edit_features(corpus_dir, _nan)
    cfg = {**tiny_config_dict, "data": {"source": "corpus", "path": str(corpus_dir)}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "non-finite" in result.output and len(result.output.strip().splitlines()) == 1

    path.write_text(yaml.safe_dump({**tiny_config_dict, "trainig": {"epochs": 1}}))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and f"{path}: trainig: unknown key" in result.output

    path.write_text(yaml.safe_dump({**tiny_config_dict, "training": {"batch_size": 0}}))
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "training.batch_size: Input should be greater than or equal to 1" in result.output

    result = runner.invoke(app, ["run", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.output

    result = runner.invoke(app, ["run", str(path), "--seeds", "one"])
    assert result.exit_code == 2 and "--seeds" in result.output


def _corekd(*args, cwd):
    exe = Path(sys.executable).with_name("corekd")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


def test_no_traceback_unless_debug(tmp_path, corpus_dir):
    edit_meta(corpus_dir, lambda m: m["dialogues"][0]["utterances"][0].update(label="bored"))
    plain = _corekd("data", "inspect", str(corpus_dir), cwd=tmp_path)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().count("\n") == 0 and "unknown label 'bored'" in plain.stderr
    debug = _corekd("data", "inspect", str(corpus_dir), "--debug", cwd=tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "CorekdError" in debug.stderr


def test_compare_refuses_bad_input_in_one_line_before_writing(tmp_path):
    grid = yaml.safe_load((ROOT / "configs" / "smoke_grid.yaml").read_text())
    grid["corpora"]["frames"]["synth"]["n_dialogues"] = 1
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "out"
    result = runner.invoke(app, ["compare", str(path), "--out", str(out)])
    assert result.exit_code == 2 and "corpora.frames" in result.output and "n_dialogues" in result.output
    assert not out.exists()
    grid["corpora"]["frames"]["synth"]["n_dialogues"] = 14
    path.write_text(yaml.safe_dump(grid))
    for args, field in (
        (["--workers", "0"], "--workers"),
        (["--backend", "slurm"], "--backend"),
        (["--address", "ray://x:1"], "--address"),
        (["--device", "tpu"], "--device"),
    ):
        result = runner.invoke(app, ["compare", str(path), "--out", str(out), *args])
        assert result.exit_code == 2 and field in result.output, (args, result.output)
        assert not out.exists()
