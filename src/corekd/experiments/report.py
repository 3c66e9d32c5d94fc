"""``corekd report``: a finished (or interrupted) folder's reports written again from what it holds."""

from __future__ import annotations

import json
from pathlib import Path

from corekd.errors import CorekdError
from corekd.experiments.folder import is_grid_folder, locked, read_results
from corekd.experiments.sweep import is_sweep_folder, rebuild
from corekd.files import ANALYSES_FILE
from corekd.reporting.grid import write_grid_report
from corekd.reporting.run import write_report


def analyses_gaps(run_dir: Path, trainings: list[dict]) -> list[str]:
    """The reported (variant, seed) models that analyses.json has no rows for (it was cut short, or is older)."""
    path = Path(run_dir) / ANALYSES_FILE
    if not path.is_file():
        return []
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return [f"{ANALYSES_FILE} is not readable"]
    analysed = {(r.get("variant"), r.get("seed")) for key in ("drift", "rejection") for r in payload.get(key, [])}
    if not analysed:
        return []
    wanted = {(t.get("variant"), t.get("seed")) for t in trainings}
    return [f"{v} seed {s}" for v, s in sorted(wanted - analysed, key=str) if v != "teacher"]


def rebuild_report(run_dir: str | Path) -> list[str]:
    """Write the folder's reports again (holding its lock); the lines to print."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CorekdError(
            "no such folder (expected a folder written by `corekd run` or `corekd compare`)", path=run_dir
        )
    with locked(run_dir, "corekd report"):
        if is_sweep_folder(run_dir):  # a sweep: sweep.json and sweep.md again from its sub-runs
            return [f"report: {rebuild(run_dir)}"]
        if is_grid_folder(run_dir):  # a grid: report.md and report.html from results.json and analyses.json
            md_path, html_path = write_grid_report(run_dir)
            return [f"report: {md_path}, {html_path}"]
        meta, records, trainings = read_results(run_dir)
        lines = []
        gaps = analyses_gaps(run_dir, trainings)
        if gaps:
            lines.append(
                f"warning: {ANALYSES_FILE} has no mechanism analyses for {len(gaps)} model(s) of "
                f"results.json ({', '.join(gaps[:4])}{', ...' if len(gaps) > 4 else ''}): its tables cover "
                "the rest only; `corekd run ... --resume` does not redo them, --overwrite does"
            )
        lines.append(f"report: {write_report(run_dir, meta, records, trainings)}")
        return lines
