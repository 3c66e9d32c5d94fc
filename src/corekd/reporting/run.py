"""A run's report (``corekd run``, ``corekd report RUN``): ``report.md`` and ``report.html`` from the same blocks.

Built from ``results.json``'s meta, records and trainings and, when the run has one, ``analyses.json``: coverage
(a partial run says so), warnings, the dataset card, the test tables (fixed and random missing modalities, frame
missing, per-class F1 or every sentiment metric), training, ablations (paired over seeds), the dev split, the
defaults' provenance and the mechanism analyses. A run selected on the test split carries a warning above its
title and above every table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from corekd.evaluation.analyses import TARGET_SHARE, read_analyses
from corekd.evaluation.metrics import LOWER_IS_BETTER, PLAIN_METRICS
from corekd.reporting.blocks import (
    Block,
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Quote,
    Table,
    md,
    render_markdown,
    write_page,
)
from corekd.reporting.diagnostics import diagnostics_tables
from corekd.reporting.missingness import missingness_blocks
from corekd.reporting.stats import NOT_AVAILABLE, difference_table, format_difference
from corekd.reporting.tables import (
    FIXED_AVG,
    FIXED_ORDER,
    NOT_APPLICABLE,
    REGRESSION_HEADLINE,
    RELATIVE_DRIFT_TEXT,
    TABLE_METRICS,
    applicable,
    fixed_header,
    format_cell,
    grouped_table,
    mark_not_applicable,
    mean_std_table,
    method_not_applicable,
    rate_columns,
    records_frame,
    relative_drift_rows,
    score_text,
    split_records,
    students_above_teacher,
    table_block,
)

REFERENCE = "corekd"  # the ablations' reference variant: full CoRe-KD
ABLATION_CONDITIONS = ("fixed:avg", "random:0.5", "complete")
SELECTED_ON_TEST = (
    "> **WARNING: selected on the TEST split** (legacy `training.select_on: test`): these figures are "
    "optimistically biased and not comparable with dev-selected ones."
)


# ------------------------------------------------------------------ coverage and the selection banner
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
    return {
        "seeds": sorted(have),
        "per_seed": have,
        "missing": missing,
        "partial": bool(missing) or meta.get("status") in ("running", "interrupted"),
    }


def with_selection_banner(blocks: list[Block]) -> list[Block]:
    """The blocks with the legacy-selection warning (:data:`SELECTED_ON_TEST`) after the title and above every
    table."""
    banner = Quote(SELECTED_ON_TEST.removeprefix("> "))
    out: list[Block] = []
    for b in blocks:
        if isinstance(b, Table):
            out.append(banner)
        out.append(b)
        if isinstance(b, Heading) and b.level == 1:
            out.append(banner)
    return out


def with_test_selection_banner(text: str) -> str:
    """Markdown text with the legacy-selection warning above the title and above every table (the text form of
    :func:`with_selection_banner`, for Markdown that was not built from blocks)."""
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


# ------------------------------------------------------------------ sections
def card_section(meta: dict) -> list[Block]:
    """The dataset card of every modality (from the corpus), and how the dev split was made if carved."""
    cards = meta.get("modality_cards")
    if not cards:
        return []
    keys = ["extractor", "dim", "kind", "frame_rate", "aligned", "normalization"]
    rows = tuple((str(m), *(str(card.get(k, "")) for k in keys)) for m, card in cards.items())
    blocks: list[Block] = [Heading(2, "Dataset card"), Table(("modality", *keys), rows)]
    if meta.get("dev_split"):
        d = meta["dev_split"]
        blocks.append(
            Paragraph(
                f"Dev split: {md(d.get('method', ''))}, {d.get('dialogues')} dialogues (fraction "
                f"{d.get('fraction')}, seed {d.get('seed')}, speaker-disjoint: "
                f"{'yes' if d.get('speaker_disjoint') else 'no'})."
            )
        )
    return blocks


def nce_share_section(trainings: list[dict]) -> list[Block]:
    """Per variant that trained with NCE, the realised share of conflict targets among the real training utterances
    (the history's ``nce_share``, mean over epochs then seeds) and how often the cap bound."""
    shares: dict[str, list[float]] = {}
    capped: dict[str, list[float]] = {}
    for t in trainings:
        epochs = [h for h in t.get("history", []) if "nce_share" in h]
        if epochs:
            shares.setdefault(t["variant"], []).append(float(np.mean([h["nce_share"] for h in epochs])))
            capped.setdefault(t["variant"], []).append(float(np.mean([h.get("nce_capped", 0.0) for h in epochs])))
    if not shares:
        return []
    cells = [
        f"`{md(v)}` {np.mean(s):.3f} (cap bound in {100 * np.mean(capped[v]):.1f}% of batches)"
        for v, s in shares.items()
    ]
    return [
        Paragraph(
            "NCE conflict targets, realised share of the real training utterances (history `nce_share`, "
            "mean over epochs and seeds; `nce_prob` is the share asked for): " + "; ".join(cells) + "."
        )
    ]


def dev_value(column: str, value: float | None) -> str:
    """A training table's dev score: MAE/Corr as they are, the rest in percent; "n/a" where undefined."""
    if value is None or not np.isfinite(value):
        return NOT_APPLICABLE
    return score_text(value, column.removeprefix("dev_"))


def training_section(meta: dict, trainings: list[dict]) -> list[Block]:
    """Per model: mean selected epoch, epochs run, dev score and seconds; the NCE share; the whole run's time."""
    if not trainings:
        return []
    train_frame = pd.DataFrame(trainings)
    if "seconds" not in train_frame:
        train_frame["seconds"] = np.nan
    score_col = next(c for c in train_frame.columns if c.startswith("dev_"))
    train_frame[score_col] = train_frame[score_col].astype(float)  # None (undefined on dev) -> NaN
    summary = train_frame.groupby("variant", sort=False).agg(
        best_epoch=("best_epoch", "mean"),
        epochs_run=("epochs_run", "mean"),
        dev=(score_col, "mean"),
        seconds=("seconds", "mean"),
    )
    rows = tuple(
        (
            str(variant),
            f"{row.best_epoch:.1f}",
            f"{row.epochs_run:.1f}",
            dev_value(score_col, row.dev),
            f"{row.seconds:.1f}",
        )
        for variant, row in summary.iterrows()
    )
    blocks: list[Block] = [
        Heading(2, "Training"),
        Paragraph(
            "Dev scores: the teacher on the complete dev view, students on dev views masked like their training "
            "(the score each was selected on)."
        ),
        Table(("model", "mean selected epoch", "mean epochs run", f"mean {score_col}", "mean seconds"), rows),
        *nce_share_section(trainings),
    ]
    if "seconds" in meta:
        blocks.append(
            Paragraph(f"Whole run: {meta['seconds']:.0f} s on {meta.get('device')} (torch {meta.get('torch')}).")
        )
    return blocks


def ablation_variants(frame: pd.DataFrame) -> list[str]:
    """The CoRe-KD variants other than the reference (first-seen order); empty when the reference is absent."""
    if frame.empty or REFERENCE not in set(frame.variant):
        return []
    corekd = frame[frame.method == "corekd"]
    return [v for v in dict.fromkeys(corekd.variant) if v != REFERENCE]


def ablation_section(frames: dict[str, pd.DataFrame], metric: str) -> list[Block]:
    """The "Ablations" section: per split (``frames``: split -> records frame), every CoRe-KD variant minus full
    CoRe-KD (variant ``corekd``), paired over seeds. Empty when no split has a variant besides the reference."""
    blocks: list[Block] = []
    headers = {"fixed:avg": "fixed Avg", "random:0.5": "random 0.5", "complete": "complete"}
    for split, frame in frames.items():
        variants = ablation_variants(frame)
        if not variants:
            continue
        present = set(frame.condition)
        conditions = [c for c in ABLATION_CONDITIONS if c in present]
        table = difference_table(frame, REFERENCE, variants, metric, conditions)
        unit = "as they are" if metric in PLAIN_METRICS else "in percentage points"
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        if not blocks:
            blocks.append(Heading(2, "Ablations"))
        blocks += [
            Heading(3, f"{split.capitalize()} split ({metric})"),
            Paragraph(
                f"Each CoRe-KD variant minus full CoRe-KD (variant `{REFERENCE}`) on the {split.upper()} split, "
                f"{metric} {unit} ({better} is better): mean ± sample std of the per-seed paired differences, the "
                "number of seeds paired (n) and the p-value of a paired t-test over seeds "
                f"(scipy.stats.ttest_rel; {NOT_AVAILABLE} with fewer than two seeds or differences that do not "
                "vary)."
            ),
            Table(
                ("variant", *(headers[c] for c in conditions)),
                tuple((v, *(format_difference(table[v][c], metric) for c in conditions)) for v in variants),
            ),
        ]
    return blocks


def dev_section(records: list[dict], trainings: list[dict], metric: str = "weighted_f1") -> list[Block]:
    """Teacher and students on complete DEV views, per model best/selected epochs, and a warning when a
    student beats the teacher there (the teacher is then a weak reference to distil)."""
    dev = split_records(records, "dev")
    blocks: list[Block] = []
    if dev:
        frame = records_frame(dev)
        cols = [c for c in ("complete", FIXED_AVG) if c in set(frame.condition)]
        table = mark_not_applicable(mean_std_table(frame, metric, cols), dev)
        blocks += [
            Heading(2, "Dev split (complete views and fixed-condition average)"),
            Paragraph(
                f"Every model on the dev split under the test conditions (dev masks drawn like the test masks), "
                f"{metric}. The tables above are test tables; these are the figures defaults may be chosen on."
            ),
            table_block(table, ["complete" if c == "complete" else "fixed Avg" for c in cols], metric=metric),
        ]
        for v, mean, t_mean in students_above_teacher(table, metric in LOWER_IS_BETTER):
            blocks.append(
                Paragraph(
                    f"**Warning:** student `{v}` beats the teacher on complete dev views "
                    f"({score_text(mean, metric)} vs {score_text(t_mean, metric)}): the teacher is a "
                    "weak reference to distil."
                )
            )
        present = set(frame.condition)
        fixed_cols = [c for c in FIXED_ORDER if c in present] + ([FIXED_AVG] if FIXED_AVG in present else [])
        random_cols = rate_columns(present, "random")
        frame_cols = rate_columns(present | {r["condition"] for r in dev}, "frames")
        if fixed_cols:
            blocks += [
                Paragraph(f"Dev, fixed missing modalities ({metric}):"),
                table_block(
                    mark_not_applicable(mean_std_table(frame, metric, fixed_cols), dev),
                    ["Avg" if c == FIXED_AVG else fixed_header(c) for c in fixed_cols],
                    metric=metric,
                ),
            ]
        for kind, cols_ in (("random", random_cols), ("frame", frame_cols)):
            if cols_:
                blocks += [
                    Paragraph(f"Dev, {kind} missing at rate p ({metric}):"),
                    table_block(
                        mark_not_applicable(mean_std_table(frame, metric, cols_), dev),
                        [c.split(":")[1] for c in cols_],
                        "method \\ p",
                        metric=metric,
                    ),
                ]
    if trainings and "selected_epoch" in trainings[0]:
        rows = tuple(
            (str(t["variant"]), str(t["seed"]), str(t["best_epoch"]), str(t["selected_epoch"]), str(t["epochs_run"]))
            for t in trainings
        )
        blocks += [
            Heading(2, "Dev curves: best and selected epochs"),
            Table(("model", "seed", "best dev epoch", "selected epoch", "epochs run"), rows),
        ]
    return blocks


def provenance_section(entries: list[dict] | None) -> list[Block]:
    """The defaults this run used and the split each was fixed on (``meta.defaults_provenance``; nothing for old
    results)."""
    if not entries:
        return []
    rows = tuple((f"`{e['option']}`", f"`{e['value']}`", str(e["chosen_on"]), str(e["how"])) for e in entries)
    return [
        Heading(2, "Defaults this run used, and the split each was fixed on"),
        Paragraph(
            '"dev": chosen on dev figures only; "test": a test figure was seen before the choice; '
            '"none": no figure decided it.'
        ),
        Table(("option", "value", "fixed on", "how"), rows),
    ]


def mstate_drift_section(rows: list[dict]) -> list[Block]:
    """``mstate_drift``: one table per modality (rows: models; columns: conditions), then relative to no_kd."""
    if not rows:
        return []
    blocks: list[Block] = [
        Heading(3, "Modality-state drift to the teacher's complete-view modality states"),
        Paragraph(
            "For each modality m, the mean over the test utterances where the model observes m of the normalised "
            "distance ||s_m/|s_m| - t_m/|t_m|||^2 between the model's state h_m under each condition's view and "
            "the teacher's h_m on the complete view (what L_mstate anchors). Under a backbone whose h_m depends "
            "on the view, an observed modality's drift changes when another modality is hidden; conditions that "
            "hide m have no value (–)."
        ),
    ]
    for m in dict.fromkeys(r["modality"] for r in rows):
        mine = [r for r in rows if r["modality"] == m and r.get("utterances", 1) > 0]
        blocks += [Paragraph(f"Modality `{m}`:"), grouped_table(mine, "condition", "normalized", f"h_{m}")]
    rel = [
        r
        for r in rows
        if r.get("relative_to_no_kd") is not None
        and r["method"] not in ("no_kd", "teacher")
        and r.get("utterances", 1) > 0
    ]
    if rel:
        averaged: dict[tuple, list[float]] = {}
        for r in rel:  # per (model, seed, condition): the mean over the observed modalities
            averaged.setdefault((r["variant"], r["seed"], r["condition"]), []).append(r["relative_to_no_kd"])
        mean_rows = [{"variant": v, "condition": c, "value": float(np.mean(x))} for (v, _, c), x in averaged.items()]
        blocks += [
            Paragraph(
                "Relative to no_kd, (d - d_no_kd) / d_no_kd in percent per modality and seed, averaged "
                "over the observed modalities, then over seeds:"
            ),
            grouped_table(mean_rows, "condition", "value", "relative", 100.0, 1),
        ]
    return blocks


def analyses_section(payload: dict) -> list[Block]:
    """The "Mechanism analyses" section, from analyses.json's payload (mean ± sample std over seeds)."""
    pairs = payload.get("pairs", {})
    blocks: list[Block] = [
        Heading(2, "Mechanism analyses"),
        Paragraph(
            "From `analyses.json`, on the test split; mean ± sample std over seeds (one value: one seed). "
            'Definitions: METHOD.md, "Analyses".'
        ),
    ]
    drift_rows = payload.get("drift", [])
    if drift_rows:
        blocks += [
            Heading(3, "State drift to the teacher's complete-view state"),
            Paragraph(
                "Mean over real test utterances of the distance between the model's fused state under each "
                "condition's view (the test-table masks) and the teacher's fused state on the complete view. "
                "Normalised: ||s/|s| - t/|t|||^2 (what L_state anchors); the teacher's row compares its own "
                "incomplete views with its complete view."
            ),
            grouped_table(drift_rows, "condition", "normalized", "normalised"),
            Paragraph("Raw Euclidean distance ||s - t||:"),
            grouped_table(drift_rows, "condition", "raw", "raw"),
        ]
        rel = relative_drift_rows(drift_rows)
        if rel:
            blocks += [
                Paragraph(RELATIVE_DRIFT_TEXT),
                grouped_table(rel, "condition", "relative_to_no_kd", "relative", 100.0, 1),
            ]
    blocks += mstate_drift_section(payload.get("mstate_drift", []))
    rejection = payload.get("rejection", [])
    if rejection:
        blocks += [
            Heading(3, "Conflict rejection rate"),
            Paragraph(
                f"{pairs.get('targets')} target-donor pairs from the test split (seed {pairs.get('seed')}), the "
                "same for every method and seed: targets have their language observed, donors another label. "
                "The conflict view replaces the target's a and/or v (features and availability) with the donor's; "
                f"up to {int(100 * pairs.get('share_per_dialogue', TARGET_SHARE))}% of a dialogue's utterances "
                "are swapped in the same forward. A pair is rejected when the output on the conflict view is "
                "nearer the teacher's complete-view output for the target than the one for the donor. Rates in "
                "percent."
            ),
            grouped_table(rejection, "type", "rate", "method (swapped)", 100.0, 2),
        ]
    natural = payload.get("natural_conflicts", {})
    if natural.get("flagged") and payload.get("task") != "regression":  # regression: the notes say why not
        blocks += [
            Heading(3, "Natural conflicts"),
            Paragraph(
                f"{natural.get('utterances')} test utterances whose nonverbal channels show another "
                "emotion than their label (recorded by the synthetic generator). Accuracy and weighted F1 "
                "in percent."
            ),
        ]
        if natural.get("records"):
            records = natural["records"]
            blocks += [
                grouped_table(records, "condition", "accuracy", "accuracy", 100.0, 2),
                grouped_table(records, "condition", "weighted_f1", "weighted F1", 100.0, 2),
            ]
        else:
            blocks.append(Paragraph("No numbers: no flagged utterance in the test split."))
    diagnostics = diagnostics_tables(payload.get("modality_diagnostics", []))
    if diagnostics:
        blocks += [Heading(3, "Modality diagnostics"), *diagnostics]
    if payload.get("notes"):
        blocks.append(Bullets(tuple(str(n) for n in payload["notes"])))
    blocks += [Figure(fig, fig) for fig in payload.get("figures", [])]
    return blocks


# ------------------------------------------------------------------ the test tables and the whole report
def _intro(meta: dict, records: list[dict], cover: dict) -> list[Block]:
    seeds = cover["seeds"]
    n_seeds = len(seeds)
    test = (meta.get("splits") or {}).get("test") or {}
    spread = (
        f"Mean ± sample std (ddof=1) over {n_seeds} seed(s) {seeds}"
        if n_seeds != 1
        else f"Figures from one seed {seeds}, so no std (it is undefined for one seed)"
    )
    blocks: list[Block] = [
        Heading(1, f"Results: {md(meta.get('corpus', ''))}"),
        Paragraph(
            f"{spread}, in percent"
            + (
                " (MAE and Corr as they are; lower MAE is better). Task: sentiment regression in [-3, 3]. "
                if meta.get("task") == "regression"
                else ". "
            )
            + (
                "Model selection on the TEST split (legacy switch; see the warning). "
                if meta.get("select_on") == "test"
                else f"Model selection on the dev split only ({meta.get('selection', '')}). "
            )
            + f"Evaluation masks: seed {meta.get('mask_seed')}, identical for "
            f"every method and seed; random missing uses the `{meta.get('random_scheme')}` scheme. "
            f"Test split: {test.get('dialogues', '?')} dialogues, {test.get('utterances', '?')} utterances. "
            f'"{NOT_APPLICABLE}": nothing is observed under that condition (or it equals another), '
            "or the method is not scored under it (see below); it enters no average."
        ),
        Paragraph(f"Re-run: `{meta.get('command', '')}`"),
    ]
    if cover["partial"]:
        held = "; ".join(f"seed {s}: {', '.join(cover['per_seed'][s])}" for s in seeds) or "no records yet"
        lacking = ", ".join(f"{m} seed {s}" for s, m in cover["missing"]) or "none (the run did not finish writing)"
        blocks += [
            Heading(2, "Partial run"),
            Paragraph(
                f"This run is incomplete (planned: seeds {meta.get('seeds', [])}, methods "
                f"{meta.get('methods', [])}). Records exist for {held}. Missing: {lacking}. Figures below cover "
                "only what exists; a cell with fewer seeds than the others says (n=...). Finish it with "
                f"`{meta.get('command') or 'corekd run ...'} --resume`."
            ),
        ]
    if meta.get("warnings"):
        blocks += [Heading(2, "Warnings"), Bullets(tuple(md(w) for w in meta["warnings"]))]
    blocks += card_section(meta)
    exclusions = method_not_applicable(records)
    if exclusions:
        items = []
        for variant, conds in exclusions.items():
            reasons = "; ".join(dict.fromkeys(conds.values()))
            items.append(
                f"`{md(variant)}`: {len(conds)} condition(s) n/a: {md(reasons)}."
                + (
                    " Its fixed Avg is n/a (it would not average the same conditions)."
                    if set(conds) & set(FIXED_ORDER)
                    else ""
                )
            )
        blocks += [Heading(2, "Conditions a method is not scored under"), Bullets(tuple(items))]
    return blocks


def _headline_blocks(frame: pd.DataFrame, records: list[dict], n_seeds: int, regression: bool) -> list[Block]:
    """Every sentiment metric (regression) or the per-class F1 (classification) at random:0.5."""
    headline = "random:0.5" if "random:0.5" in set(frame.condition) else None
    if headline and regression:
        cells = {m: mean_std_table(frame, m, [headline])[headline] for m, _ in REGRESSION_HEADLINE}
        rows = tuple(
            (str(variant), *(format_cell(cells[m][variant], n_seeds, m) for m, _ in REGRESSION_HEADLINE))
            for variant in cells["mae"].index
        )
        return [
            Heading(2, f"All sentiment metrics at {headline}"),
            Paragraph(
                "MAE and Corr (Pearson r) as they are, the rest in percent. Acc-2/F1-2: negative vs "
                "non-negative; (non-zero): negative vs positive over utterances whose true score is not 0; F1 "
                "weighted; Acc-5/Acc-7: scores clipped to [-2, 2]/[-3, 3] and rounded. n/a: undefined on the "
                "data (Corr with a constant side; the non-zero pair when every true score is 0)."
            ),
            Table(("method", *(t for _, t in REGRESSION_HEADLINE)), rows),
        ]
    if headline:
        per_class = pd.DataFrame(
            [{"variant": r["variant"], **r["per_class_f1"]} for r in applicable(records) if r["condition"] == headline]
        )
        names = [c for c in per_class.columns if c != "variant"]
        stats = per_class.groupby("variant", sort=False)[names].agg(["mean", "std"])
        rows_: list[tuple[str, ...]] = []
        for variant in dict.fromkeys(per_class.variant):
            count = int((per_class.variant == variant).sum())
            rows_.append(
                (
                    str(variant),
                    *(
                        format_cell(
                            (
                                stats.loc[variant, (n, "mean")],
                                None if count < 2 else stats.loc[variant, (n, "std")],
                                count,
                            ),
                            n_seeds,
                        )
                        for n in names
                    ),
                )
            )
        return [Heading(2, f"Per-class F1 at {headline}"), Table(("method", *names), tuple(rows_))]
    return []


def report_blocks(meta: dict, records: list[dict], trainings: list[dict], analyses: dict | None = None) -> list[Block]:
    """The whole run report as blocks (``analyses``: analyses.json's payload, None when the run has none)."""
    blocks = _report_blocks(meta, records, trainings)
    if analyses is not None:
        blocks += analyses_section(analyses)
    return with_selection_banner(blocks) if meta.get("select_on") == "test" else blocks


def _report_blocks(meta: dict, records: list[dict], trainings: list[dict]) -> list[Block]:
    all_records, records = records, split_records(records, "test")
    frame = records_frame(records)
    cover = coverage(meta, records, trainings)
    n_seeds = len(cover["seeds"])
    blocks = _intro(meta, records, cover)
    if frame.empty:
        return blocks + [Paragraph("No records.")]
    conditions = {r["condition"] for r in records}
    fixed_cols = [c for c in FIXED_ORDER if c in conditions]
    have_avg = FIXED_AVG in set(frame.condition)
    random_cols = rate_columns(conditions, "random")
    na_fixed = [c for c in FIXED_ORDER if c in conditions and c not in set(frame.condition)]

    def table(metric: str, cols: list[str]) -> pd.DataFrame:
        return mark_not_applicable(mean_std_table(frame, metric, cols), records)

    regression = meta.get("task") == "regression"
    table_metrics = TABLE_METRICS["regression" if regression else "classification"]
    k = len(meta.get("modalities") or "lav")
    if fixed_cols:
        fixed_note = (
            "Columns name the modalities kept. Avg is the mean of the six per-condition figures, computed per "
            "seed (not MMIN's pooled test set replicated six times)"
            + (
                f"; here of the {6 - len(na_fixed)} applicable ones ({', '.join(na_fixed)} not applicable)."
                if na_fixed
                else "."
            )
        )
    else:
        fixed_note = (
            f"The corpus has {k} modalit{'y' if k == 1 else 'ies'}: no fixed-subset condition applies "
            "(keeping a proper subset needs at least two modalities); only complete views are scored."
        )
    if k == 1:
        random_note = (
            "With one modality nothing can go missing (at least one is kept per utterance): every random "
            "rate above 0 is the complete view, so it is n/a."
        )
    else:
        random_note = f"With {k} modalities and at least one kept per utterance, at most {k - 1}/{k} can be missing."
    for metric, title in table_metrics:
        cols = fixed_cols + ([FIXED_AVG] if have_avg else []) + ["complete"]
        headers = [fixed_header(c) for c in fixed_cols] + (["Avg"] if have_avg else []) + ["complete"]
        blocks += [
            Heading(2, f"Fixed missing modalities ({title})"),
            Paragraph(fixed_note),
            table_block(table(metric, cols), headers, n_expected=n_seeds, metric=metric),
        ]
    for metric, title in table_metrics:
        realised = frame[frame.condition.isin(random_cols)].groupby("condition")["missing_rate"].first()
        blocks += [
            Heading(2, f"Random missing, rate p ({title})"),
            table_block(
                table(metric, random_cols), [c.split(":")[1] for c in random_cols], "method \\ p", n_seeds, metric
            ),
            Paragraph(
                "Realised missing rate on the test masks: "
                + ", ".join(f"p={c.split(':')[1]}: {realised[c]:.3f}" for c in random_cols if c in realised)
                + ". "
                + random_note
            ),
        ]
    frame_cols = rate_columns(conditions, "frames")
    sequence = ", ".join(meta.get("sequence_modalities") or []) or "sequence modalities"
    for metric, title in table_metrics if frame_cols else ():
        scored = frame[frame.condition.isin(frame_cols)]
        realised = (
            scored.groupby("condition")["frame_missing_rate"].first()
            if "frame_missing_rate" in scored
            else pd.Series(dtype=float)
        )
        blocks += [
            Heading(2, f"Frame missing, rate p ({title})"),
            Paragraph(
                "Intra-modality frame missing: every modality observed, a share p of each sequence "
                f"modality's frames dropped per utterance ({sequence}; at least one frame kept while p < 1; at "
                "p = 1 every frame goes and the modality counts as missing), the same frames for every method and seed."
            ),
            table_block(
                table(metric, frame_cols), [c.split(":")[1] for c in frame_cols], "method \\ p", n_seeds, metric
            ),
            Paragraph(
                "Realised share of frames dropped on the test masks: "
                + ", ".join(f"p={c.split(':')[1]}: {realised[c]:.3f}" for c in frame_cols if c in realised)
                + "."
            ),
        ]
    blocks += missingness_blocks(
        frame,
        records,
        n_seeds,
        table_metrics,
        list(meta.get("modalities") or []),
        burst_length=meta.get("burst_length"),
    )
    blocks += _headline_blocks(frame, records, n_seeds, regression)
    blocks += training_section(meta, trainings)
    blocks += ablation_section(
        {s: records_frame(split_records(all_records, s)) for s in ("test", "dev")}, table_metrics[0][0]
    )
    blocks += dev_section(all_records, trainings, table_metrics[0][0])
    blocks += provenance_section(meta.get("defaults_provenance"))
    return blocks


def render_report(meta: dict, records: list[dict], trainings: list[dict], analyses: dict | None = None) -> str:
    """The run report as Markdown (``analyses``: analyses.json's payload, when the run has one)."""
    return render_markdown(report_blocks(meta, records, trainings, analyses))


def write_report(out_dir: str | Path, meta: dict, records: list[dict], trainings: list[dict]) -> Path:
    """Write the run's report.md and report.html (with its analyses.json, when it has one): the report.md path."""
    out_dir = Path(out_dir)
    blocks = report_blocks(meta, records, trainings, read_analyses(out_dir))
    md_path, _ = write_page(out_dir, blocks, f"corekd run: {meta.get('corpus', '')}")
    return md_path
