"""``corekd tune``: a tiny budget end to end from the CLI, tuned.yaml runs, kill and resume, malformed search spaces
refused in one line, the test split never read, the seeded sampler, and the per-method overrides it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import corekd.experiments.setup as run_setup
import corekd.experiments.tune as tune_module
from corekd.cli import app
from corekd.config import MethodSpec, dump_config, load_config, validate_config
from corekd.errors import CorekdError
from corekd.experiments import compare as compare_grid
from corekd.experiments import run as run_experiment
from corekd.experiments.tune import (
    SHARED_SPACE,
    SealedSplit,
    TuneInterrupted,
    apply_params,
    fixed_options,
    method_space,
    tune,
)
from corekd.methods import registered
from corekd.methods.base import spec_problem
from helpers import quick_config

runner = CliRunner()


def tiny_tune_config(**extra) -> dict:
    cfg = quick_config(
        training={"epochs": 2, "patience": 1, "batch_size": 4},
        evaluation={"batch_size": 8, "random_rates": [0.0, 0.5], "figures": False, "analyses": False},
        methods=[{"name": "teacher"}, {"name": "vanilla_kd"}],
    )
    cfg.update(extra)
    return cfg


def write(tmp_path, cfg: dict, name: str = "tune.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def trial_rows(payload: dict) -> dict[str, list[dict]]:
    return {label: m["trials"] for label, m in payload["methods"].items()}


# ------------------------------------------------------------------ end to end
def test_cli_tiny_budget_writes_the_three_files_and_tuned_yaml_runs(tmp_path):
    cfg_path = write(tmp_path, tiny_tune_config())
    out = tmp_path / "tuned"
    result = runner.invoke(app, ["tune", str(cfg_path), "--out", str(out), "--trials", "2"])
    assert result.exit_code == 0, result.output
    for name in ("tuning.json", "tuning.md", "tuning.html", "tuned.yaml", "optuna.db"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "tuning.json").read_text())
    assert payload["budget"] == 2 and payload["metric"] == "weighted_f1" and payload["seeds"] == [0]
    for label, rows in trial_rows(payload).items():
        assert [r["number"] for r in rows] == [0, 1], label
        for r in rows:
            assert r["state"] == "complete" and isinstance(r["dev_score"], float) and r["seconds"] >= 0
            assert set(r["params"]) >= {"training.lr", "model.dropout"}
    assert set(payload["methods"]["vanilla_kd"]["trials"][0]["params"]) == {
        "training.lr",
        "model.dropout",
        "l_kd",
        "temperature",
    }
    report = (out / "tuning.md").read_text()
    assert "2 trials" in report and "vanilla_kd" in report and "median" in report

    tuned = load_config(out / "tuned.yaml")  # the config loader accepts it as written
    best_t = payload["methods"]["teacher"]["best"]["params"]
    best_s = payload["methods"]["vanilla_kd"]["best"]["params"]
    assert tuned.teacher.lr == best_t["training.lr"] and tuned.teacher.dropout == best_t["model.dropout"]
    student = tuned.methods[1]
    assert student.options["l_kd"] == best_s["l_kd"] and student.options["temperature"] == best_s["temperature"]
    assert tuned.training_for("vanilla_kd", "vanilla_kd").lr == best_s["training.lr"]
    assert tuned.model_for("vanilla_kd", "vanilla_kd").dropout == best_s["model.dropout"]
    assert tuned.training.lr == 1e-3  # the shared setting is untouched
    ran = run_experiment(out / "tuned.yaml", tmp_path / "run")
    assert {r["variant"] for r in ran.records} == {"teacher", "vanilla_kd"}


def test_a_grid_is_tuned_on_its_first_corpus_and_tuned_yaml_stays_a_grid(tmp_path):
    cfg = tiny_tune_config(methods=[{"name": "no_kd"}], corpora={"one": {}, "two": {"synth": {"seed": 1}}})
    cfg_path = write(tmp_path, cfg)
    result = tune(cfg_path, tmp_path / "g", trials=1)
    assert result.payload["tuned_on"] == "one" and result.payload["grid"] is True
    raw = yaml.safe_load(result.tuned.read_text())
    assert set(raw["corpora"]) == {"one", "two"}
    assert raw["methods"][0]["training"]["lr"] == result.payload["methods"]["no_kd"]["best"]["params"]["training.lr"]
    grid = compare_grid(result.tuned, tmp_path / "cmp", report=False)  # `corekd compare` takes it as written
    assert grid.cells == 2 and grid.ran == 2 and not grid.failed


# ------------------------------------------------------------------ kill and resume
def test_killed_mid_trial_then_resumed_runs_exactly_the_budget(tmp_path, monkeypatch):
    cfg_path = write(tmp_path, tiny_tune_config(methods=[{"name": "no_kd"}]))
    out = tmp_path / "t"
    real, calls = tune_module.train_unit, []

    def dies_on_the_second_trial(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as SIGTERM arrives inside `corekd tune` (the CLI turns it into this)
        return real(*args, **kwargs)

    monkeypatch.setattr(tune_module, "train_unit", dies_on_the_second_trial)
    result = runner.invoke(app, ["tune", str(cfg_path), "--out", str(out), "--trials", "3"])
    assert result.exit_code == 130, result.output
    assert "1 of 3 trials finished" in result.output and "--resume" in result.output
    assert not (out / "tuning.json").exists()

    refused = runner.invoke(app, ["tune", str(cfg_path), "--out", str(out), "--trials", "3"])
    assert refused.exit_code == 2 and "--resume" in refused.output and len(refused.output.strip().splitlines()) == 1

    monkeypatch.setattr(tune_module, "train_unit", real)
    resumed = runner.invoke(app, ["tune", str(cfg_path), "--out", str(out), "--trials", "3", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    rows = json.loads((out / "tuning.json").read_text())["methods"]["no_kd"]["trials"]
    counted = [r for r in rows if not r.get("interrupted")]
    assert len(counted) == 3 and all(r["state"] == "complete" for r in counted)  # the budget, not more
    assert [r["number"] for r in rows if r.get("interrupted")] == [1]  # the trial cut off mid-way, marked failed
    assert [r["state"] for r in rows if r.get("interrupted")] == ["fail"]
    again = runner.invoke(app, ["tune", str(cfg_path), "--out", str(out), "--trials", "3", "--resume"])
    assert again.exit_code == 0 and "no_kd trial" not in again.output  # nothing left to run
    assert len(json.loads((out / "tuning.json").read_text())["methods"]["no_kd"]["trials"]) == 4


def test_resume_gives_the_same_trials_as_an_uninterrupted_tuning(tmp_path):
    cfg_path = write(tmp_path, tiny_tune_config(methods=[{"name": "no_kd"}]))

    def stop_at_second(label, number):
        if number == 1:
            raise KeyboardInterrupt

    with pytest.raises(TuneInterrupted):
        tune(cfg_path, tmp_path / "a", trials=3, before_trial=stop_at_second)
    resumed = tune(cfg_path, tmp_path / "a", trials=3, resume=True).payload
    whole = tune(cfg_path, tmp_path / "b", trials=3).payload
    strip = [{k: r[k] for k in ("number", "params", "dev_score")} for r in resumed["methods"]["no_kd"]["trials"]]
    assert strip == [{k: r[k] for k in ("number", "params", "dev_score")} for r in whole["methods"]["no_kd"]["trials"]]


def test_resume_refuses_another_config(tmp_path):
    cfg_path = write(tmp_path, tiny_tune_config(methods=[{"name": "no_kd"}]))
    tune(cfg_path, tmp_path / "t", trials=1)
    other = write(tmp_path, tiny_tune_config(methods=[{"name": "no_kd"}], seeds=[5]), "other.yaml")
    with pytest.raises(CorekdError, match="another config"):
        tune(other, tmp_path / "t", trials=1, resume=True)


# ------------------------------------------------------------------ malformed search spaces: one line, exit 2
@pytest.mark.parametrize(
    "search, field, words",
    [
        ({"no_kd": {"l_kd": {"float": [0.1, 1]}}}, "tune.search.no_kd.l_kd", "not an option"),
        ({"vanilla_kd": {"l_kd": {"float": [2.0, 1.0]}}}, "tune.search.vanilla_kd.l_kd", "low 2.0 > high 1.0"),
        ({"vanilla_kd": {"temperature": {"choice": []}}}, "tune.search.vanilla_kd.temperature", "non-empty"),
        ({"vanilla_kd": {"l_kd": {"uniform": [0, 1]}}}, "tune.search.vanilla_kd.l_kd", "exactly one of"),
        ({"corekd": {"l_kd": {"float": [0, 1]}}}, "tune.search.corekd", "not a method of this config"),
        ({"vanilla_kd": {"temperature": {"float": [0.0, 1.0]}}}, "tune.search.vanilla_kd.temperature", "not allowed"),
        ({"vanilla_kd": {"training.lr": {"float": [0, 1e-3], "log": True}}}, "training.lr", "log range needs low"),
    ],
)
def test_a_malformed_search_space_is_refused_in_one_line(tmp_path, search, field, words):
    cfg = tiny_tune_config(methods=[{"name": "no_kd"}, {"name": "vanilla_kd"}], tune={"search": search})
    out = tmp_path / "t"
    result = runner.invoke(app, ["tune", str(write(tmp_path, cfg)), "--out", str(out), "--trials", "1"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and words in lines[0], lines
    assert not out.exists()  # refused before anything is written


def test_spec_problem_by_hand():
    assert spec_problem({"float": [0.1, 1.0], "log": True}) is None
    assert spec_problem({"int": [1, 4]}) is None
    assert spec_problem({"choice": [["a"], ["a", "v"]]}) is None
    assert spec_problem({"int": [1.5, 4]}) == "int: expected [low, high] (integers), got [1.5, 4]"
    assert spec_problem({"float": [1, 0]}) == "float: low 1 > high 0"
    assert spec_problem({"choice": [1], "log": True}) == "log applies to float and int ranges, not to a choice"
    assert spec_problem({"float": [0, 1], "log": "yes"}) == "log: expected true or false, got 'yes'"
    assert spec_problem([0, 1]) == "expected a mapping like {float: [low, high]}, got list"


# ------------------------------------------------------------------ dev only
def test_the_test_split_is_never_read(tmp_path, monkeypatch):
    cfg_path = write(tmp_path, tiny_tune_config())
    clean = tune(cfg_path, tmp_path / "clean", trials=2).payload
    real = run_setup.load_data

    def scrambled_test(cfg, source=None):
        corpus = real(cfg, source)
        rng = np.random.default_rng(7)
        for d in corpus.dialogues:
            if d.split == "test":
                d.features = {m: rng.normal(size=x.shape).astype(np.float32) * 50 for m, x in d.features.items()}
                d.labels = np.zeros_like(d.labels)
        return corpus

    monkeypatch.setattr(run_setup, "load_data", scrambled_test)
    scrambled = tune(cfg_path, tmp_path / "scrambled", trials=2).payload
    assert trial_rows(scrambled) != {} and [
        [(r["params"], r["dev_score"]) for r in rows] for rows in trial_rows(scrambled).values()
    ] == [[(r["params"], r["dev_score"]) for r in rows] for rows in trial_rows(clean).values()]


def test_the_sealed_test_split_raises_on_any_use():
    with pytest.raises(CorekdError, match="never reads the test split"):
        SealedSplit().avail  # noqa: B018


# ------------------------------------------------------------------ the seeded sampler
def test_the_same_sampler_seed_gives_the_same_params_and_another_seed_others(tmp_path):
    def params(seed: int, name: str) -> list[dict]:
        cfg_path = write(tmp_path, tiny_tune_config(methods=[{"name": "no_kd"}], tune={"seed": seed}), f"{name}.yaml")
        payload = tune(cfg_path, tmp_path / name, trials=2).payload
        return [r["params"] for r in payload["methods"]["no_kd"]["trials"]]

    first = params(3, "a")
    assert first == params(3, "b")
    assert first != params(4, "c")


# ------------------------------------------------------------------ spaces, variants, overrides
def test_every_method_space_is_well_formed_and_names_its_own_options():
    methods = ["teacher", *(n for n in registered() if n != "teacher")]
    assert {"no_kd", "vanilla_kd", "corekd", "corrkd", "contrastive_view", "decoupled", "reconstruction"} <= set(
        methods
    )
    cfg = validate_config({"methods": [{"name": n} for n in methods]})
    order = tune_module.check_search(cfg, tune_module.tune_settings(cfg, None))
    assert [s.label for s in order] == methods
    for spec in order:
        space = method_space(cfg, spec, tune_module.tune_settings(cfg, None))
        own = {k for k in space if k not in SHARED_SPACE}
        assert 0 <= len(own) <= 5, spec.name
        assert set(SHARED_SPACE) <= set(space)


def test_a_variant_keeps_the_options_that_define_it():
    cfg = validate_config(
        {
            "methods": [
                {"name": "corekd"},
                {"name": "corekd", "variant": "wo_kd", "options": {"l_kd": 0}},
                {"name": "vanilla_kd", "variant": "hot", "options": {"temperature": 4.0}},
            ]
        }
    )
    assert fixed_options(cfg, cfg.methods[0]) == []
    assert fixed_options(cfg, cfg.methods[1]) == ["l_kd"]
    assert fixed_options(cfg, cfg.methods[2]) == ["temperature"]  # against the defaults: no plain vanilla_kd
    settings = tune_module.tune_settings(cfg, None)
    assert "l_kd" not in method_space(cfg, cfg.methods[1], settings)
    assert "l_kd" in method_space(cfg, cfg.methods[0], settings)


def test_apply_params_changes_one_method_only():
    raw = yaml.safe_load(dump_config(validate_config({"methods": [{"name": "teacher"}, {"name": "vanilla_kd"}]})))
    spec = MethodSpec(name="vanilla_kd")
    out = apply_params(raw, spec, {"training.lr": 0.002, "model.dropout": 0.3, "l_kd": 2.0})
    assert out["methods"][1]["options"]["l_kd"] == 2.0 and out["methods"][1]["training"] == {"lr": 0.002}
    assert out["methods"][1]["model"] == {"dropout": 0.3} and out["training"]["lr"] == raw["training"]["lr"]
    teacher = apply_params(raw, MethodSpec(name="teacher"), {"training.lr": 0.002, "model.dropout": 0.1})
    assert teacher["teacher"]["lr"] == 0.002 and teacher["teacher"]["dropout"] == 0.1
    assert teacher["methods"] == raw["methods"]


def test_a_config_without_overrides_dumps_as_before():
    text = dump_config(validate_config({"methods": [{"name": "no_kd"}]}))
    assert "tune" not in yaml.safe_load(text)
    assert yaml.safe_load(text)["methods"] == [{"name": "no_kd", "variant": None, "options": {}}]


def test_the_teacher_takes_its_overrides_in_its_own_section():
    with pytest.raises(CorekdError, match="teacher"):
        validate_config({"methods": [{"name": "teacher", "training": {"lr": 0.01}}]})


def test_a_corpus_that_cannot_load_leaves_no_folder(tmp_path):
    cfg = tiny_tune_config(methods=[{"name": "no_kd"}], data={"path": str(tmp_path / "missing")})
    out = tmp_path / "t"
    result = runner.invoke(app, ["tune", str(write(tmp_path, cfg)), "--out", str(out), "--trials", "1"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert not out.exists()


def test_a_trial_that_asks_for_a_teacher_gets_one_even_when_the_config_needs_none(tmp_path):
    search = {"decoupled": {"l_kd": {"choice": [0.5]}}}  # every trial distils; the config's decoupled does not
    cfg = tiny_tune_config(methods=[{"name": "decoupled"}], tune={"search": search})
    payload = tune(write(tmp_path, cfg), tmp_path / "t", trials=1).payload
    assert list(payload["methods"]) == ["decoupled"]
    [row] = payload["methods"]["decoupled"]["trials"]
    assert row["state"] == "complete" and row["params"]["l_kd"] == 0.5


def test_a_method_may_carry_any_model_setting_of_its_own():
    cfg = validate_config(
        {"methods": [{"name": "no_kd"}, {"name": "no_kd", "variant": "flat", "model": {"context": "none"}}]}
    )
    assert cfg.model_for("no_kd", "flat").context == "none" and cfg.model_for("no_kd", "no_kd").context == "gru"
    assert cfg.model_for("no_kd", "flat").hidden == cfg.model.hidden  # the rest is shared
    with pytest.raises(CorekdError, match="unknown model setting") as unknown:
        validate_config({"methods": [{"name": "no_kd", "model": {"contxt": "none"}}]})
    assert unknown.value.field == "methods[0].model"
    with pytest.raises(CorekdError) as bad:
        validate_config({"methods": [{"name": "no_kd", "model": {"dropout": 1.5}}]})
    assert bad.value.field == "methods[0].model.dropout"


def test_the_first_trial_of_every_method_is_the_config_s_own_settings(tmp_path):
    cfg = tiny_tune_config(
        training={"epochs": 2, "patience": 1, "batch_size": 4, "lr": 0.002},
        methods=[{"name": "teacher"}, {"name": "vanilla_kd", "options": {"l_kd": 0.5, "temperature": 3.0}}],
    )
    payload = tune(write(tmp_path, cfg), tmp_path / "out", trials=2).payload
    first = {label: rows[0]["params"] for label, rows in trial_rows(payload).items()}
    assert first["vanilla_kd"] == {"training.lr": 0.002, "model.dropout": 0.2, "l_kd": 0.5, "temperature": 3.0}
    assert first["teacher"]["training.lr"] == 0.002
    assert all(rows[1]["params"] != first[label] for label, rows in trial_rows(payload).items())


def test_starting_params_take_a_choice_by_index_and_leave_out_what_the_space_cannot_hold():
    cfg = validate_config(
        tiny_tune_config(
            training={"lr": 0.01}, methods=[{"name": "reconstruction", "options": {"rec_over": "missing"}}]
        )
    )
    spec = cfg.methods[0]
    space = {
        "training.lr": {"float": [1e-4, 3e-3], "log": True},  # 0.01 is outside: drawn instead
        "model.dropout": {"float": [0.0, 0.5]},
        "rec_over": {"choice": ["all", "missing"]},
    }
    assert tune_module.starting_params(cfg, spec, space) == {"model.dropout": cfg.model.dropout, "rec_over": 1}


def test_options_that_cannot_act_are_not_searched():
    """DMD alone (decoupled with l_dict 0) has no dictionaries: their size and temperature are left out of its space."""
    cfg = validate_config(
        tiny_tune_config(
            methods=[{"name": "decoupled"}, {"name": "decoupled", "variant": "dmd", "options": {"l_dict": 0}}]
        )
    )
    full, dmd = (method_space(cfg, spec, cfg.tune or tune_module.TuneConfig()) for spec in cfg.methods)
    assert {"dict_size", "dict_temperature", "l_dict"} <= set(full)
    assert not {"dict_size", "dict_temperature", "l_dict"} & set(dmd) and {"l_graph", "l_rec"} <= set(dmd)
