"""CoRe-KD against its rivals before and after tuning: two grid folders, one table (issue 31).

    python benchmarks/tuned_vs_untuned.py UNTUNED_GRID TUNED_GRID [--tuning DIR] [--out benchmarks/results/rivals_tuned]

UNTUNED_GRID: a ``corekd compare`` folder with the methods on their config settings (``configs/paper_grid.yaml``
holds every cell of ``configs/rivals.yaml``); TUNED_GRID: ``corekd compare`` of the ``tuned.yaml`` that ``corekd
tune configs/rivals.yaml`` wrote. Only the variants both grids hold are compared, on the seeds both have.

Per variant and grid, on the TEST split (each model selected on dev, as always): the fixed Avg (the mean of the six
fixed subsets per seed), the random Avg (the mean over every random rate per seed) and complete, mean ± std over
seeds; the variant's rank by fixed Avg; the paired difference from the reference (``corekd``) with its p. Then
Kendall's tau between the two rankings. With ``--tuning``, each method's best dev score and its config-settings
(first-trial) dev score from ``tuning.json``. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from corekd.reporting.realistic import kendall_tau
from corekd.reporting.stats import format_difference, paired_difference
from corekd.reporting.tables import FIXED_ORDER

REFERENCE = "corekd"


def per_seed_scores(grid: Path, metric: str = "weighted_f1") -> dict[str, dict[str, dict[int, float]]]:
    """variant -> family ("fixed", "random", "complete") -> {seed: the family's mean score on test}."""
    records = json.loads((grid / "results.json").read_text())["records"]
    by: dict[tuple[str, int], dict[str, float]] = {}
    for r in records:
        if r["split"] == "test" and r.get("applicable", True) and r.get(metric) is not None:
            by.setdefault((r["variant"], int(r["seed"])), {})[r["condition"]] = float(r[metric])
    out: dict[str, dict[str, dict[int, float]]] = {}
    for (variant, seed), scores in by.items():
        fam = out.setdefault(variant, {"fixed": {}, "random": {}, "complete": {}})
        fixed = [scores[c] for c in FIXED_ORDER if c in scores]
        if len(fixed) == len(FIXED_ORDER):
            fam["fixed"][seed] = statistics.fmean(fixed)
        rand = [v for c, v in scores.items() if c.startswith("random:")]
        if rand:
            fam["random"][seed] = statistics.fmean(rand)
        if "complete" in scores:
            fam["complete"][seed] = scores["complete"]
    return out


def summary(values: dict[int, float]) -> str:
    if not values:
        return "n/a"
    xs = list(values.values())
    std = f" ± {100 * statistics.stdev(xs):.2f}" if len(xs) > 1 else ""
    return f"{100 * statistics.fmean(xs):.2f}{std}"


def ranking(scores: dict[str, dict[str, dict[int, float]]], variants: list[str]) -> list[str]:
    means = {v: statistics.fmean(scores[v]["fixed"].values()) for v in variants if scores[v]["fixed"]}
    return sorted(means, key=lambda v: -means[v])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("untuned", type=Path)
    ap.add_argument("tuned", type=Path)
    ap.add_argument("--tuning", type=Path, default=None, help="the corekd tune folder (its tuning.json)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/rivals_tuned"))
    args = ap.parse_args()
    before, after = per_seed_scores(args.untuned), per_seed_scores(args.tuned)
    variants = [v for v in after if v in before]
    # the seeds every variant with a fixed Avg (not a one-modality student) has in both grids
    ranked = [v for v in variants if before[v]["fixed"] and after[v]["fixed"]]
    seeds = sorted(set.intersection(*(set(before[v]["fixed"]) & set(after[v]["fixed"]) for v in ranked)))
    for scores in (before, after):
        for v in variants:
            for fam in scores[v].values():
                for s in [s for s in fam if s not in seeds]:
                    del fam[s]
    rank_before, rank_after = ranking(before, variants), ranking(after, variants)
    tuning = json.loads((args.tuning / "tuning.json").read_text()) if args.tuning else None
    rows = []
    for v in variants:
        row = {
            "variant": v,
            **{f"untuned_{f}": summary(before[v][f]) for f in ("fixed", "random", "complete")},
            **{f"tuned_{f}": summary(after[v][f]) for f in ("fixed", "random", "complete")},
            "rank_untuned": rank_before.index(v) + 1 if v in rank_before else None,
            "rank_tuned": rank_after.index(v) + 1 if v in rank_after else None,
            "tuned_minus_untuned_fixed": format_difference(
                paired_difference(after[v]["fixed"], before[v]["fixed"]), "weighted_f1"
            ),
        }
        if v != REFERENCE and REFERENCE in variants:
            row["untuned_vs_corekd_fixed"] = format_difference(
                paired_difference(before[v]["fixed"], before[REFERENCE]["fixed"]), "weighted_f1"
            )
            row["tuned_vs_corekd_fixed"] = format_difference(
                paired_difference(after[v]["fixed"], after[REFERENCE]["fixed"]), "weighted_f1"
            )
        if tuning is not None and v in tuning["methods"]:
            trials = tuning["methods"][v]["trials"]
            first = next((t for t in trials if t.get("number") == 0), trials[0] if trials else None)
            best = tuning["methods"][v].get("best") or {}
            row["dev_config_settings"] = first.get("dev_score") if first else None
            row["dev_best"] = best.get("dev_score")
            row["best_params"] = best.get("params")
        rows.append(row)
    tau = kendall_tau(rank_before, rank_after)
    payload = {
        "what": "test weighted F1 (%) of each variant before and after corekd tune, mean ± std over seeds",
        "command": f"python benchmarks/tuned_vs_untuned.py {args.untuned} {args.tuned}"
        + (f" --tuning {args.tuning}" if args.tuning else ""),
        "seeds": seeds,
        "kendall_tau_fixed_avg_ranking": tau,
        "ranking_untuned": rank_before,
        "ranking_tuned": rank_after,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    head = (
        "| variant | fixed Avg untuned | fixed Avg tuned | tuned - untuned (paired) | random Avg untuned | "
        "random Avg tuned | rank untuned -> tuned | minus corekd, untuned | minus corekd, tuned |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['untuned_fixed']} | {r['tuned_fixed']} | {r['tuned_minus_untuned_fixed']} | "
            f"{r['untuned_random']} | {r['tuned_random']} | {r['rank_untuned']} -> {r['rank_tuned']} | "
            f"{r.get('untuned_vs_corekd_fixed', '')} | {r.get('tuned_vs_corekd_fixed', '')} |"
        )
    lines.append("")
    lines.append(
        f"Seeds {seeds}. Kendall's tau between the fixed-Avg rankings: {tau if tau is None else round(tau, 3)}."
    )
    lines.append(f"Command: `{payload['command']}`")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
