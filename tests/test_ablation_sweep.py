"""Ablation tables (paired differences over seeds) in report.md, and the sweep section of run configs."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from helpers import quick_config
from scipy import stats

from corekd.config import load_config, validate_config
from corekd.errors import CorekdError
from corekd.pipeline import run
from corekd.progress import Reporter
from corekd.reporting.run import render_report
from corekd.reporting.stats import (
    PairedDifference,
    format_difference,
    paired_difference,
)
from corekd.reporting.tables import records_frame
from corekd.sweep import rebuild


def test_paired_difference_by_hand():
    # candidate - reference per seed: 0.02, 0.04, 0.06 -> mean 0.04, sample std 0.02 (ddof=1)
    cand = {0: 0.52, 1: 0.54, 2: 0.56, 7: 0.9}  # seed 7 has no partner: left out
    ref = {0: 0.50, 1: 0.50, 2: 0.50}
    d = paired_difference(cand, ref)
    assert d.n == 3
    assert d.mean == pytest.approx(0.04)
    assert d.std == pytest.approx(0.02)
    # t = 0.04 / (0.02 / sqrt 3) = 2 sqrt 3, two-sided with 2 degrees of freedom
    assert d.p == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2))
    assert d.p == pytest.approx(stats.ttest_rel([0.52, 0.54, 0.56], [0.5, 0.5, 0.5]).pvalue)
    assert format_difference(d, "weighted_f1") == f"+4.00 ± 2.00 (n=3, p={d.p:.3g})"


def test_paired_difference_one_seed_and_none():
    d = paired_difference({0: 0.4}, {0: 0.5})
    assert d == PairedDifference(pytest.approx(-0.1), None, 1, None)
    assert format_difference(d, "weighted_f1") == "-10.00 (n=1, p=n/a)"
    assert format_difference(paired_difference({0: 1.2, 1: 1.0}, {0: 1.0, 1: 1.1}), "mae").startswith("+0.050 ± 0.212 (n=2, p=")
    assert paired_difference({0: 0.4}, {1: 0.5}) is None
    assert format_difference(None, "weighted_f1") == "–"


def _records(variants: dict[str, list[float]], split: str = "test") -> list[dict]:
    """One complete-view record per (variant, seed); the value list gives weighted F1 per seed."""
    return [
        {"method": "teacher" if v == "teacher" else "corekd", "variant": v, "seed": s, "split": split,
         "condition": "complete", "weighted_f1": x, "accuracy": x, "missing_rate": 0.0, "n_utterances": 10,
         "per_class_f1": {"a": x}}
        for v, xs in variants.items() for s, x in enumerate(xs)
    ]


META = {"corpus": "c", "seeds": [0, 1, 2], "mask_seed": 0, "random_scheme": "calibrated", "status": "complete"}


def test_ablation_section_present_with_variants():
    records = _records({"teacher": [0.7, 0.7, 0.7], "corekd": [0.5, 0.5, 0.5], "wo_nce": [0.52, 0.54, 0.56]})
    records += _records({"corekd": [0.4, 0.4, 0.4], "wo_nce": [0.4, 0.3, 0.2]}, split="dev")
    text = render_report({**META, "methods": ["teacher", "corekd", "wo_nce"]}, records, [])
    assert "## Ablations" in text
    test_part = text.split("### Test split")[1].split("### Dev split")[0]
    p = stats.ttest_rel([0.52, 0.54, 0.56], [0.5, 0.5, 0.5]).pvalue
    assert f"| wo_nce | +4.00 ± 2.00 (n=3, p={p:.3g}) |" in test_part
    dev_part = text.split("### Dev split")[1]
    assert "| wo_nce | -10.00 ± 10.00 (n=3, p=" in dev_part


def test_ablation_section_absent_without_variants_or_reference():
    plain = _records({"teacher": [0.7, 0.7], "corekd": [0.5, 0.6]})
    base = render_report({**META, "seeds": [0, 1]}, plain, [])
    assert "Ablations" not in base
    # variants without the reference `corekd`: no table either
    no_ref = _records({"teacher": [0.7, 0.7], "wo_nce": [0.5, 0.6]})
    assert "Ablations" not in render_report({**META, "seeds": [0, 1]}, no_ref, [])
    assert records_frame(plain).shape[0] == 4


@pytest.mark.parametrize("sweep, field, words", [
    ({"option": "data.synth.nope", "values": [0.1]}, "sweep.option", "'nope' is not a field"),
    ({"option": "data.source", "values": [0.1]}, "sweep.option", "not a numeric setting"),
    ({"option": "data.synth.conflict_rate.x", "values": [0.1]}, "sweep.option", "not a section"),
    ({"option": "data.synth.conflict_rate", "values": []}, "sweep.values", ""),
    ({"option": "data.synth.conflict_rate", "values": [0.1, 0.1]}, "sweep.values", "repeat"),
    ({"option": "data.synth.conflict_rate", "values": [0.1, 2.0]}, "sweep.values[1]", "value 2.0 gives an invalid run"),
    ({"option": "training.epochs", "values": [2, 1.5]}, "sweep.values[1]", "1.5 is not an integer"),
])
def test_sweep_validation_errors(sweep, field, words):
    with pytest.raises(CorekdError) as err:
        validate_config(quick_config(sweep=sweep), "cfg.yaml")
    assert err.value.field == field
    assert words in err.value.detail


def test_configs_validate():
    ablations = load_config("configs/ablations.yaml")
    assert ablations.seeds == [0, 1, 2, 3, 4]
    labels = [m.label for m in ablations.methods]
    assert labels == ["teacher", "corekd", "wo_kd", "wo_state", "wo_mstate", "wo_csa", "wo_nce", "nce_a", "nce_v", "nce_av",
                      "nce_avg_targets"]
    quick = load_config("configs/quickstart.yaml")
    full = next(m for m in quick.methods if m.name == "corekd").options
    by_label = {m.label: m.options for m in ablations.methods}
    assert by_label["corekd"] == full
    changed = {v: {k for k in full if by_label[v][k] != full[k]} for v in labels[2:]}
    assert changed == {"wo_kd": {"l_kd"}, "wo_state": {"l_state"}, "wo_mstate": {"l_mstate"},
                       "wo_csa": {"l_kd", "l_state", "l_mstate"}, "wo_nce": {"l_nce"}, "nce_a": {"nce_types"},
                       "nce_v": {"nce_types"}, "nce_av": {"nce_types"}, "nce_avg_targets": {"nce_average"}}
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
    assert text.count("| 0.0 | ") == 1 + 3 and text.count("| 0.3 | ") == 1 + 3  # a difference row; teacher, no_kd, corekd
    assert "| not computed |" not in text

    # an existing sweep folder is refused like a run folder
    with pytest.raises(CorekdError, match="--resume"):
        run(path, out, reporter=Reporter())
    # rejection rates from an analyses.json of one sub-run (none for the other), then `corekd report` rebuilds sweep.md
    (out / "conflict_rate=0.0" / "analyses.json").unlink()
    (out / "conflict_rate=0.3" / "analyses.json").write_text(json.dumps({"format": "corekd-analyses", "version": 1, "rejection": [
        {"variant": "corekd", "method": "corekd", "seed": 0, "type": "a", "rate": 0.6, "pairs": 10},
        {"variant": "corekd", "method": "corekd", "seed": 1, "type": "a", "rate": 0.4, "pairs": 12},
    ]}))
    rebuild(out)
    text = (out / "sweep.md").read_text()
    assert "| 0.3 | corekd | 50.0 (n=2) | – | – |" in text
    assert "| 0.0 | – | not computed | not computed | not computed |" in text
    # resume: every sub-run is finished, nothing is trained again
    again = run(path, out, reporter=Reporter(), resume=True)
    assert again.report == out / "sweep.md"


def test_refused_sweep_leaves_no_trace(tmp_path):
    cfg = quick_config(data={"source": "corpus", "path": str(tmp_path / "no-corpus")},
                       sweep={"option": "training.lr", "values": [0.001, 0.01]})
    out = tmp_path / "out"
    with pytest.raises(CorekdError):
        run(validate_config(cfg), out, reporter=Reporter())
    assert not out.exists()
    out.mkdir()  # an empty folder given by the user stays, empty
    with pytest.raises(CorekdError):
        run(validate_config(cfg), out, reporter=Reporter())
    assert out.is_dir() and not any(out.iterdir())
