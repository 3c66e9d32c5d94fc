"""Merge finished runs of one config that differ only in their seeds into one run folder, then report it.

    python benchmarks/merge_seed_runs.py OUT RUN_DIR [RUN_DIR ...]

Why: a seed's models, masks and records depend on that seed alone (``derive_seed`` per seed; the
evaluation masks on ``evaluation.mask_seed``), so ``corekd run CONFIG --seeds 1`` and ``--seeds 2``
run side by side on two cores give exactly the records of seeds 1 and 2 in ``corekd run CONFIG``
(checked: a one-seed quickstart run's records equal the three-seed run's seed-0 records). This
script is how such runs become the folder the whole command would have written: it refuses runs
whose resolved configs differ in anything but ``seeds``, whose corpora differ (fingerprint), that
are not complete, or that share a seed; then it writes OUT with ``config.yaml`` (seeds united),
``results.json`` (records and trainings in seed order), ``analyses.json`` (per-seed rows united;
the t-SNE figure is the first seed's, as in any run), the checkpoints, the score-vs-rate figure
redrawn from all records, the run marker, and ``report.md`` (``corekd report`` can rebuild it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

from corekd.evaluation.analyses import ANALYSES_FILE, add_relative_to_no_kd
from corekd.experiments.folder import RUN_MARKER as MARKER_FILE
from corekd.experiments.folder import config_difference
from corekd.files import CONFIG_FILE, RESULTS_FILE
from corekd.reporting.figures import CURVE_FIGURE, curve_figure
from corekd.reporting.run import write_report


def load(run: Path) -> dict:
    results = json.loads((run / RESULTS_FILE).read_text())
    if results["meta"].get("status") != "complete":
        sys.exit(f"{run}: not a complete run (status {results['meta'].get('status')!r})")
    config = yaml.safe_load((run / CONFIG_FILE).read_text())
    marker = json.loads((run / MARKER_FILE).read_text())
    analyses = json.loads((run / ANALYSES_FILE).read_text()) if (run / ANALYSES_FILE).is_file() else None
    return {"dir": run, "results": results, "config": config, "marker": marker, "analyses": analyses}


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.exit(__doc__)
    out, runs = Path(argv[1]), [load(Path(a)) for a in argv[2:]]
    if out.exists():
        sys.exit(f"{out} exists; choose a new folder")
    runs.sort(key=lambda r: min(r["config"]["seeds"]))
    first = runs[0]
    seeds: list[int] = []
    for r in runs:
        diff = config_difference({**first["config"], "seeds": None}, {**r["config"], "seeds": None})
        if diff:
            sys.exit(f"{r['dir']}: its config differs from {first['dir']}'s at {diff[0]} ({diff[1]!r} vs {diff[2]!r})")
        if r["marker"]["corpus_fingerprint"] != first["marker"]["corpus_fingerprint"]:
            sys.exit(f"{r['dir']}: another corpus than {first['dir']} (fingerprints differ)")
        if set(seeds) & set(r["config"]["seeds"]):
            sys.exit(f"{r['dir']}: seed(s) {sorted(set(seeds) & set(r['config']['seeds']))} already merged")
        seeds += r["config"]["seeds"]

    out.mkdir(parents=True)
    config = {**first["config"], "seeds": seeds}
    (out / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    marker = {**first["marker"], "command": f"python benchmarks/merge_seed_runs.py {' '.join(argv[1:])}"}
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n")
    meta = {
        **first["results"]["meta"],
        "seeds": seeds,
        "command": " + ".join(r["results"]["meta"]["command"] for r in runs) + f", merged by {marker['command']}",
        "seconds": round(sum(r["results"]["meta"].get("seconds") or 0 for r in runs), 1),
    }
    records = [x for r in runs for x in r["results"]["records"]]
    trainings = [x for r in runs for x in r["results"]["trainings"]]
    (out / RESULTS_FILE).write_text(json.dumps({"meta": meta, "records": records, "trainings": trainings}, indent=1))
    for r in runs:
        for unit in sorted((r["dir"] / "checkpoints").glob("*/seed*")):
            shutil.copytree(unit, out / "checkpoints" / unit.parent.name / unit.name)
    figures = []
    if first["analyses"] is not None:
        (out / "figures").mkdir()
        merged = dict(first["analyses"])
        merged["drift"] = add_relative_to_no_kd([x for r in runs for x in r["analyses"]["drift"]])
        merged["mstate_drift"] = add_relative_to_no_kd([x for r in runs for x in r["analyses"].get("mstate_drift", [])])
        merged["rejection"] = [x for r in runs for x in r["analyses"]["rejection"]]
        merged["natural_conflicts"] = {
            **first["analyses"]["natural_conflicts"],
            "records": [x for r in runs for x in r["analyses"]["natural_conflicts"]["records"]],
        }
        for name in first["analyses"]["figures"]:
            if name != CURVE_FIGURE:  # the t-SNE panel: the first seed's in any run
                shutil.copy(first["dir"] / name, out / name)
                figures.append(name)
        if curve_figure(out / CURVE_FIGURE, records, meta.get("task", "classification")):
            figures.append(CURVE_FIGURE)
        merged["figures"] = figures
        (out / ANALYSES_FILE).write_text(json.dumps(merged, indent=1))
    report = write_report(out, meta, records, trainings)
    print(f"merged seeds {seeds} from {len(runs)} runs into {out}; wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
