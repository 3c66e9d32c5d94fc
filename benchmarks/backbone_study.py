"""The backbone study: candidate backbones x two corpora x {teacher, no_kd} x seeds; dev and test tables.

Run from the repository root::

    python benchmarks/backbone_study.py [--config configs/backbone_study.yaml] [--corpus NAME] [--candidate NAME]

Each (corpus, candidate) is one ``corekd run`` into ``runs/<config stem>/<corpus>/<candidate>``
(skipped when its results.json is already complete, so the study resumes), with one torch
thread. Then the tables are built from every complete run: a DEV table (what defaults are
chosen on, by the study's ``criterion``: a list of "method condition" dev figures averaged over
corpora) and a TEST table, as markdown and JSON in ``benchmarks/results/<config stem>.*``,
with each backbone's seconds per epoch (training pass + dev scoring, 1 thread) and the load
average (timings taken while other work uses the CPU are inflated).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from speed import load_average, machine_info

from corekd.config import validate_config
from corekd.experiments import run
from corekd.experiments.spec import candidate_config
from corekd.experiments.spec import candidate_methods as methods_of
from corekd.reporting.tables import FIXED_AVG, records_frame, split_records

FIGURES = [("teacher", "complete"), ("teacher", FIXED_AVG), ("no_kd", "complete"), ("no_kd", FIXED_AVG)]
# The first study's criterion; a study file may name its own (``criterion: ["no_kd random:0.5", ...]``).
CRITERION = [("teacher", "complete"), ("teacher", FIXED_AVG), ("no_kd", FIXED_AVG)]


def study_figures(study: dict) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(figures shown, criterion figures): the criterion's figures are always among those shown."""
    criterion = [tuple(item.split(" ", 1)) for item in study["criterion"]] if "criterion" in study else CRITERION
    return FIGURES + [f for f in criterion if f not in FIGURES], criterion


def label(cond: str) -> str:
    return "fixed avg" if cond == FIXED_AVG else cond


def complete(results: Path, study: dict, candidate: str) -> bool:
    if not results.is_file():
        return False
    payload = json.loads(results.read_text())
    done = {(t["variant"], t["seed"]) for t in payload.get("trainings", [])}
    want = {(m, s) for m in methods_of(study, candidate) for s in study["seeds"]}
    return done >= want and "seconds" in payload["meta"]


def summarise(results: Path, split: str, figures: list[tuple[str, str]]) -> dict:
    payload = json.loads(results.read_text())
    frame = records_frame(split_records(payload["records"], split))
    out = {}
    for method, cond in figures:
        if method not in set(frame.variant):
            continue
        vals = (
            frame[(frame.variant == method) & (frame.condition == cond)].sort_values("seed")["weighted_f1"].to_numpy()
        )
        out[f"{method} {cond}"] = {
            "mean": float(100 * vals.mean()),
            "std": float(100 * vals.std(ddof=1)) if len(vals) > 1 else 0.0,
            "per_seed": [round(100 * v, 2) for v in vals],
        }
    by_method: dict[str, list[dict]] = {}
    for t in payload["trainings"]:
        by_method.setdefault(t["variant"], []).append(t)
    out["seconds_per_epoch"] = {
        m: round(sum(t["seconds"] for t in ts) / sum(t["epochs_run"] for t in ts), 3) for m, ts in by_method.items()
    }
    # Training seconds of one seed, every method of the run summed (mean over seeds): the figure a default's speed is judged by.
    per_seed: dict[int, float] = {}
    for t in payload["trainings"]:
        per_seed[t["seed"]] = per_seed.get(t["seed"], 0.0) + t["seconds"]
    out["train_seconds_per_seed"] = round(float(np.mean(list(per_seed.values()))), 2) if per_seed else None
    out["epochs"] = {
        m: {
            "best": [t["best_epoch"] for t in ts],
            "selected": [t.get("selected_epoch", t["best_epoch"]) for t in ts],
            "run": [t["epochs_run"] for t in ts],
        }
        for m, ts in by_method.items()
    }
    return out


def table(
    summary: dict,
    corpora: list[str],
    candidates: list[str],
    split: str,
    figures: list[tuple[str, str]],
    criterion: list[tuple[str, str]],
) -> str:
    head = ["candidate"]
    for c in corpora:
        head += [f"{c}: {m} {label(cond)}" for m, cond in figures]
    if split == "dev":
        head += ["criterion"]
    head += ["s/epoch teacher", "s/epoch no_kd", "train s/seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cand in candidates:
        cells = [cand]
        crit = []
        for c in corpora:
            s = summary.get(c, {}).get(cand, {}).get(split)
            for m, cond in figures:
                v = s.get(f"{m} {cond}") if s else None
                cells.append(f"{v['mean']:.1f} ± {v['std']:.1f}" if v else "n/a")
                if v and (m, cond) in criterion:
                    crit.append(v["mean"])
        if split == "dev":
            cells.append(f"{np.mean(crit):.2f}" if len(crit) == len(criterion) * len(corpora) else "n/a")
        timing = summary.get(corpora[0], {}).get(cand, {}).get("seconds_per_epoch") or {}
        cells += [f"{timing[m]:.2f}" if m in timing else "n/a" for m in ("teacher", "no_kd")]
        per_seed = [
            summary[c][cand]["train_seconds_per_seed"]
            for c in corpora
            if summary.get(c, {}).get(cand, {}).get("train_seconds_per_seed") is not None
        ]
        cells.append(f"{np.mean(per_seed):.1f}" if len(per_seed) == len(corpora) else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=Path("configs/backbone_study.yaml"), type=Path)
    parser.add_argument("--corpus", action="append", help="run only this corpus (repeatable)")
    parser.add_argument("--candidate", action="append", help="run only this candidate (repeatable)")
    parser.add_argument("--runs", type=Path, help="run folders (default runs/<config stem>)")
    parser.add_argument("--out", type=Path, help="path stem of .md/.json (default benchmarks/results/<config stem>)")
    parser.add_argument("--tables-only", action="store_true", help="build the tables from finished runs, train nothing")
    parser.add_argument(
        "--dev-only",
        action="store_true",
        help="write and print the dev table only (while defaults are being chosen, keep test figures unseen)",
    )
    args = parser.parse_args(argv)
    study = yaml.safe_load(args.config.read_text())
    args.runs = args.runs or Path("runs") / args.config.stem
    args.out = args.out or Path("benchmarks/results") / args.config.stem
    figures, criterion = study_figures(study)
    torch.set_num_threads(study["threads"])
    corpora = list(study["corpora"])
    candidates = list(study["candidates"])
    load_start = load_average()
    started = time.perf_counter()
    if not args.tables_only:
        for corpus in args.corpus or corpora:
            for cand in args.candidate or candidates:
                folder = args.runs / corpus / cand
                if complete(folder / "results.json", study, cand):
                    continue
                cfg = validate_config(candidate_config(study, corpus, cand), args.config)
                t0 = time.perf_counter()
                run(cfg, folder, command=f"python benchmarks/backbone_study.py --corpus {corpus} --candidate {cand}")
                print(f"{corpus}/{cand}: {time.perf_counter() - t0:.0f} s (load {load_average()})", flush=True)
    summary: dict = {}
    for corpus in corpora:
        for cand in candidates:
            path = args.runs / corpus / cand / "results.json"
            if complete(path, study, cand):
                summary.setdefault(corpus, {})[cand] = {s: summarise(path, s, figures) for s in ("dev", "test")}
                for s in ("dev", "test"):
                    summary[corpus][cand]["seconds_per_epoch"] = summary[corpus][cand][s].pop("seconds_per_epoch")
                    summary[corpus][cand]["epochs"] = summary[corpus][cand][s].pop("epochs")
                    summary[corpus][cand]["train_seconds_per_seed"] = summary[corpus][cand][s].pop(
                        "train_seconds_per_seed"
                    )
        for cand in candidates:  # teacher-only candidates: their students are another candidate's (identical runs)
            source = (study["candidates"][cand] or {}).get("students_from")
            if source and cand in summary.get(corpus, {}) and source in summary[corpus]:
                for s in ("dev", "test"):
                    for key, value in summary[corpus][source][s].items():
                        if key.startswith("no_kd"):
                            summary[corpus][cand][s].setdefault(key, value)
    dev_table = table(summary, corpora, candidates, "dev", figures, criterion)
    test_table = table(summary, corpora, candidates, "test", figures, criterion)
    text = "\n".join(
        [
            "# Backbone study",
            "",
            f"`python benchmarks/backbone_study.py` ({args.config}); weighted F1 in %, mean ± sample std over seeds "
            f"{study['seeds']}; fixed avg = mean of the six fixed-condition figures per seed. Criterion (dev only): "
            f"mean over corpora of {', '.join(f'{m} {label(c)}' for m, c in criterion)}. Seconds per epoch: "
            "training pass + dev scoring, quickstart corpus, 1 thread (inflated when the machine is shared; see the JSON's "
            "load average). Train s/seed: training seconds of one seed, every method of the study summed, mean over seeds "
            "and corpora (each corpus's runs in their own process, two at a time on the 2-core machine).",
            "",
            "## Dev split (defaults are chosen here)",
            "",
            dev_table,
            "",
            *([] if args.dev_only else ["## Test split (not used for any choice)", "", test_table, ""]),
        ]
    )
    if args.dev_only:  # the JSON too: no test figure leaves the runs before the choice
        summary = {
            c: {cand: {k: v for k, v in d.items() if k != "test"} for cand, d in per.items()}
            for c, per in summary.items()
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "config": str(args.config),
                "study": study,
                "summary": summary,
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "wall_s_this_call": round(time.perf_counter() - started, 1),
                "machine": {
                    **machine_info(torch.device("cpu")),
                    "load_average_start": load_start,
                    "load_average_end": load_average(),
                },
            },
            indent=1,
        )
        + "\n"
    )
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
