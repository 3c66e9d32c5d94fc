"""benchmarks/backbone_study.py: the per-seed training time, the criterion, and --dev-only keeping test figures out."""

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import backbone_study  # noqa: E402

FIXED = ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]


def _records(split: str, base: float) -> list[dict]:
    out = []
    for variant in ("teacher", "no_kd"):
        for seed in (0, 1):
            for k, cond in enumerate(["complete", *FIXED]):
                f1 = base + (0.1 if variant == "teacher" else 0.0) + 0.01 * seed - 0.01 * k
                out.append(
                    {
                        "method": variant,
                        "variant": variant,
                        "seed": seed,
                        "condition": cond,
                        "split": split,
                        "weighted_f1": f1,
                        "accuracy": f1,
                    }
                )
    return out


def _results(folder: Path, seconds: dict) -> None:
    """A finished run's results.json: dev scores around 0.5, test scores around 0.7; seconds per (variant, seed)."""
    trainings = [
        {"variant": v, "seed": s, "seconds": sec, "epochs_run": 10, "best_epoch": 4, "selected_epoch": 4}
        for (v, s), sec in seconds.items()
    ]
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(
        json.dumps(
            {"records": _records("dev", 0.5) + _records("test", 0.7), "trainings": trainings, "meta": {"seconds": 1.0}}
        )
    )


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """main() sets the study's thread count (1) on torch; give the rest of the session its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_train_seconds_per_seed_sums_the_methods_and_averages_the_seeds(tmp_path):
    _results(tmp_path / "run", {("teacher", 0): 10.0, ("no_kd", 0): 20.0, ("teacher", 1): 4.0, ("no_kd", 1): 6.0})
    figures = [("teacher", "complete"), ("no_kd", "fixed:avg")]
    out = backbone_study.summarise(tmp_path / "run" / "results.json", "dev", figures)
    assert out["train_seconds_per_seed"] == 20.0  # (10 + 20 + 4 + 6) / 2 seeds
    assert out["seconds_per_epoch"] == {"teacher": 0.7, "no_kd": 1.3}  # 14 s / 20 epochs, 26 s / 20 epochs
    # teacher complete on dev: seeds 0.6 and 0.61 -> 60.5 %
    assert abs(out["teacher complete"]["mean"] - 60.5) < 1e-9
    assert out["epochs"]["no_kd"] == {"best": [4, 4], "selected": [4, 4], "run": [10, 10]}


def test_dev_only_writes_no_test_figure_and_the_tables_give_the_seed_time(tmp_path, monkeypatch):
    study = {
        "seeds": [0, 1],
        "threads": 1,
        "methods": ["teacher", "no_kd"],
        "criterion": ["teacher complete", "no_kd fixed:avg"],
        "corpora": {"quickstart": {}, "heavy": {}},
        "base": {},
        "candidates": {"defaults": {}, "fast": {}},
    }
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    runs = tmp_path / "runs"
    for corpus, scale in (("quickstart", 1.0), ("heavy", 3.0)):
        _results(runs / corpus / "defaults", {(v, s): scale * 10.0 for v in ("teacher", "no_kd") for s in (0, 1)})
        _results(runs / corpus / "fast", {(v, s): scale * 5.0 for v in ("teacher", "no_kd") for s in (0, 1)})
    out = tmp_path / "out" / "study"
    monkeypatch.setattr(backbone_study, "machine_info", lambda device: {})
    assert (
        backbone_study.main(
            ["--config", str(config), "--runs", str(runs), "--out", str(out), "--tables-only", "--dev-only"]
        )
        == 0
    )
    text = out.with_suffix(".md").read_text()
    assert "Test split" not in text
    payload = json.loads(out.with_suffix(".json").read_text())
    assert all("test" not in per_cand for per in payload["summary"].values() for per_cand in per.values())
    rows = {
        line.split("|")[1].strip(): line
        for line in text.splitlines()
        if line.startswith("| defaults") or line.startswith("| fast")
    }
    # train s/seed: (2 methods x 10 s) on quickstart, (2 x 30 s) on heavy -> mean 40.0; fast: half
    assert rows["defaults"].rstrip(" |").endswith("40.0")
    assert rows["fast"].rstrip(" |").endswith("20.0")
    assert backbone_study.main(["--config", str(config), "--runs", str(runs), "--out", str(out), "--tables-only"]) == 0
    assert "Test split" in out.with_suffix(".md").read_text()
