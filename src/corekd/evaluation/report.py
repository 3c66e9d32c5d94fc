"""``report.md``: tables of mean ± std over seeds, built from the flat records of ``results.json``.

Tables are views of the records; a new metric or table never touches training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from corekd.data.corpus import atomic_write

FIXED_ORDER = ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]
FIXED_AVG = "fixed:avg"


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Flat records -> a frame with one row per (variant, seed, condition), plus the per-seed fixed average."""
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "per_class_f1"} for r in records])
    if frame.empty:
        return frame
    fixed = frame[frame.condition.isin(FIXED_ORDER)]
    if fixed.condition.nunique() == len(FIXED_ORDER):
        numeric = [c for c in ("accuracy", "weighted_f1", "macro_f1", "uar") if c in frame]
        avg = fixed.groupby(["method", "variant", "seed"], as_index=False, sort=False)[numeric].mean()
        avg["condition"] = FIXED_AVG
        frame = pd.concat([frame, avg], ignore_index=True)
    return frame


def mean_std_table(frame: pd.DataFrame, metric: str, conditions: list[str]) -> pd.DataFrame:
    """Rows: variants (in first-seen order); columns: conditions; cells: (mean, std over seeds, n)."""
    sub = frame[frame.condition.isin(conditions)]
    stats = sub.groupby(["variant", "condition"], sort=False)[metric].agg(["mean", "std", "count"])
    variants = list(dict.fromkeys(frame.variant))
    table = pd.DataFrame(index=variants, columns=conditions, dtype=object)
    for (variant, condition), row in stats.iterrows():
        table.loc[variant, condition] = (row["mean"], 0.0 if np.isnan(row["std"]) else row["std"], int(row["count"]))
    return table


def _cell(value) -> str:
    if not isinstance(value, tuple):
        return "–"
    mean, std, _ = value
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def markdown_table(table: pd.DataFrame, headers: list[str], first: str = "method") -> str:
    lines = ["| " + " | ".join([first, *headers]) + " |", "|" + "---|" * (len(headers) + 1)]
    for variant, row in table.iterrows():
        lines.append("| " + " | ".join([str(variant), *(_cell(v) for v in row.tolist())]) + " |")
    return "\n".join(lines)


def _fixed_header(condition: str) -> str:
    return "{" + ",".join(condition.split(":")[1]) + "}"


def split_records(records: list[dict], split: str) -> list[dict]:
    """The records of one split; records without a ``split`` field (older runs) are test records."""
    return [r for r in records if r.get("split", "test") == split]


def dev_section(records: list[dict], trainings: list[dict], metric: str = "weighted_f1") -> list[str]:
    """Teacher and students on complete DEV views, per model best/selected epochs, and a warning when a
    student beats the teacher there (the teacher is then a weak reference to distil)."""
    dev = split_records(records, "dev")
    parts: list[str] = []
    if dev:
        frame = records_frame(dev)
        cols = [c for c in ("complete", FIXED_AVG) if c in set(frame.condition)]
        table = mean_std_table(frame, metric, cols)
        parts += [
            "## Dev split (complete views and fixed-condition average)",
            "",
            f"Every model on the dev split under the test conditions (dev masks drawn like the test masks), {metric}. "
            "The tables above are test tables; these are the figures defaults may be chosen on.",
            "",
            markdown_table(table, ["complete" if c == "complete" else "fixed Avg" for c in cols]),
            "",
        ]
        teacher = [v for v in table.index if v == "teacher"]
        if teacher and "complete" in cols and isinstance(table.loc["teacher", "complete"], tuple):
            t_mean = table.loc["teacher", "complete"][0]
            better = [
                (v, cell[0]) for v, cell in table["complete"].items()
                if v != "teacher" and isinstance(cell, tuple) and cell[0] > t_mean
            ]
            for v, mean in better:
                parts += [
                    f"**Warning:** student `{v}` beats the teacher on complete dev views "
                    f"({100 * mean:.2f} vs {100 * t_mean:.2f}): the teacher is a weak reference to distil.",
                    "",
                ]
    if trainings and "selected_epoch" in trainings[0]:
        lines = ["| model | seed | best dev epoch | selected epoch | epochs run |", "|---|---|---|---|---|"]
        for t in trainings:
            lines.append(f"| {t['variant']} | {t['seed']} | {t['best_epoch']} | {t['selected_epoch']} | {t['epochs_run']} |")
        parts += ["## Dev curves: best and selected epochs", "", *lines, ""]
    return parts


def render_report(meta: dict, records: list[dict], trainings: list[dict]) -> str:
    all_records, records = records, split_records(records, "test")
    frame = records_frame(records)
    seeds = meta.get("seeds", [])
    parts = [
        f"# Results: {meta.get('corpus', '')}",
        "",
        f"Mean ± sample std (ddof=1) over {len(seeds)} seed(s) {seeds}, in percent. Model selection on the dev "
        f"split only ({meta.get('selection', '')}). Evaluation masks: seed {meta.get('mask_seed')}, identical for "
        f"every method and seed; random missing uses the `{meta.get('random_scheme')}` scheme. "
        f"Test split: {meta['splits']['test']['dialogues']} dialogues, {meta['splits']['test']['utterances']} utterances.",
        "",
        f"Re-run: `{meta.get('command', '')}`",
        "",
    ]
    if frame.empty:
        return "\n".join(parts + ["No records."]) + "\n"
    fixed_cols = [c for c in FIXED_ORDER if c in set(frame.condition)]
    have_avg = FIXED_AVG in set(frame.condition)
    random_cols = sorted({c for c in frame.condition if c.startswith("random:")}, key=lambda c: float(c.split(":")[1]))
    for metric, title in (("weighted_f1", "weighted F1"), ("accuracy", "accuracy")):
        cols = fixed_cols + ([FIXED_AVG] if have_avg else []) + ["complete"]
        headers = [_fixed_header(c) for c in fixed_cols] + (["Avg"] if have_avg else []) + ["complete"]
        parts += [
            f"## Fixed missing modalities ({title})",
            "",
            "Columns name the modalities kept. Avg is the mean of the six per-condition figures, computed per seed "
            "(not MMIN's pooled test set replicated six times).",
            "",
            markdown_table(mean_std_table(frame, metric, cols), headers),
            "",
        ]
    for metric, title in (("weighted_f1", "weighted F1"), ("accuracy", "accuracy")):
        realised = frame[frame.condition.isin(random_cols)].groupby("condition")["missing_rate"].first()
        parts += [
            f"## Random missing, rate p ({title})",
            "",
            markdown_table(mean_std_table(frame, metric, random_cols), [c.split(":")[1] for c in random_cols], "method \\ p"),
            "",
            "Realised missing rate on the test masks: "
            + ", ".join(f"p={c.split(':')[1]}: {realised[c]:.3f}" for c in random_cols if c in realised)
            + ". With three modalities and at least one kept per utterance, at most 2/3 can be missing.",
            "",
        ]
    headline = "random:0.5" if "random:0.5" in set(frame.condition) else None
    if headline:
        per_class = pd.DataFrame([
            {"variant": r["variant"], **r["per_class_f1"]} for r in records if r["condition"] == headline
        ])
        names = [c for c in per_class.columns if c != "variant"]
        stats = per_class.groupby("variant", sort=False)[names].agg(["mean", "std"])
        lines = ["| method | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for variant in dict.fromkeys(per_class.variant):
            cells = [
                f"{100 * stats.loc[variant, (n, 'mean')]:.2f} ± {100 * np.nan_to_num(stats.loc[variant, (n, 'std')]):.2f}"
                for n in names
            ]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        parts += [f"## Per-class F1 at {headline}", "", *lines, ""]
    if trainings:
        train_frame = pd.DataFrame(trainings)
        score_col = next(c for c in train_frame.columns if c.startswith("dev_"))
        summary = train_frame.groupby("variant", sort=False).agg(
            best_epoch=("best_epoch", "mean"), epochs_run=("epochs_run", "mean"),
            dev=(score_col, "mean"), seconds=("seconds", "mean"),
        )
        lines = [f"| model | mean selected epoch | mean epochs run | mean {score_col} | mean seconds |", "|---|---|---|---|---|"]
        for variant, row in summary.iterrows():
            lines.append(
                f"| {variant} | {row.best_epoch:.1f} | {row.epochs_run:.1f} | {100 * row.dev:.2f} | {row.seconds:.1f} |"
            )
        parts += ["## Training", "", "Dev scores: the teacher on the complete dev view, students on dev views masked like "
                  "their training (the score each was selected on).", "", *lines, ""]
        if "seconds" in meta:
            parts += [f"Whole run: {meta['seconds']:.0f} s on {meta.get('device')} (torch {meta.get('torch')}).", ""]
    parts += dev_section(all_records, trainings)
    return "\n".join(parts)


def write_report(out_dir: str | Path, meta: dict, records: list[dict], trainings: list[dict]) -> Path:
    path = Path(out_dir) / "report.md"
    text = render_report(meta, records, trainings)
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path
