"""The "Modality diagnostics" tables: by hand from rows, and in a tiny run's and a grid's report."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from corekd.cli import app
from corekd.reporting.blocks import Paragraph, Table, render_markdown
from corekd.reporting.diagnostics import diagnostics_tables
from corekd.reporting.grid import build_blocks, read_grid
from helpers import quick_config

HEADERS = ("method", "drop l", "drop a", "alone l", "alone a", "equity", "balance")


def row(variant, seed, drop, alone, norms, equity, balance, metric="weighted_f1"):
    return {
        "complete": 0.5,
        "variant": variant,
        "method": variant,
        "seed": seed,
        "metric": metric,
        "modalities": ["l", "a"],
        "drop": dict(zip("la", drop)),
        "alone": dict(zip("la", alone)),
        "grad_norm": dict(zip("la", norms)),
        "equity": equity,
        "balance": balance,
    }


def tables(blocks):
    return [b for b in blocks if isinstance(b, Table)]


def test_tables_by_hand():
    rows = [
        row("kd", 0, (0.1, 0.05), (0.5, 0.3), (1.0, 2.0), 0.5, 0.75),
        row("kd", 1, (0.3, None), (0.7, 0.3), (3.0, 2.0), None, 0.25),
        row("base", 0, (0.2, 0.0), (0.4, 0.2), (2.0, 2.0), 0.0, 1.0),
    ]
    main, norms = tables(diagnostics_tables(rows, variants=["base", "kd"]))
    assert main.headers == HEADERS
    # drop l of kd: 10 and 30 percent -> mean 20, sample std sqrt(200) = 14.14; drop a: one seed of two defined
    assert main.rows[1] == (
        "kd",
        "20.00 ± 14.14",
        "5.00 (n=1)",
        "60.00 ± 14.14",
        "30.00 ± 0.00",
        "0.500 (n=1)",
        "0.500 ± 0.354",
    )
    assert main.rows[0] == ("base", "20.00", "0.00", "40.00", "20.00", "0.000", "1.000")
    assert norms.headers == ("method", "grad norm l", "grad norm a")
    assert norms.rows == (("base", "2.0000", "2.0000"), ("kd", "2.0000 ± 1.4142", "2.0000 ± 0.0000"))


def test_tables_mae_as_it_is_and_empty():
    rows = [row("kd", 0, (0.25, -0.5), (1.1, 1.4), (None, None), None, None, metric="mae")]
    blocks = diagnostics_tables(rows)
    main, _ = tables(blocks)
    assert main.rows == (("kd", "0.250", "-0.500", "1.100", "1.400", "–", "–"),)
    assert "mae (as it is)" in next(b.text for b in blocks if isinstance(b, Paragraph))
    assert diagnostics_tables([]) == []
    unscored = {**rows[0], "complete": None}
    (line,) = diagnostics_tables([unscored])
    assert isinstance(line, Paragraph) and line.text.startswith("No modality diagnostics: no model has a test score")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("diag") / "run"
    cfg = quick_config(methods=[{"name": "teacher"}, {"name": "no_kd"}], seeds=[0, 1])
    path = out.parent / "cfg.json"
    path.write_text(json.dumps(cfg))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_run_writes_the_diagnostics_and_the_report_section(tiny_run):
    payload = json.loads((tiny_run / "analyses.json").read_text())
    rows = payload["modality_diagnostics"]
    assert {(r["variant"], r["seed"]) for r in rows} == {(v, s) for v in ("teacher", "no_kd") for s in (0, 1)}
    results = json.loads((tiny_run / "results.json").read_text())
    test = {
        (r["variant"], r["seed"], r["condition"]): r["weighted_f1"]
        for r in results["records"]
        if r["split"] == "test" and r.get("applicable", True)
    }
    for r in rows:
        key = (r["variant"], r["seed"])
        assert r["predicted"] == []  # every score comes from the records
        assert r["complete"] == test[(*key, "complete")]
        assert r["drop"]["v"] == pytest.approx(test[(*key, "complete")] - test[(*key, "fixed:la")])
        assert r["alone"]["a"] == test[(*key, "fixed:a")]
        assert all(r["grad_norm"][m] > 0 for m in "lav") and 0 <= r["balance"] <= 1
    for t in results["trainings"]:
        assert all(h[f"grad_norm_{m}"] >= 0 for h in t["history"] for m in "lav")
    report = (tiny_run / "report.md").read_text()
    section = report[report.index("### Modality diagnostics") :]
    assert "| method | drop l | drop a | drop v | alone l | alone a | alone v | equity | balance |" in section
    assert "| method | grad norm l | grad norm a | grad norm v |" in section
    assert "| teacher |" in section and "| no_kd |" in section


def test_grid_report_carries_the_diagnostics(tiny_run, tmp_path):
    res = json.loads((tiny_run / "results.json").read_text())
    meta = res["meta"]
    info = {k: meta[k] for k in ("corpus", "task", "labels", "modalities", "splits", "mask_seed", "random_scheme")}
    grid = {
        "format": "corekd-grid",
        "version": 1,
        "meta": {
            "name": "g",
            "command": "corekd compare g.yaml",
            "seeds": [0, 1],
            "variants": [{"variant": v, "method": v} for v in ("teacher", "no_kd")],
            "reference": None,
            "corpora": {"c": {**info, "select_metric": "weighted_f1", "warnings": []}},
            "cells": {"total": 4, "done": 4},
            "status": "complete",
        },
        "records": [{**r, "corpus": "c"} for r in res["records"]],
        "trainings": [{**t, "corpus": "c"} for t in res["trainings"]],
    }
    out = tmp_path / "grid"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(grid))
    analyses = json.loads((tiny_run / "analyses.json").read_text())
    (out / "analyses.json").write_text(
        json.dumps({"format": "corekd-grid-analyses", "version": 1, "corpora": {"c": analyses}, "figures": []})
    )
    text = render_markdown(build_blocks(read_grid(out)))
    run_md = (tiny_run / "report.md").read_text()
    header = "| method | drop l | drop a | drop v | alone l | alone a | alone v | equity | balance |"
    assert "Modality diagnostics:" in text
    mine = text[text.index(header) :].split("\n\n")[0]
    theirs = run_md[run_md.index(header) :].split("\n\n")[0]
    assert mine == theirs  # the same numbers as the run report
