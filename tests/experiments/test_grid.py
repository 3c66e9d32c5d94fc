"""``corekd compare``: the grid config, the plan, the folder rules, and configs/smoke_grid.yaml end to end.

The smoke grid runs once per session (two workers); the other tests compare against it: a grid
killed mid-way and started again, the Ray backend, and ``corekd run`` on the same units. The tests
that use it are marked ``subprocess``: its cells run in spawned worker processes (or Ray workers),
which import the installed package, so mutation runs leave them out (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import corekd.experiments.unit as unit_mod
from corekd.config import validate_config
from corekd.errors import CorekdError
from corekd.experiments import compare as run_grid
from corekd.experiments import run
from corekd.experiments.engine import plan_grid as plan_cells
from corekd.experiments.folder import CELL_FILE, GRID, ExperimentFolder
from corekd.experiments.spec import load_grid, validate_grid
from helpers import ROOT

SMOKE = ROOT / "configs" / "smoke_grid.yaml"


def _records(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["records"]


def _untimed(out: Path) -> list[dict]:
    return [
        {k: v for k, v in t.items() if k != "seconds"}
        for t in json.loads((out / "results.json").read_text())["trainings"]
    ]


def _analyses(out: Path) -> dict:
    payload = json.loads((out / "analyses.json").read_text())
    return {k: v for k, v in payload.items() if k != "figures"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """configs/smoke_grid.yaml, uninterrupted, two single-thread workers."""
    out = tmp_path_factory.mktemp("smoke") / "grid"
    result = run_grid(SMOKE, out, workers=2, device="cpu")
    return out, result


# ------------------------------------------------------------------ config and plan
def _grid_dict(**extra) -> dict:
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(extra)
    return raw


def test_corpora_are_merged_into_the_data_section_and_named_in_errors():
    grid = validate_grid(_grid_dict())
    assert list(grid.corpora) == ["vectors", "frames"]
    frames, vectors = grid.corpora["frames"].data.synth, grid.corpora["vectors"].data.synth
    assert frames.frames.enabled and not vectors.frames.enabled
    assert frames.n_dialogues == vectors.n_dialogues == 14  # merged, not replaced
    with pytest.raises(CorekdError) as err:
        validate_grid(_grid_dict(corpora={"ok": {}, "bad": {"synth": {"n_dialogues": 1}}}))
    assert err.value.field.startswith("corpora.bad") and "n_dialogues" in err.value.field
    with pytest.raises(CorekdError) as err:
        validate_grid(_grid_dict(corpora={"../up": {}}))
    assert err.value.field == "corpora.../up"
    with pytest.raises(CorekdError) as err:
        validate_grid(_grid_dict(reference="nope"))
    assert err.value.field == "reference" and "corekd" in err.value.detail
    with pytest.raises(CorekdError) as err:
        validate_grid(_grid_dict(sweep={"option": "training.lr", "values": [0.1]}))
    assert err.value.field == "sweep"


def test_one_corpus_without_corpora_and_reference_defaults():
    raw = _grid_dict()
    raw.pop("corpora"), raw.pop("reference")
    grid = validate_grid(raw)
    assert list(grid.corpora) == ["synthetic"] and grid.reference == "corekd"
    raw["methods"] = [{"name": "no_kd"}]
    assert validate_grid(raw).reference is None


def test_plan_trains_each_teacher_once_before_its_students():
    grid = load_grid(SMOKE)
    cells = plan_cells(grid)
    labels = [s.label for s in grid.base.methods]
    assert len(cells) == len(grid.corpora) * len(grid.seeds) * len(labels)
    assert len(set(cells)) == len(cells)
    for corpus in grid.corpora:
        for seed in grid.seeds:
            mine = [c for c in cells if (c.part, c.seed) == (corpus, seed)]
            assert [c.variant for c in mine] == labels and mine[0].method == "teacher"
    # a teacher no one lists is still trained (once per corpus and seed) for the students that need it
    raw = _grid_dict(methods=[{"name": "no_kd"}, {"name": "corekd"}])
    cells = plan_cells(validate_grid(raw))
    assert [c.variant for c in cells if c.part == "vectors" and c.seed == 0] == ["teacher", "no_kd", "corekd"]


@pytest.mark.subprocess
def check_folder(out, grid, *, overwrite, config_path):
    return ExperimentFolder.check(
        out, GRID, grid.resolved(), mode="grid", overwrite=overwrite, config_path=config_path
    ).mode


def test_a_folder_of_another_grid_or_not_a_grid_is_refused(tmp_path, smoke):
    out, _ = smoke
    other = validate_grid(_grid_dict(seeds=[0, 1, 2]))
    with pytest.raises(CorekdError) as err:
        check_folder(out, other, overwrite=False, config_path=None)
    assert err.value.field == "seeds" and "--overwrite" in err.value.detail
    assert check_folder(out, load_grid(SMOKE), overwrite=False, config_path=None) == "resume"
    assert check_folder(out, other, overwrite=True, config_path=None) == "overwrite"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(CorekdError) as err:
        check_folder(tmp_path / "junk", other, overwrite=True, config_path=None)
    assert err.value.field == "--out" and "not a corekd grid" in err.value.detail


# ------------------------------------------------------------------ the smoke grid end to end
@pytest.mark.subprocess
def test_smoke_grid_writes_every_cell_table_analysis_and_figure(smoke):
    out, result = smoke
    grid = load_grid(SMOKE)
    assert result.failed == [] and result.ran == result.cells == len(plan_cells(grid))
    payload = json.loads((out / "results.json").read_text())
    assert payload["format"] == "corekd-grid" and payload["meta"]["status"] == "complete"
    records = payload["records"]
    units = {(r["corpus"], r["variant"], r["seed"]) for r in records}
    labels = [s.label for s in grid.base.methods]
    assert units == {(c, v, s) for c in grid.corpora for v in labels for s in grid.seeds}
    frames_conditions = {r["condition"] for r in records if r["corpus"] == "frames"}
    assert "frames:0.5" in frames_conditions
    assert not any(r["condition"].startswith("frames:") for r in records if r["corpus"] == "vectors")
    analyses = json.loads((out / "analyses.json").read_text())
    assert set(analyses["corpora"]) == {"vectors", "frames"}
    for key, part in analyses["corpora"].items():
        assert {r["variant"] for r in part["drift"]} >= {"corekd", "no_kd", "wo_nce"}
        assert {r["type"] for r in part["rejection"]} == {"a", "v", "av"}
        assert set(analyses["embeddings"][key]) >= {"teacher", "corekd"}
    for fig in analyses["figures"]:
        assert (out / fig).is_file() and (out / fig).stat().st_size > 1000
    assert analyses["figures"]
    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "vectors" in md and "frames" in md and "<table" in html


@pytest.mark.subprocess
def test_grid_cells_equal_corekd_run_units(smoke, tmp_path):
    """A cell is a `corekd run` unit: the same config, seed and thread count give the same records and analyses."""
    out, _ = smoke
    grid = load_grid(SMOKE)
    raw = yaml.safe_load(grid.corpora["frames"].model_dump_json())
    keep = ("teacher", "corekd", "contrastive_view")
    raw.update(
        seeds=[1], threads=1, device="cpu", methods=[m for m in raw["methods"] if (m["variant"] or m["name"]) in keep]
    )
    result = run(validate_config(raw), tmp_path / "run")
    mine = [{**r, "corpus": "frames"} for r in result.records]
    theirs = [
        r
        for r in _records(out)
        if r["corpus"] == "frames" and r["seed"] == 1 and r["variant"] in ("teacher", "corekd", "contrastive_view")
    ]
    assert len(mine) == len(theirs) > 0
    assert mine == theirs
    run_drift = json.loads((tmp_path / "run" / "analyses.json").read_text())["drift"]
    grid_drift = [
        r
        for r in json.loads((out / "analyses.json").read_text())["corpora"]["frames"]["drift"]
        if r["seed"] == 1 and r["variant"] in ("teacher", "corekd", "contrastive_view")
    ]
    key = lambda r: (r["variant"], r["condition"])  # noqa: E731
    assert [(key(r), r["normalized"], r["raw"]) for r in sorted(run_drift, key=key)] == [
        (key(r), r["normalized"], r["raw"]) for r in sorted(grid_drift, key=key)
    ]


@pytest.mark.subprocess
def test_a_killed_grid_started_again_runs_only_the_missing_cells_with_identical_results(smoke, tmp_path):
    reference, _ = smoke
    out = tmp_path / "grid"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corekd.cli",
            "compare",
            str(SMOKE),
            "--out",
            str(out),
            "--workers",
            "2",
            "--device",
            "cpu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob(f"cells/*/*/*/{CELL_FILE}"))) < 6:
            assert proc.poll() is None, "the grid ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-cell
        proc.wait()
    done_before = len(list(out.glob(f"cells/*/*/*/{CELL_FILE}")))
    total = len(plan_cells(load_grid(SMOKE)))
    assert 6 <= done_before < total
    partial = json.loads((out / "results.json").read_text())
    assert partial["meta"]["status"] == "partial"
    result = run_grid(SMOKE, out, workers=2, device="cpu", report=False)
    assert result.ran == total - done_before and result.failed == []
    assert _records(out) == _records(reference)
    assert _untimed(out) == _untimed(reference)
    assert _analyses(out)["corpora"] == _analyses(reference)["corpora"]


@pytest.mark.subprocess
def test_the_ray_backend_gives_the_records_of_the_local_backend(smoke, tmp_path):
    reference, _ = smoke
    out = tmp_path / "grid"
    result = run_grid(SMOKE, out, workers=2, backend="ray", device="cpu", report=False)
    assert result.failed == [] and result.ran == result.cells
    assert json.loads((out / "results.json").read_text())["meta"]["backend"] == "ray"
    assert _records(out) == _records(reference)
    assert _analyses(out)["corpora"] == _analyses(reference)["corpora"]


@pytest.mark.subprocess
def test_one_worker_in_process_gives_the_records_of_two(smoke, tmp_path):
    """One worker runs cells in this process (no pool): same records as two spawned workers (one corpus, one seed)."""
    reference, _ = smoke
    raw = _grid_dict(seeds=[1], corpora={"vectors": {}})
    out = tmp_path / "grid"
    run_grid(validate_grid(raw, SMOKE), out, workers=1, device="cpu", report=False)
    theirs = [r for r in _records(reference) if r["corpus"] == "vectors" and r["seed"] == 1]
    assert _records(out) == theirs


def test_a_failed_cell_is_reported_and_its_students_are_not_run(tmp_path, monkeypatch):
    original = unit_mod.train_unit  # run_unit reads train_unit from here at call time

    def failing(setup, spec, seed, *args, **kwargs):
        if spec.label == "teacher" and seed == 1:
            raise CorekdError("training diverged (test)")
        return original(setup, spec, seed, *args, **kwargs)

    monkeypatch.setattr(unit_mod, "train_unit", failing)
    raw = _grid_dict(corpora={"vectors": {}}, methods=[{"name": "teacher"}, {"name": "no_kd"}, {"name": "corekd"}])
    out = tmp_path / "grid"
    result = run_grid(validate_grid(raw, SMOKE), out, workers=1, device="cpu", report=False)
    failed = {f["cell"]: f["error"] for f in result.failed}
    assert "training diverged" in failed["vectors/seed-1/teacher"]
    # no_kd needs no teacher to train, but its drift and rejection are measured against it (analyses on)
    assert set(failed) == {"vectors/seed-1/teacher", "vectors/seed-1/no_kd", "vectors/seed-1/corekd"}
    assert "its teacher" in failed["vectors/seed-1/corekd"]
    assert all(f["user_error"] for f in result.failed)  # a CorekdError: the CLI exits 2, as `corekd run` would
    assert {(r["variant"], r["seed"]) for r in _records(out)} == {("teacher", 0), ("no_kd", 0), ("corekd", 0)}
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["status"] == "partial" and len(meta["failed"]) == 3
    # without analyses no_kd does not wait for a teacher
    raw_plain = {**raw, "evaluation": {**raw["evaluation"], "analyses": False}}
    alone = run_grid(validate_grid(raw_plain, SMOKE), tmp_path / "plain", workers=1, device="cpu", report=False)
    assert {f["cell"] for f in alone.failed} == {"vectors/seed-1/teacher", "vectors/seed-1/corekd"}
    # started again (the cause gone), only the failed cells run
    monkeypatch.setattr(unit_mod, "train_unit", original)
    again = run_grid(validate_grid(raw, SMOKE), out, workers=1, device="cpu", report=False)
    assert again.ran == 3 and again.failed == []
    assert GRID.unit_dir(Path(""), "vectors", "corekd", 1).as_posix() == "cells/vectors/seed-1/corekd"


def test_a_grid_on_a_corpus_folder_continues_with_the_same_config(tmp_path, tiny_corpus):
    """Loading a corpus folder settles the run's task in its config; the grid compares the config as given, so the
    same command continues the grid instead of calling its own config different."""
    folder = tiny_corpus.save(tmp_path / "corpus")
    raw = _grid_dict(
        seeds=[0],
        data={"source": "corpus", "path": str(folder)},
        corpora={"mine": {}},
        reference=None,
        methods=[{"name": "no_kd"}],
        training={"epochs": 1, "patience": 1, "batch_size": 4},
    )
    raw.pop("teacher")
    grid = validate_grid(raw)
    assert grid.corpora["mine"].task is None  # not settled until the corpus is read
    out = tmp_path / "grid"
    first = run_grid(grid, out, device="cpu", report=False)
    again = run_grid(validate_grid(raw), out, device="cpu", report=False)
    assert (first.ran, again.ran) == (1, 0)
    assert yaml.safe_load((out / "config.yaml").read_text())["task"] is None


def test_a_grid_trains_each_variants_seeds_as_one_ensemble_when_asked(smoke, tmp_path):
    """training.ensemble: seeds: the same cells and records (conditions, seeds) as separate cells, each seed's cell
    saying it was an ensemble member; an ensemble whose teacher failed is not run."""
    reference, _ = smoke
    raw = _grid_dict(corpora={"vectors": {}})
    raw["training"] = {**raw.get("training", {}), "ensemble": "seeds"}
    out = tmp_path / "grid"
    result = run_grid(validate_grid(raw, SMOKE), out, workers=2, device="cpu", report=False)
    assert result.failed == []
    key = lambda r: (r["variant"], r["seed"], r["split"], r["condition"])  # noqa: E731
    theirs = [r for r in _records(reference) if r["corpus"] == "vectors"]
    assert sorted(map(key, _records(out))) == sorted(map(key, theirs))
    seeds = len(validate_grid(raw, SMOKE).seeds)
    assert all(t["ensemble"] == seeds for t in _untimed(out))
