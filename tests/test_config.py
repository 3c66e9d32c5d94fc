"""Configuration: YAML -> typed config; every mistake names the file and the field."""

import pytest
import yaml

from corekd.config import QUICKSTART_MISSINGNESS, RunConfig, dump_config, load_config, validate_config
from corekd.errors import CorekdError
from corekd.experiments.spec import expand_study, is_study, load_grid
from helpers import ROOT


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_quickstart_config_loads_with_the_paper_defaults():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    assert cfg.seeds == [0, 1, 2]
    assert [m.name for m in cfg.methods] == ["teacher", "no_kd", "vanilla_kd", "corekd"]
    core = cfg.methods[3].options
    assert (core["l_kd"], core["l_state"], core["l_mstate"], core["l_nce"]) == (1.0, 0.5, 0.5, 1.0)
    assert core["nce_prob"] == 0.2 and core["nce_types"] == ["a", "v", "av"] and core["temperature"] == 2.0


def test_builtin_defaults_are_the_quickstart():
    """The built-in defaults plus the quickstart's missingness conditions (empty by default, so that configs without
    them keep their records) are the quickstart."""
    from_file = load_config(ROOT / "configs" / "quickstart.yaml").model_dump()
    builtin = validate_config({"name": "quickstart", "evaluation": QUICKSTART_MISSINGNESS}).model_dump()
    assert from_file == builtin


def test_resolved_config_round_trips(tmp_path):
    cfg = validate_config({"methods": [{"name": "corekd", "options": {"l_nce": 0}}]})
    again = load_config(_write(tmp_path, dump_config(cfg)))
    assert again == cfg
    assert again.methods[0].options["l_state"] == 0.5  # defaults are written out


@pytest.mark.parametrize(
    "text,field,message",
    [
        ("epochz: 3\n", "epochz", "unknown key (expected one of: name, seeds"),
        ("training:\n  lrr: 0.1\n", "training.lrr", "unknown key (expected one of: epochs"),
        ("training:\n  lr: -1\n", "training.lr", "greater than 0"),
        ("seeds: []\n", "seeds", "at least 1"),
        ("device: gpu\n", "device", "expected auto, cpu"),
        ("model:\n  dropout: 1.5\n", "model.dropout", "less than 1"),
        ("evaluation:\n  random_rates: [0.5, 1.2]\n", "evaluation.random_rates", "outside [0, 1)"),
        (
            "methods:\n  - name: corekd\n    options: {temprature: 3}\n",
            "methods[0].options.temprature",
            "unknown key (expected one of: l_kd",
        ),
        (
            "methods:\n  - name: corekd\n    options: {nce_types: [l]}\n",
            "methods[0].options.nce_types",
            "not one of a, v, av",
        ),
        ("methods:\n  - name: magic\n", "methods[0].name", "unknown method 'magic'"),
        ("methods:\n  - name: no_kd\n  - name: no_kd\n", "methods[1]", "distinct 'variant'"),
        ("methods:\n  - name: no_kd\n    variant: teacher\n", "methods[0].variant", "reserved for the teacher"),
        ("data:\n  source: corpus\n", "data", "needs a path"),
    ],
)
def test_bad_configs_name_file_field_and_expectation(tmp_path, text, field, message):
    path = _write(tmp_path, text)
    with pytest.raises(CorekdError) as info:
        load_config(path)
    text_err = str(info.value)
    assert str(path) in text_err and info.value.field == field and message in text_err
    assert "\n" not in text_err


def test_unreadable_configs(tmp_path):
    with pytest.raises(CorekdError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(CorekdError, match=r"not valid YAML \(line 3, column \d+\)"):
        load_config(_write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n"))
    with pytest.raises(CorekdError, match="expected a mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))


def test_every_config_file_in_the_repo_is_valid():
    for path in (ROOT / "configs").glob("*.yaml"):
        if is_study(yaml.safe_load(path.read_text())):  # a study: every (corpus, candidate) run config is valid
            assert all(isinstance(c, RunConfig) for c in expand_study(path).values())
            continue
        if "corpora" in yaml.safe_load(path.read_text()):  # a grid (corekd compare): every corpus's config is valid
            assert all(isinstance(c, RunConfig) for c in load_grid(path).corpora.values())
            with pytest.raises(CorekdError) as err:  # and `corekd run` says what it is
                load_config(path)
            assert err.value.field == "corpora" and "corekd compare" in err.value.detail
            continue
        assert isinstance(load_config(path), RunConfig)


def test_a_study_criterion_names_a_method_and_a_condition(tmp_path):
    base = yaml.safe_load((ROOT / "configs/backbone_study_stage2.yaml").read_text())
    for bad in (["teacher"], ["vanilla_kd complete"], ["no_kd random:1.5"], ["no_kd fixed:x"]):
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump({**base, "criterion": bad}))
        with pytest.raises(CorekdError) as err:
            expand_study(path)
        assert "study.yaml" in str(err.value)
