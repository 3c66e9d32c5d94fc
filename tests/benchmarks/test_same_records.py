"""benchmarks/same_records.py: two folders of the same run are the same; a changed record or weight is found."""

import json
import shutil
import sys

from corekd.config import validate_config
from corekd.experiments import run
from helpers import ROOT, quick_config

sys.path.insert(0, str(ROOT / "benchmarks"))

import same_records  # noqa: E402


def test_same_run_twice_is_the_same_and_a_change_is_found(tmp_path, capsys):
    cfg = validate_config(quick_config(methods=[{"name": "teacher"}, {"name": "no_kd"}]))
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    assert same_records.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0  # other seconds, same numbers

    shutil.copytree(tmp_path / "b", tmp_path / "c")
    results = json.loads((tmp_path / "c" / "results.json").read_text())
    results["records"][0]["weighted_f1"] += 1e-9
    (tmp_path / "c" / "results.json").write_text(json.dumps(results))
    weights = tmp_path / "c" / "checkpoints" / "no_kd" / "seed0" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert same_records.main([str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    out = capsys.readouterr().out
    assert "results.json: records differ" in out and "no_kd/seed0/model.safetensors: weights differ" in out
