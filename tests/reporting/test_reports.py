"""Run, grid and sweep reports from hand-made records: one zero-variance rule everywhere, report.html beside
report.md with the same sections, the legacy-selection banner in both."""

import re

from corekd.reporting.blocks import render_markdown
from corekd.reporting.grid import Grid, build_blocks
from corekd.reporting.run import SELECTED_ON_TEST, render_report, write_report
from corekd.reporting.sweep import render_sweep

# corekd_no_x scores exactly 0.1 below corekd on every seed (up to float rounding): the differences do not vary
SCORES = {"corekd": {0: 1.0, 1: 1.1}, "corekd_no_x": {0: 0.9, 1: 1.0}}


def records(corpus=None):
    out = []
    for variant, by_seed in SCORES.items():
        for seed, score in by_seed.items():
            for split in ("test", "dev"):
                r = {
                    "variant": variant,
                    "method": "corekd",
                    "seed": seed,
                    "split": split,
                    "condition": "complete",
                    "weighted_f1": score / 2,
                    "accuracy": score / 2,
                    "missing_rate": 0.0,
                }
                if corpus:
                    r["corpus"] = corpus
                out.append(r)
    return out


META = {
    "corpus": "hand",
    "seeds": [0, 1],
    "methods": list(SCORES),
    "status": "complete",
    "mask_seed": 0,
    "random_scheme": "calibrated",
    "command": "corekd run hand.yaml",
    "modalities": "lav",
}


def test_run_report_p_is_none_when_differences_do_not_vary():
    text = render_report(META, records(), [])
    row = next(line for line in text.splitlines() if line.startswith("| corekd_no_x | -5.00"))
    assert row.endswith("(n=2, p=n/a) |")


def test_grid_report_p_is_none_when_differences_do_not_vary(tmp_path):
    meta = {
        "name": "g",
        "seeds": [0, 1],
        "reference": "corekd",
        "status": "complete",
        "cells": {"done": 4, "total": 4},
        "corpora": {"hand": {"corpus": "hand", "task": "classification"}},
    }
    grid = Grid(tmp_path, meta, records("hand"), [], None, list(SCORES), dict.fromkeys(SCORES, "corekd"))
    text = render_markdown(build_blocks(grid))
    row = re.search(r"complete weighted F1:\n\n.*\n.*\n(\| corekd_no_x \|.*)", text).group(1)
    assert row == "| corekd_no_x | 5.00 ± 0.00 | 2 | – | – |"  # corekd minus corekd_no_x


def headings(text):
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def test_run_gets_report_html_with_the_same_sections(tmp_path):
    path = write_report(tmp_path, META, records(), [])
    md_text = path.read_text(encoding="utf-8")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    html_headings = re.findall(r"<h\d>(.*?)</h\d>", page)
    assert headings(md_text) == html_headings
    assert "Ablations" in html_headings and "Dev split (complete views and fixed-condition average)" in html_headings
    assert page.count("<table>") == md_text.count("\n|---")


def test_selection_banner_above_every_table(tmp_path):
    write_report(tmp_path, {**META, "select_on": "test"}, records(), [])
    md_text = (tmp_path / "report.md").read_text(encoding="utf-8")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    tables = md_text.count("\n|---")
    assert md_text.count(SELECTED_ON_TEST) == tables + 1  # above every table and under the title
    assert page.count("<blockquote><strong>WARNING: selected on the TEST split</strong>") == tables + 1


def test_sweep_text():
    payload = {
        "option": "data.synth.conflict_rate",
        "command": "corekd run s.yaml",
        "seeds": [0, 1],
        "runs": [
            {
                "value": 0.0,
                "status": "complete",
                "metric": "weighted_f1",
                "differences": {"corekd": {"fixed:avg": {"mean": 0.01, "std": 0.02, "n": 2, "p": 0.5}}},
                "rejection": None,
            },
            {"value": 0.3, "status": "missing", "differences": {}, "rejection": None},
        ],
    }
    text = render_sweep(payload)
    assert (
        "| conflict_rate | corekd − no_kd, fixed Avg |\n|---|---|\n| 0.0 | +1.00 ± 2.00 (n=2, p=0.5) |\n"
        "| 0.3 | no run |" in text
    )
    assert "| 0.0 | – | not computed | not computed | not computed |" in text
    assert text.endswith("Incomplete or missing sub-runs: 0.3 (finish with `corekd run s.yaml --resume`).\n")
