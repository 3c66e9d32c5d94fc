"""``report.md``: tables of mean ± std over seeds, built from the flat records of ``results.json``.

Tables are views of the records; a new metric or table never touches training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from corekd.evaluation.ablation import ablation_section
from corekd.evaluation.metrics import (
    LOWER_IS_BETTER,
    METRICS,
    PLAIN_METRICS,
    PRESENT_METRICS,
    REGRESSION_METRICS,
)
from corekd.evaluation.provenance import provenance_section
from corekd.files import atomic_write

FIXED_ORDER = ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]
FIXED_AVG = "fixed:avg"


NOT_APPLICABLE = "n/a"
# The two metrics each table pair shows, per task.
TABLE_METRICS = {
    "classification": (("weighted_f1", "weighted F1"), ("accuracy", "accuracy")),
    "regression": (("mae", "MAE"), ("acc2", "Acc-2, negative/non-negative")),
}
REGRESSION_HEADLINE = (("mae", "MAE"), ("corr", "Corr"), ("acc2", "Acc-2"), ("f1_2", "F1-2"),
                       ("acc2_nz", "Acc-2 (non-zero)"), ("f1_2_nz", "F1-2 (non-zero)"), ("acc5", "Acc-5"), ("acc7", "Acc-7"))
SCORE_COLUMNS = (*METRICS, *PRESENT_METRICS, *REGRESSION_METRICS)


def md(text: object) -> str:
    """``text`` safe inside a Markdown table cell: ``|`` escaped, line breaks as spaces."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def _applicable(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("applicable", True)]


def method_not_applicable(records: list[dict]) -> dict[str, dict[str, str]]:
    """variant -> {condition: reason} for the conditions a method is not scored under although another variant of
    the run is (``Method.not_applicable``, e.g. a student restricted to one modality subset); conditions the data
    rules out are not applicable to every variant and are not listed."""
    scored_somewhere = {r["condition"] for r in _applicable(records)}
    out: dict[str, dict[str, str]] = {}
    for r in records:
        if not r.get("applicable", True) and r["condition"] in scored_somewhere:
            out.setdefault(r["variant"], {}).setdefault(r["condition"], r.get("reason", ""))
    return out


def records_frame(records: list[dict]) -> pd.DataFrame:
    """Flat records -> a frame with one row per (variant, seed, condition), plus the per-seed fixed average.

    Records of conditions that are not applicable (nothing observed) carry no number and are left
    out; the fixed average is then the mean of the applicable fixed conditions. A variant that is
    not scored under some fixed condition other variants are scored under (a method's own
    not-applicable conditions) gets no fixed average: it would not average the same conditions.
    A metric undefined on the data (``None`` in the records) is NaN here; a fixed average over a condition where it
    is undefined is undefined too (NaN), and tables show "n/a" where no seed has a defined value.
    """
    present = {r["condition"] for r in records}
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "per_class_f1"} for r in _applicable(records)])
    if frame.empty:
        return frame
    numeric = [c for c in SCORE_COLUMNS if c in frame]
    frame[numeric] = frame[numeric].astype(float)  # None (undefined) -> NaN, also in an all-None column
    fixed = frame[frame.condition.isin(FIXED_ORDER)]
    partial = [v for v, conds in method_not_applicable(records).items() if set(conds) & set(FIXED_ORDER)]
    fixed = fixed[~fixed.variant.isin(partial)]
    if set(FIXED_ORDER) <= present and not fixed.empty:
        groups = fixed.groupby(["method", "variant", "seed"], as_index=False, sort=False)[numeric]
        avg = groups.mean()
        undefined = groups.count()[numeric].to_numpy() < groups.size()["size"].to_numpy()[:, None]
        avg[numeric] = avg[numeric].mask(undefined)  # undefined under one condition: the average is undefined
        avg["condition"] = FIXED_AVG
        frame = pd.concat([frame, avg], ignore_index=True)
    return frame


def mean_std_table(frame: pd.DataFrame, metric: str, conditions: list[str]) -> pd.DataFrame:
    """Rows: variants (in first-seen order); columns: conditions; cells: (mean, std over seeds, n).

    The std is the sample std (ddof=1): None for a single seed, where it is undefined. Seeds whose value is
    undefined (NaN) are left out of the mean (the cell then says n=...); a cell with no defined value is "n/a".
    """
    sub = frame[frame.condition.isin(conditions)]
    stats = sub.groupby(["variant", "condition"], sort=False)[metric].agg(["mean", "std", "count"])
    variants = list(dict.fromkeys(frame.variant))
    table = pd.DataFrame(index=variants, columns=conditions, dtype=object)
    for (variant, condition), row in stats.iterrows():
        if row["count"] == 0:
            table.loc[variant, condition] = NOT_APPLICABLE  # undefined on the data for every seed
            continue
        std = None if row["count"] < 2 or np.isnan(row["std"]) else float(row["std"])
        table.loc[variant, condition] = (float(row["mean"]), std, int(row["count"]))
    return table


def _cell(value, n_expected: int | None = None, metric: str | None = None) -> str:
    if not isinstance(value, tuple):
        return NOT_APPLICABLE if value == NOT_APPLICABLE else "–"
    mean, std, n = value
    if metric in PLAIN_METRICS:  # MAE and Pearson r read as they are, to 3 decimals
        text = f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"
    else:
        text = f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"
    return text if n_expected is None or n == n_expected else f"{text} (n={n})"


def markdown_table(table: pd.DataFrame, headers: list[str], first: str = "method", n_expected: int | None = None,
                   metric: str | None = None) -> str:
    lines = ["| " + " | ".join(md(h) for h in [first, *headers]) + " |", "|" + "---|" * (len(headers) + 1)]
    for variant, row in table.iterrows():
        lines.append("| " + " | ".join([md(variant), *(_cell(v, n_expected, metric) for v in row.tolist())]) + " |")
    return "\n".join(lines)


def _mark_not_applicable(table: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """Cells whose every record is not applicable read n/a (not "–", which means: no record)."""
    na = {(r["variant"], r["condition"]) for r in records if not r.get("applicable", True)}
    na |= {(v, FIXED_AVG) for v, conds in method_not_applicable(records).items() if set(conds) & set(FIXED_ORDER)}
    scored = {(r["variant"], r["condition"]) for r in _applicable(records)}
    for variant, condition in na - scored:
        if variant in table.index and condition in table.columns:
            table.loc[variant, condition] = NOT_APPLICABLE
    return table


def coverage(meta: dict, records: list[dict], trainings: list[dict]) -> dict:
    """What a run holds: seeds with records, per seed the methods present, and what is missing from the plan."""
    planned_seeds = list(meta.get("seeds") or [])
    planned_methods = list(meta.get("methods") or dict.fromkeys(r["variant"] for r in records))
    have: dict[int, list[str]] = {}
    for r in records:
        have.setdefault(r["seed"], [])
        if r["variant"] not in have[r["seed"]]:
            have[r["seed"]].append(r["variant"])
    missing = [(s, m) for s in planned_seeds for m in planned_methods if m not in have.get(s, [])]
    return {"seeds": sorted(have), "per_seed": have, "missing": missing,
            "partial": bool(missing) or meta.get("status") in ("running", "interrupted")}


def _dev_value(column: str, value: float | None) -> str:
    """A training table's dev score: MAE/Corr as they are, the rest in percent; "n/a" where undefined."""
    if value is None or not np.isfinite(value):
        return NOT_APPLICABLE
    return f"{value:.3f}" if column.removeprefix("dev_") in PLAIN_METRICS else f"{100 * value:.2f}"


def _fixed_header(condition: str) -> str:
    return "{" + ",".join(condition.split(":")[1]) + "}"


def rate_columns(conditions, kind: str) -> list[str]:
    """The ``<kind>:p`` conditions among ``conditions``, by rate."""
    return sorted((c for c in conditions if c.startswith(kind + ":")), key=lambda c: float(c.split(":")[1]))


def split_records(records: list[dict], split: str) -> list[dict]:
    """The records of one split; records without a ``split`` field (older runs) are test records."""
    return [r for r in records if r.get("split", "test") == split]


def students_above_teacher(table: pd.DataFrame, lower_is_better: bool = False) -> list[tuple[str, float, float]]:
    """(student, its mean, the teacher's mean) for every student whose mean on complete views is better than the
    teacher's (above it; below it when ``lower_is_better``, e.g. MAE).

    ``table``: :func:`mean_std_table` over the dev records, with a ``complete`` column.
    """
    if "teacher" not in table.index or "complete" not in table.columns:
        return []
    teacher = table.loc["teacher", "complete"]
    if not isinstance(teacher, tuple):
        return []
    return [(v, cell[0], teacher[0]) for v, cell in table["complete"].items()
            if v != "teacher" and isinstance(cell, tuple) and (cell[0] < teacher[0] if lower_is_better else cell[0] > teacher[0])]


def dev_section(records: list[dict], trainings: list[dict], metric: str = "weighted_f1") -> list[str]:
    """Teacher and students on complete DEV views, per model best/selected epochs, and a warning when a
    student beats the teacher there (the teacher is then a weak reference to distil)."""
    dev = split_records(records, "dev")
    parts: list[str] = []
    if dev:
        frame = records_frame(dev)
        cols = [c for c in ("complete", FIXED_AVG) if c in set(frame.condition)]
        table = _mark_not_applicable(mean_std_table(frame, metric, cols), dev)
        parts += [
            "## Dev split (complete views and fixed-condition average)",
            "",
            f"Every model on the dev split under the test conditions (dev masks drawn like the test masks), {metric}. "
            "The tables above are test tables; these are the figures defaults may be chosen on.",
            "",
            markdown_table(table, ["complete" if c == "complete" else "fixed Avg" for c in cols], metric=metric),
            "",
        ]
        for v, mean, t_mean in students_above_teacher(table, metric in LOWER_IS_BETTER):
            shown = (lambda x: f"{x:.3f}") if metric in PLAIN_METRICS else (lambda x: f"{100 * x:.2f}")  # noqa: E731
            parts += [
                f"**Warning:** student `{v}` beats the teacher on complete dev views "
                f"({shown(mean)} vs {shown(t_mean)}): the teacher is a weak reference to distil.",
                "",
            ]
        present = set(frame.condition)
        fixed_cols = [c for c in FIXED_ORDER if c in present] + ([FIXED_AVG] if FIXED_AVG in present else [])
        random_cols = sorted((c for c in present if c.startswith("random:")), key=lambda c: float(c.split(":")[1]))
        if fixed_cols:
            parts += [f"Dev, fixed missing modalities ({metric}):", "",
                      markdown_table(_mark_not_applicable(mean_std_table(frame, metric, fixed_cols), dev),
                                     ["Avg" if c == FIXED_AVG else _fixed_header(c) for c in fixed_cols], metric=metric),
                      ""]
        if random_cols:
            parts += [f"Dev, random missing at rate p ({metric}):", "",
                      markdown_table(_mark_not_applicable(mean_std_table(frame, metric, random_cols), dev),
                                     [c.split(":")[1] for c in random_cols], "method \\ p", metric=metric),
                      ""]
        frame_cols = rate_columns(present | {r["condition"] for r in dev}, "frames")
        if frame_cols:
            parts += [f"Dev, frame missing at rate p ({metric}):", "",
                      markdown_table(_mark_not_applicable(mean_std_table(frame, metric, frame_cols), dev),
                                     [c.split(":")[1] for c in frame_cols], "method \\ p", metric=metric),
                      ""]
    if trainings and "selected_epoch" in trainings[0]:
        lines = ["| model | seed | best dev epoch | selected epoch | epochs run |", "|---|---|---|---|---|"]
        for t in trainings:
            lines.append(f"| {t['variant']} | {t['seed']} | {t['best_epoch']} | {t['selected_epoch']} | {t['epochs_run']} |")
        parts += ["## Dev curves: best and selected epochs", "", *lines, ""]
    return parts


def nce_share_lines(trainings: list[dict]) -> list[str]:
    """Report lines: per variant that trained with NCE, the realised share of conflict targets among the real
    training utterances (the history's ``nce_share``, mean over epochs then seeds) and how often the cap bound."""
    shares: dict[str, list[float]] = {}
    capped: dict[str, list[float]] = {}
    for t in trainings:
        epochs = [h for h in t.get("history", []) if "nce_share" in h]
        if epochs:
            shares.setdefault(t["variant"], []).append(float(np.mean([h["nce_share"] for h in epochs])))
            capped.setdefault(t["variant"], []).append(float(np.mean([h.get("nce_capped", 0.0) for h in epochs])))
    if not shares:
        return []
    cells = [f"`{md(v)}` {np.mean(s):.3f} (cap bound in {100 * np.mean(capped[v]):.1f}% of batches)"
             for v, s in shares.items()]
    return ["NCE conflict targets, realised share of the real training utterances (history `nce_share`, mean over "
            "epochs and seeds; `nce_prob` is the share asked for): " + "; ".join(cells) + ".", ""]


def render_report(meta: dict, records: list[dict], trainings: list[dict]) -> str:
    all_records, records = records, split_records(records, "test")
    frame = records_frame(records)
    cover = coverage(meta, records, trainings)
    seeds = cover["seeds"]
    n_seeds = len(seeds)
    test = (meta.get("splits") or {}).get("test") or {}
    spread = (f"Mean ± sample std (ddof=1) over {n_seeds} seed(s) {seeds}" if n_seeds != 1
              else f"Figures from one seed {seeds}, so no std (it is undefined for one seed)")
    parts = [
        f"# Results: {md(meta.get('corpus', ''))}",
        "",
        f"{spread}, in percent"
        + (" (MAE and Corr as they are; lower MAE is better). Task: sentiment regression in [-3, 3]. "
           if meta.get("task") == "regression" else ". ")
        + ("Model selection on the TEST split (legacy switch; see the warning). " if meta.get("select_on") == "test"
           else f"Model selection on the dev split only ({meta.get('selection', '')}). ")
        + f"Evaluation masks: seed {meta.get('mask_seed')}, identical for "
        f"every method and seed; random missing uses the `{meta.get('random_scheme')}` scheme. "
        f"Test split: {test.get('dialogues', '?')} dialogues, {test.get('utterances', '?')} utterances. "
        f"\"{NOT_APPLICABLE}\": nothing is observed under that condition (or it equals another), "
        "or the method is not scored under it (see below); it enters no average.",
        "",
        f"Re-run: `{meta.get('command', '')}`",
        "",
    ]
    if cover["partial"]:
        held = "; ".join(f"seed {s}: {', '.join(cover['per_seed'][s])}" for s in seeds) or "no records yet"
        lacking = ", ".join(f"{m} seed {s}" for s, m in cover["missing"]) or "none (the run did not finish writing)"
        parts += [
            "## Partial run",
            "",
            f"This run is incomplete (planned: seeds {meta.get('seeds', [])}, methods {meta.get('methods', [])}). "
            f"Records exist for {held}. Missing: {lacking}. Figures below cover only what exists; a cell with "
            f"fewer seeds than the others says (n=...). Finish it with `{meta.get('command') or 'corekd run ...'} --resume`.",
            "",
        ]
    if meta.get("warnings"):
        parts += ["## Warnings", "", *(f"- {md(w)}" for w in meta["warnings"]), ""]
    parts += card_section(meta)
    exclusions = method_not_applicable(records)
    if exclusions:
        lines = []
        for variant, conds in exclusions.items():
            reasons = "; ".join(dict.fromkeys(conds.values()))
            lines.append(f"- `{md(variant)}`: {len(conds)} condition(s) n/a: {md(reasons)}."
                         + (" Its fixed Avg is n/a (it would not average the same conditions)." if set(conds) & set(FIXED_ORDER) else ""))
        parts += ["## Conditions a method is not scored under", "", *lines, ""]
    if frame.empty:
        return "\n".join(parts + ["No records."]) + "\n"
    conditions = {r["condition"] for r in records}
    fixed_cols = [c for c in FIXED_ORDER if c in conditions]
    have_avg = FIXED_AVG in set(frame.condition)
    random_cols = sorted({c for c in conditions if c.startswith("random:")}, key=lambda c: float(c.split(":")[1]))
    na_fixed = [c for c in FIXED_ORDER if c in conditions and c not in set(frame.condition)]
    table = lambda metric, cols: _mark_not_applicable(mean_std_table(frame, metric, cols), records)  # noqa: E731
    regression = meta.get("task") == "regression"
    table_metrics = TABLE_METRICS["regression" if regression else "classification"]
    k = len(meta.get("modalities") or "lav")
    if fixed_cols:
        fixed_note = ("Columns name the modalities kept. Avg is the mean of the six per-condition figures, computed per "
                      "seed (not MMIN's pooled test set replicated six times)"
                      + (f"; here of the {6 - len(na_fixed)} applicable ones ({', '.join(na_fixed)} not applicable)."
                         if na_fixed else "."))
    else:
        fixed_note = (f"The corpus has {k} modalit{'y' if k == 1 else 'ies'}: no fixed-subset condition applies "
                      "(keeping a proper subset needs at least two modalities); only complete views are scored.")
    if k == 1:
        random_note = ("With one modality nothing can go missing (at least one is kept per utterance): every random "
                       "rate above 0 is the complete view, so it is n/a.")
    else:
        random_note = (f"With {k} modalities and at least one kept per utterance, at most {k - 1}/{k} can be missing.")
    for metric, title in table_metrics:
        cols = fixed_cols + ([FIXED_AVG] if have_avg else []) + ["complete"]
        headers = [_fixed_header(c) for c in fixed_cols] + (["Avg"] if have_avg else []) + ["complete"]
        parts += [
            f"## Fixed missing modalities ({title})",
            "",
            fixed_note,
            "",
            markdown_table(table(metric, cols), headers, n_expected=n_seeds, metric=metric),
            "",
        ]
    for metric, title in table_metrics:
        realised = frame[frame.condition.isin(random_cols)].groupby("condition")["missing_rate"].first()
        parts += [
            f"## Random missing, rate p ({title})",
            "",
            markdown_table(table(metric, random_cols), [c.split(":")[1] for c in random_cols], "method \\ p", n_seeds, metric),
            "",
            "Realised missing rate on the test masks: "
            + ", ".join(f"p={c.split(':')[1]}: {realised[c]:.3f}" for c in random_cols if c in realised)
            + ". " + random_note,
            "",
        ]
    frame_cols = rate_columns(conditions, "frames")
    for metric, title in table_metrics if frame_cols else ():
        scored = frame[frame.condition.isin(frame_cols)]
        realised = (scored.groupby("condition")["frame_missing_rate"].first()
                    if "frame_missing_rate" in scored else pd.Series(dtype=float))
        parts += [
            f"## Frame missing, rate p ({title})",
            "",
            "Intra-modality frame missing: every modality observed, a share p of each sequence modality's frames "
            f"dropped per utterance ({', '.join(meta.get('sequence_modalities') or []) or 'sequence modalities'}; at "
            "least one frame kept), the same frames for every method and seed.",
            "",
            markdown_table(table(metric, frame_cols), [c.split(":")[1] for c in frame_cols], "method \\ p", n_seeds, metric),
            "",
            "Realised share of frames dropped on the test masks: "
            + ", ".join(f"p={c.split(':')[1]}: {realised[c]:.3f}" for c in frame_cols if c in realised) + ".",
            "",
        ]
    headline = "random:0.5" if "random:0.5" in set(frame.condition) else None
    if headline and regression:
        cells = {m: mean_std_table(frame, m, [headline])[headline] for m, _ in REGRESSION_HEADLINE}
        lines = ["| method | " + " | ".join(t for _, t in REGRESSION_HEADLINE) + " |", "|" + "---|" * (len(REGRESSION_HEADLINE) + 1)]
        for variant in cells["mae"].index:
            lines.append(f"| {md(variant)} | " + " | ".join(_cell(cells[m][variant], n_seeds, m) for m, _ in REGRESSION_HEADLINE) + " |")
        parts += [f"## All sentiment metrics at {headline}", "",
                  "MAE and Corr (Pearson r) as they are, the rest in percent. Acc-2/F1-2: negative vs non-negative; "
                  "(non-zero): negative vs positive over utterances whose true score is not 0; F1 weighted; Acc-5/Acc-7: "
                  "scores clipped to [-2, 2]/[-3, 3] and rounded. n/a: undefined on the data (Corr with a constant "
                  "side; the non-zero pair when every true score is 0).", "", *lines, ""]
    elif headline:
        per_class = pd.DataFrame([
            {"variant": r["variant"], **r["per_class_f1"]} for r in _applicable(records) if r["condition"] == headline
        ])
        names = [c for c in per_class.columns if c != "variant"]
        stats = per_class.groupby("variant", sort=False)[names].agg(["mean", "std"])
        lines = ["| method | " + " | ".join(md(n) for n in names) + " |", "|" + "---|" * (len(names) + 1)]
        for variant in dict.fromkeys(per_class.variant):
            count = int((per_class.variant == variant).sum())
            cells = [
                _cell((stats.loc[variant, (n, "mean")], None if count < 2 else stats.loc[variant, (n, "std")], count),
                      n_seeds)
                for n in names
            ]
            lines.append(f"| {md(variant)} | " + " | ".join(cells) + " |")
        parts += [f"## Per-class F1 at {headline}", "", *lines, ""]
    if trainings:
        train_frame = pd.DataFrame(trainings)
        if "seconds" not in train_frame:
            train_frame["seconds"] = np.nan
        score_col = next(c for c in train_frame.columns if c.startswith("dev_"))
        train_frame[score_col] = train_frame[score_col].astype(float)  # None (undefined on dev) -> NaN
        summary = train_frame.groupby("variant", sort=False).agg(
            best_epoch=("best_epoch", "mean"), epochs_run=("epochs_run", "mean"),
            dev=(score_col, "mean"), seconds=("seconds", "mean"),
        )
        lines = [f"| model | mean selected epoch | mean epochs run | mean {score_col} | mean seconds |", "|---|---|---|---|---|"]
        for variant, row in summary.iterrows():
            lines.append(
                f"| {md(variant)} | {row.best_epoch:.1f} | {row.epochs_run:.1f} | {_dev_value(score_col, row.dev)} | {row.seconds:.1f} |"
            )
        parts += ["## Training", "", "Dev scores: the teacher on the complete dev view, students on dev views masked like "
                  "their training (the score each was selected on).", "", *lines, "", *nce_share_lines(trainings)]
        if "seconds" in meta:
            parts += [f"Whole run: {meta['seconds']:.0f} s on {meta.get('device')} (torch {meta.get('torch')}).", ""]
    parts += ablation_section({s: records_frame(split_records(all_records, s)) for s in ("test", "dev")},
                              table_metrics[0][0])
    parts += dev_section(all_records, trainings, table_metrics[0][0])
    parts += provenance_section(meta.get("defaults_provenance"))
    text = "\n".join(parts)
    return with_test_selection_banner(text) if meta.get("select_on") == "test" else text


SELECTED_ON_TEST = ("> **WARNING: selected on the TEST split** (legacy `training.select_on: test`): these figures are "
                    "optimistically biased and not comparable with dev-selected ones.")


def with_test_selection_banner(text: str) -> str:
    """The report with the legacy-selection warning above the title and above every table."""
    out: list[str] = []
    previous = ""
    for line in text.split("\n"):
        if line.startswith("|") and not previous.startswith("|"):
            out += [SELECTED_ON_TEST, ""]
        out.append(line)
        if line.startswith("# "):
            out += ["", SELECTED_ON_TEST]
        previous = line
    return "\n".join(out)


def card_section(meta: dict) -> list[str]:
    """The dataset card of every modality (from the corpus), and how the dev split was made if carved."""
    cards = meta.get("modality_cards")
    if not cards:
        return []
    keys = ["extractor", "dim", "kind", "frame_rate", "aligned", "normalization"]
    lines = ["| modality | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for m, card in cards.items():
        lines.append(f"| {md(m)} | " + " | ".join(md(card.get(k, "")) for k in keys) + " |")
    parts = ["## Dataset card", "", *lines, ""]
    if meta.get("dev_split"):
        d = meta["dev_split"]
        parts += [f"Dev split: {md(d.get('method', ''))}, {d.get('dialogues')} dialogues (fraction {d.get('fraction')}, "
                  f"seed {d.get('seed')}, speaker-disjoint: {'yes' if d.get('speaker_disjoint') else 'no'}).", ""]
    return parts


def write_report(out_dir: str | Path, meta: dict, records: list[dict], trainings: list[dict]) -> Path:
    from corekd.evaluation.analyses import analyses_section, read_analyses

    path = Path(out_dir) / "report.md"
    text = render_report(meta, records, trainings)
    analyses = read_analyses(out_dir)  # the run's mechanism analyses, when it has them
    if analyses is not None:
        section = "\n".join(analyses_section(analyses))
        if meta.get("select_on") == "test":
            section = with_test_selection_banner(section)
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write(path, lambda p: Path(p).write_text(text))
    return path
