"""Ablation tables (paired differences over seeds) in report.md, and the sweep section of run configs."""

from __future__ import annotations

import json

import pytest
import yaml

from corekd.config import load_config, validate_config
from corekd.errors import CorekdError
from corekd.experiments import run
from corekd.experiments.sweep import rebuild
from corekd.progress import Reporter
from helpers import quick_config


@pytest.mark.parametrize(
    "sweep, field, words",
    [
        ({"option": "data.synth.nope", "values": [0.1]}, "sweep.option", "'nope' is not a field"),
        ({"option": "data.source", "values": [0.1]}, "sweep.option", "not a numeric setting"),
        ({"option": "data.synth.conflict_rate.x", "values": [0.1]}, "sweep.option", "not a section"),
        ({"option": "data.synth.conflict_rate", "values": []}, "sweep.values", ""),
        ({"option": "data.synth.conflict_rate", "values": [0.1, 0.1]}, "sweep.values", "repeat"),
        (
            {"option": "data.synth.conflict_rate", "values": [0.1, 2.0]},
            "sweep.values[1]",
            "value 2.0 gives an invalid run",
        ),
        ({"option": "training.epochs", "values": [2, 1.5]}, "sweep.values[1]", "1.5 is not an integer"),
    ],
)
def test_sweep_validation_errors(sweep, field, words):
    with pytest.raises(CorekdError) as err:
        validate_config(quick_config(sweep=sweep), "cfg.yaml")
    assert err.value.field == field
    assert words in err.value.detail


def test_configs_validate():
    ablations = load_config("configs/ablations.yaml")
    assert ablations.seeds == [0, 1, 2, 3, 4]
    labels = [m.label for m in ablations.methods]
    assert labels == [
        "teacher",
        "corekd",
        "wo_kd",
        "wo_state",
        "wo_mstate",
        "wo_csa",
        "wo_nce",
        "nce_a",
        "nce_v",
        "nce_av",
        "nce_avg_targets",
    ]
    quick = load_config("configs/quickstart.yaml")
    full = next(m for m in quick.methods if m.name == "corekd").options
    by_label = {m.label: m.options for m in ablations.methods}
    assert by_label["corekd"] == full
    changed = {v: {k for k in full if by_label[v][k] != full[k]} for v in labels[2:]}
    assert changed == {
        "wo_kd": {"l_kd"},
        "wo_state": {"l_state"},
        "wo_mstate": {"l_mstate"},
        "wo_csa": {"l_kd", "l_state", "l_mstate"},
        "wo_nce": {"l_nce"},
        "nce_a": {"nce_types"},
        "nce_v": {"nce_types"},
        "nce_av": {"nce_types"},
        "nce_avg_targets": {"nce_average"},
    }
    assert by_label["nce_av"]["nce_types"] == ["av"]
    sweep = load_config("configs/conflict_sweep.yaml")
    assert sweep.sweep.option == "data.synth.conflict_rate" and sweep.sweep.values == [0.0, 0.1, 0.3, 0.5]
    assert len(sweep.seeds) == 3
    assert [m.label for m in sweep.methods] == ["teacher", "no_kd", "vanilla_kd", "corekd"]


def test_tiny_sweep_end_to_end(tmp_path):
    cfg = quick_config(
        methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}],
        evaluation={"batch_size": 8, "random_rates": [0.5]},
        sweep={"option": "data.synth.conflict_rate", "values": [0.0, 0.3]},
    )
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    messages: list[str] = []

    class Collect(Reporter):
        def message(self, text: str) -> None:
            messages.append(text)

    result = run(path, out, reporter=Collect())
    assert result.report == out / "sweep.md"
    assert any(m.startswith("sweep data.synth.conflict_rate = 0.3 (2/2)") for m in messages)
    for name, rate in (("conflict_rate=0.0", 0.0), ("conflict_rate=0.3", 0.3)):
        sub = out / name
        assert (sub / "results.json").is_file() and (sub / "report.md").is_file()
        sub_cfg = yaml.safe_load((sub / "config.yaml").read_text())
        assert sub_cfg["data"]["synth"]["conflict_rate"] == rate and "sweep" not in sub_cfg
    payload = json.loads((out / "sweep.json").read_text())
    assert payload["format"] == "corekd-sweep" and payload["values"] == [0.0, 0.3]
    first = payload["runs"][0]
    # the sub-runs' own analyses.json (evaluation.analyses, on by default) feed the rejection table
    assert first["status"] == "complete" and set(first["rejection"]["corekd"]) == {"a", "v", "av"}
    assert first["rejection"]["corekd"]["a"]["n"] == 1 and 0.0 <= first["rejection"]["corekd"]["a"]["rate"] <= 1.0
    assert set(first["differences"]["corekd"]) == {"fixed:avg", "random:0.5"}
    assert first["differences"]["corekd"]["fixed:avg"]["n"] == 1
    text = (out / "sweep.md").read_text()
    assert "| conflict_rate | corekd − no_kd, fixed Avg | corekd − no_kd, random 0.5 |" in text
    assert (
        text.count("| 0.0 | ") == 1 + 3 and text.count("| 0.3 | ") == 1 + 3
    )  # a difference row; teacher, no_kd, corekd
    assert "| not computed |" not in text

    # an existing sweep folder is refused like a run folder
    with pytest.raises(CorekdError, match="--resume"):
        run(path, out, reporter=Reporter())
    # rejection rates from an analyses.json of one sub-run (none for the other), then `corekd report` rebuilds sweep.md
    (out / "conflict_rate=0.0" / "analyses.json").unlink()
    (out / "conflict_rate=0.3" / "analyses.json").write_text(
        json.dumps(
            {
                "format": "corekd-analyses",
                "version": 1,
                "rejection": [
                    {"variant": "corekd", "method": "corekd", "seed": 0, "type": "a", "rate": 0.6, "pairs": 10},
                    {"variant": "corekd", "method": "corekd", "seed": 1, "type": "a", "rate": 0.4, "pairs": 12},
                ],
            }
        )
    )
    rebuild(out)
    text = (out / "sweep.md").read_text()
    assert "| 0.3 | corekd | 50.0 (n=2) | – | – |" in text
    assert "| 0.0 | – | not computed | not computed | not computed |" in text
    # resume: every sub-run is finished, nothing is trained again
    again = run(path, out, reporter=Reporter(), resume=True)
    assert again.report == out / "sweep.md"
    # and a finished sweep resumed again changes nothing at all
    before = {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file() and p.name != ".corekd.lock"
    }
    messages.clear()
    third = run(path, out, reporter=Collect(), resume=True)
    assert not third.changed and any("complete: nothing to do" in m for m in messages)
    assert {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file() and p.name != ".corekd.lock"
    } == before


def test_refused_sweep_leaves_no_trace(tmp_path):
    cfg = quick_config(
        data={"source": "corpus", "path": str(tmp_path / "no-corpus")},
        sweep={"option": "training.lr", "values": [0.001, 0.01]},
    )
    out = tmp_path / "out"
    with pytest.raises(CorekdError):
        run(validate_config(cfg), out, reporter=Reporter())
    assert not out.exists()
    out.mkdir()  # an empty folder given by the user stays, empty
    with pytest.raises(CorekdError):
        run(validate_config(cfg), out, reporter=Reporter())
    assert out.is_dir() and not any(out.iterdir())
