"""Never lose a result, never mislead: output folders, the error promise, honest reports.

Each test reproduces one defect of issue 17 with its exact input (it failed before the fix).
"""

import json
import re
import stat

import pytest
import yaml
from typer.testing import CliRunner

from corekd.cli import app
from corekd.config import load_config
from corekd.reporting.run import render_report
from helpers import edit_meta, quick_config

runner = CliRunner()


def _write(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


def _one_line_error(result, *expected):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """results.json of one quick run, shared by tests that break copies of it."""
    tmp = tmp_path_factory.mktemp("quick")
    result = runner.invoke(app, ["run", str(_write(tmp / "q.yaml", quick_config())), "--out", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    return tmp / "run" / "results.json"


@pytest.fixture()
def corpus_dir(tmp_path, tiny_corpus):
    return tiny_corpus.save(tmp_path / "corpus")


def _set_missing(folder, split, mods):
    """Mark ``mods`` missing for every utterance of ``split`` (every split when split is None)."""

    def edit(meta):
        for d in meta["dialogues"]:
            if split is None or d["split"] == split:
                for u in d["utterances"]:
                    u["missing"] = list(mods)

    edit_meta(folder, edit)


# ============================================================== the error promise
def _bad_config(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


CASES = {
    # name: (argv builder, substrings of the one error line)
    "seeds 0,0": (
        lambda t, c: ["run", str(c), "--out", str(t / "o"), "--seeds", "0,0"],
        ["--seeds", "must not repeat"],
    ),
    "device gpu": (
        lambda t, c: ["run", str(c), "--out", str(t / "o"), "--device", "gpu"],
        ["--device", "expected auto"],
    ),
    "device mps": (
        lambda t, c: ["run", str(c), "--out", str(t / "o"), "--device", "mps"],
        ["--device", "MPS is not available"],
    ),
    "hidden 16 heads 3": (
        lambda t, c: ["run", str(_bad_config(t, "model: {hidden: 16, heads: 3}\n")), "--out", str(t / "o")],
        ["bad.yaml: model:", "multiple of heads (3)"],
    ),
    "odd hidden with gru": (
        lambda t, c: ["run", str(_bad_config(t, "model: {hidden: 15, heads: 1}\n")), "--out", str(t / "o")],
        ["bad.yaml: model:", "must be even for the bidirectional GRU"],
    ),
    "synth seed -5": (
        lambda t, c: ["data", "synth", "--out", str(t / "o"), "--seed", "-5"],
        ["--seed", "greater than or equal to 0"],
    ),
    "binary config": (
        lambda t, c: ["run", str(_bad_config(t, bytes(range(256)))), "--out", str(t / "o")],
        ["bad.yaml", "not a text (UTF-8) YAML file"],
    ),
    "out is a file": (
        lambda t, c: ["run", str(c), "--out", str(_bad_config(t, "x"))],
        ["bad.yaml: --out", "this is a file"],
    ),
    "synth out is a file": (
        lambda t, c: ["data", "synth", "--out", str(_bad_config(t, "x"))],
        ["--out", "this is a file"],
    ),
    "dims l 0": (
        lambda t, c: [
            "data",
            "synth",
            "--out",
            str(t / "o"),
            "--config",
            str(
                _bad_config(
                    t,
                    "data: {synth: {dims: {l: 0}, groups: {l: [[happy, excited], [sad], [neutral], [angry, frustrated]]}, "
                    "noise: {l: 0.5}}}\n",
                )
            ),
        ],
        ["bad.yaml: data.synth", "dims.l must be a positive"],
    ),
    "nan noise": (
        lambda t, c: [
            "data",
            "synth",
            "--out",
            str(t / "o"),
            "--config",
            str(_bad_config(t, "data: {synth: {noise: {l: .nan, a: 0.5, v: 0.5}}}\n")),
        ],
        ["bad.yaml: data.synth.noise.l", "finite number"],
    ),
    "synthetic with a path": (
        lambda t, c: [
            "run",
            str(_bad_config(t, "data: {source: synthetic, path: somewhere}\n")),
            "--out",
            str(t / "o"),
        ],
        ["bad.yaml: data", "only read with source 'corpus'"],
    ),
    "variant names a folder": (
        lambda t, c: ["run", str(_bad_config(t, "methods: [{name: no_kd, variant: ../x}]\n")), "--out", str(t / "o")],
        ["bad.yaml: methods[0].variant"],
    ),
    "resume and overwrite": (
        lambda t, c: ["run", str(c), "--out", str(t / "o"), "--resume", "--overwrite"],
        ["--resume/--overwrite"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_errors_are_one_line_and_exit_2_and_write_nothing(case, tmp_path):
    config = _write(tmp_path / "quick.yaml", quick_config())
    build, expected = CASES[case]
    result = runner.invoke(app, build(tmp_path, config))
    _one_line_error(result, *expected)
    assert not (tmp_path / "o").exists()


def test_probe_with_one_train_class(tmp_path, corpus_dir):
    def one_class(meta):
        for d in meta["dialogues"]:
            if d["split"] == "train":
                for u in d["utterances"]:
                    u["label"] = "happy"

    edit_meta(corpus_dir, one_class)
    _one_line_error(
        runner.invoke(app, ["data", "probe", str(corpus_dir)]), str(corpus_dir), "train split", "at least 2"
    )


@pytest.mark.parametrize(
    "breaker, expected",
    [
        (lambda p: p.update(meta={**p["meta"], "splits": {"test": {}}}), "meta.splits.test.dialogues"),
        (lambda p: p["records"][0].pop("condition"), "records[0].condition"),
        (lambda p: p["trainings"][0].pop("dev_weighted_f1"), "trainings[0]"),
        (lambda p: p.pop("meta"), "meta: not a corekd results file (required field is missing)"),
    ],
)
def test_report_on_a_malformed_results_file(tmp_path, quick_results, breaker, expected):
    out = tmp_path / "run"
    out.mkdir()
    payload = json.loads(quick_results.read_text())
    breaker(payload)
    (out / "results.json").write_text(json.dumps(payload))
    _one_line_error(runner.invoke(app, ["report", str(out)]), "results.json", expected)
    (out / "results.json").write_bytes(b"\xff\xfe{")
    _one_line_error(runner.invoke(app, ["report", str(out)]), "results.json", "not a readable results file")


def test_help_says_a_bare_run_is_the_quickstart_and_flags_read_as_flags():
    text = runner.invoke(app, ["run", "--help"]).output
    assert "A bare `corekd run` starts the full quickstart" in " ".join(text.split())
    assert "--resume" in text and "--overwrite" in text and "<bool>" not in text
    inspect = runner.invoke(app, ["data", "inspect", "--help"]).output
    assert re.search(r"^\s+--json\s+Print", inspect, re.M) and "<bool>" not in inspect
    assert re.search(r"^\s+--debug\s+Show", runner.invoke(app, ["--help"]).output, re.M)


# ============================================================== output folders
def test_a_failing_rerun_does_not_touch_the_earlier_run(tmp_path):
    out = tmp_path / "run"
    config = _write(tmp_path / "q.yaml", quick_config())
    assert runner.invoke(app, ["run", str(config), "--out", str(out)]).exit_code == 0
    before = _files(out)
    # An invalid config, an unknown device, the same valid config without --resume/--overwrite: all refused.
    bad = _write(tmp_path / "bad.yaml", {**quick_config(), "training": {"epochs": 0}})
    _one_line_error(runner.invoke(app, ["run", str(bad), "--out", str(out)]), "training.epochs")
    _one_line_error(runner.invoke(app, ["run", str(config), "--out", str(out), "--device", "cuda:7"]), "--device")
    _one_line_error(
        runner.invoke(app, ["run", str(config), "--out", str(out)]), "earlier corekd run", "--resume", "--overwrite"
    )
    assert _files(out) == before


def test_overwrite_moves_the_earlier_run_aside(tmp_path):
    out = tmp_path / "run"
    config = _write(tmp_path / "q.yaml", quick_config())
    assert runner.invoke(app, ["run", str(config), "--out", str(out)]).exit_code == 0
    before = _files(out)
    other = _write(tmp_path / "q2.yaml", quick_config(seeds=[3]))
    result = runner.invoke(app, ["run", str(other), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0 and "moved the earlier run" in result.output
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and _files(aside[0]) == before  # every old file, byte for byte
    assert {r["seed"] for r in json.loads((out / "results.json").read_text())["records"]} == {3}


def test_a_user_folder_is_never_written_into(tmp_path):
    myexp = tmp_path / "myexp"
    myexp.mkdir()
    commented = "# my notes\n" + yaml.safe_dump(quick_config())
    (myexp / "config.yaml").write_text(commented)
    (myexp / "results.json").write_text("my own file")
    line = _one_line_error(
        runner.invoke(app, ["run", str(myexp / "config.yaml"), "--out", str(myexp)]),
        "not a corekd run",
        "nothing was written",
    )
    assert "lies inside it" in line
    assert (myexp / "config.yaml").read_text() == commented and (myexp / "results.json").read_text() == "my own file"
    assert sorted(p.name for p in myexp.iterdir()) == ["config.yaml", "results.json"]


def test_files_get_normal_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert (
            runner.invoke(app, ["run", str(_write(tmp_path / "q.yaml", quick_config())), "--out", str(out)]).exit_code
            == 0
        )
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert {"results.json", "config.yaml", "report.md", "model.safetensors", "complete.json"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


def test_results_never_shrink(tmp_path):
    from corekd.config import dump_config
    from corekd.experiments.folder import RUN, ExperimentFolder

    cfg = load_config(_write(tmp_path / "q.yaml", quick_config()))
    folder = ExperimentFolder(tmp_path / "run", RUN, "new")
    folder.open(dump_config(cfg), "corekd run q.yaml", {"": None})
    rows = [{"variant": "a", "seed": 0, "condition": "complete"}, {"variant": "b", "seed": 0, "condition": "complete"}]
    folder.write_results({"meta": {}, "records": rows})
    with pytest.raises(RuntimeError, match="refusing to drop 1 record"):
        folder.write_results({"meta": {}, "records": rows[:1]})
    assert json.loads((tmp_path / "run" / "results.json").read_text())["records"] == rows


# ============================================================== silently wrong runs
def test_a_data_path_alone_reads_that_corpus(tmp_path, corpus_dir, tiny_corpus):
    cfg = quick_config(data={"path": str(corpus_dir)})
    result = runner.invoke(app, ["run", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "run" / "config.yaml").data.source == "corpus"
    meta = json.loads((tmp_path / "run" / "results.json").read_text())["meta"]
    assert meta["splits"]["test"]["utterances"] == sum(len(d) for d in tiny_corpus.split("test"))
    assert meta["corpus"] == json.loads((corpus_dir / "corpus.json").read_text())["name"]


def test_corekd_on_a_language_only_corpus_is_refused_before_anything_is_written(tmp_path, tiny_corpus):
    from dataclasses import replace

    from corekd.data.corpus import ModalitySpec

    l_only = replace(
        tiny_corpus,
        modalities={"l": ModalitySpec(dim=12)},
        dialogues=[
            replace(d, features={"l": d.features["l"]}, available=d.available[:, :1]) for d in tiny_corpus.dialogues
        ],
    )
    folder = l_only.save(tmp_path / "l_only")
    cfg = quick_config(
        data={"source": "corpus", "path": str(folder)}, methods=[{"name": "teacher"}, {"name": "corekd"}]
    )
    result = runner.invoke(app, ["run", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(tmp_path / "run")])
    _one_line_error(result, "c.yaml: methods[1].options.nce_types", "'l'", "l_nce: 0")
    assert not (tmp_path / "run").exists()

    # Without NCE it runs; with one modality random missing drops nothing: random:p (p > 0) is n/a, not a copy of complete.
    cfg["methods"] = [{"name": "no_kd"}]
    result = runner.invoke(app, ["run", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    records = [
        r for r in json.loads((tmp_path / "run" / "results.json").read_text())["records"] if r["split"] == "test"
    ]
    by = {r["condition"]: r for r in records}
    assert set(by) == {"complete", "random:0.0", "random:0.5"}
    assert "weighted_f1" in by["random:0.0"] and "weighted_f1" in by["complete"]
    assert by["random:0.5"]["applicable"] is False and "weighted_f1" not in by["random:0.5"]
    assert "same as complete" in by["random:0.5"]["reason"]
    report = (tmp_path / "run" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| no_kd |") and "n/a" in line)
    assert row.count("n/a") == 1 and row.endswith("| n/a |")


def test_a_modality_missing_everywhere_is_not_applicable_and_leaves_the_average(tmp_path, corpus_dir):
    _set_missing(corpus_dir, None, ["v"])
    inspect = runner.invoke(app, ["data", "inspect", str(corpus_dir), "--json"])
    assert any("'v' is missing for every utterance" in p for p in json.loads(inspect.output)["problems"])
    cfg = quick_config(data={"source": "corpus", "path": str(corpus_dir)})
    result = runner.invoke(app, ["run", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and "warning: modality 'v' is missing for every utterance" in result.output
    records = [
        r for r in json.loads((tmp_path / "run" / "results.json").read_text())["records"] if r["split"] == "test"
    ]
    by = {r["condition"]: r for r in records}
    assert by["fixed:v"]["applicable"] is False and "weighted_f1" not in by["fixed:v"]
    report = (tmp_path / "run" / "report.md").read_text()
    avg = sum(by[c]["weighted_f1"] for c in ("fixed:l", "fixed:a", "fixed:la", "fixed:lv", "fixed:av")) / 5
    row = next(line for line in report.splitlines() if line.startswith("| no_kd |") and "{" not in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == "n/a" and cells[7] == f"{100 * avg:.2f}"  # {v}; Avg of the five applicable
    assert "fixed:v not applicable" in report and "## Warnings" in report


def _as_version_1(meta):
    """A format-1 corpus (version 2 refuses utterances with every modality missing): the synthetic corpus's only
    version-2 field, the ``nonverbal_conflict`` extra, is dropped."""
    meta["version"] = 1
    for d in meta["dialogues"]:
        for u in d["utterances"]:
            u.pop("extra", None)


def test_a_test_split_without_features_gives_no_numbers(tmp_path, corpus_dir):
    edit_meta(corpus_dir, _as_version_1)
    _set_missing(corpus_dir, "test", ["l", "a", "v"])
    inspect = runner.invoke(app, ["data", "inspect", str(corpus_dir)])
    assert "problems: none found" not in inspect.output and "have no modality at all" in inspect.output
    cfg = quick_config(data={"source": "corpus", "path": str(corpus_dir)})
    result = runner.invoke(app, ["run", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    records = [
        r for r in json.loads((tmp_path / "run" / "results.json").read_text())["records"] if r["split"] == "test"
    ]
    assert records and all(r["applicable"] is False for r in records)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "have no modality at all" in report and not re.search(r"\| \d+\.\d\d", report)  # no figure anywhere


def test_a_class_absent_from_train_is_warned_everywhere(tmp_path, corpus_dir):
    def drop_angry(meta):
        for d in meta["dialogues"]:
            for u in d["utterances"]:
                if d["split"] == "train" and u["label"] == "angry":
                    u["label"] = "frustrated"

    edit_meta(corpus_dir, drop_angry)
    warning = "label 'angry' never occurs in the train split"
    assert warning in runner.invoke(app, ["data", "inspect", str(corpus_dir)]).output
    cfg = quick_config(data={"source": "corpus", "path": str(corpus_dir)})
    result = runner.invoke(app, ["run", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0 and f"warning: {warning}" in result.output
    assert warning in (tmp_path / "run" / "report.md").read_text()


# ============================================================== honest reports
def _meta(seeds, methods=("m",)):
    return {
        "corpus": "c",
        "seeds": list(seeds),
        "methods": list(methods),
        "selection": "dev",
        "mask_seed": 0,
        "random_scheme": "calibrated",
        "splits": {"test": {"dialogues": 1, "utterances": 6}},
        "command": "corekd run x",
    }


def _rows(variant, seed, value, labels=("a", "b")):
    return [
        {
            "method": "no_kd",
            "variant": variant,
            "seed": seed,
            "condition": c,
            "accuracy": value,
            "weighted_f1": value,
            "macro_f1": 0,
            "uar": 0,
            "per_class_f1": {n: value for n in labels},
            "missing_rate": 0.5,
        }
        for c in ("complete", "random:0.5")
    ]


def test_an_interrupted_run_is_reported_as_partial(tmp_path):
    meta = {**_meta([0, 1, 2], ["m", "k"]), "status": "interrupted"}
    text = render_report(meta, _rows("m", 0, 0.5) + _rows("k", 0, 0.6) + _rows("m", 1, 0.7), [])
    assert "over 2 seed(s) [0, 1]" in text and "over 3 seed(s)" not in text and "`corekd run x --resume`" in text
    assert "## Partial run" in text and "Missing: k seed 1, m seed 2, k seed 2" in text
    assert "| k | 60.00 (n=1) |" in text and "| m | 60.00 ± 14.14 |" in text


def test_one_seed_shows_no_std():
    text = render_report(_meta([0]), _rows("m", 0, 0.5), [])
    assert "±" not in text.split("Re-run")[1] and "| m | 50.00 |" in text and "from one seed [0], so no std" in text


def test_markdown_cells_are_escaped():
    labels = ("a|b", "line\nbreak")
    text = render_report(
        {**_meta([0, 1]), "corpus": "x|y"}, _rows("m", 0, 0.5, labels) + _rows("m", 1, 0.6, labels), []
    )
    table = [line for line in text.splitlines() if line.startswith("| method |") and "a" in line and "break" in line]
    assert table == ["| method | a\\|b | line break |"]
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 3
    for table in tables:  # every row has as many cells as its header: no stray column from a label
        counts = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
        assert len(counts) == 1, table
    assert "# Results: x\\|y" in text
