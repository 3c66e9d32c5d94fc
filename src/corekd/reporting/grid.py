"""The report of a comparison grid (``corekd compare``): ``report.md`` and a self-contained ``report.html``.

A pure function of the grid folder's files (``results.json``, ``analyses.json``, the cells' ``embedding.npz``):
the figures are drawn into ``figures/``, then the report is built ONCE as a list of blocks (heading, paragraph,
bullets, table, figure) and rendered twice, to Markdown and to HTML, so both always hold the same numbers.
The test tables are built with the run report's own pieces (:mod:`corekd.reporting.tables`), and the paired tests
with :mod:`corekd.reporting.stats`, so a grid cell reads exactly like the same records in a ``corekd run`` report.
docs/compare.md, "The grid report".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from corekd.errors import CorekdError
from corekd.evaluation.analyses import TSNE_CONDITION, add_relative_to_no_kd
from corekd.evaluation.metrics import LOWER_IS_BETTER, PLAIN_METRICS
from corekd.files import ANALYSES_FILE, GRID_ANALYSES_FORMAT, GRID_FORMAT, RESULTS_FILE, atomic_write
from corekd.reporting.blocks import (
    Block,
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Table,
    write_page,
)
from corekd.reporting.diagnostics import diagnostics_tables
from corekd.reporting.figures import (
    curve_figure,
    drift_figure,
    pyplot,
    rejection_figure,
    tsne_figure,
)
from corekd.reporting.missingness import missingness_blocks
from corekd.reporting.realistic import realistic_blocks
from corekd.reporting.stats import (
    curve_auc,
    format_p,
    holm,
    paired_difference,
    per_seed,
)
from corekd.reporting.tables import (
    FIXED_AVG,
    FIXED_ORDER,
    NOT_APPLICABLE,
    RELATIVE_DRIFT_TEXT,
    TABLE_METRICS,
    condition_order,
    fixed_header,
    format_cell,
    grouped_table,
    mark_not_applicable,
    mean_std_table,
    rate_columns,
    records_frame,
    relative_drift_rows,
    score_text,
    split_records,
    students_above_teacher,
    table_block,
    values_cell,
)

TASKS = ("classification", "regression")


# ------------------------------------------------------------------ reading the grid folder
@dataclass
class Grid:
    """A grid folder's contents, checked."""

    root: Path
    meta: dict
    records: list[dict]
    trainings: list[dict]
    analyses: dict | None  # None: the folder has no analyses.json
    variants: list[str] = field(default_factory=list)  # config order, then any only the records name
    methods: dict[str, str] = field(default_factory=dict)  # variant -> method


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorekdError("missing: not a corekd grid folder (no results.json)", path=path) from None
    except (OSError, ValueError) as exc:
        raise CorekdError(f"unreadable JSON ({exc})", path=path) from None


def _need(ok: bool, path: Path, where: str, expected: str) -> None:
    if not ok:
        raise CorekdError(f"expected {expected}", path=path, field=where)


def is_grid_folder(path: str | Path) -> bool:
    """True when ``path`` holds a results.json written by ``corekd compare`` (``"format": "corekd-grid"``)."""
    file = Path(path) / RESULTS_FILE
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(payload, dict) and payload.get("format") == GRID_FORMAT


def read_grid(out_dir: str | Path) -> Grid:
    """The grid folder's results.json and analyses.json (None when absent), checked field by field."""
    root = Path(out_dir)
    path = root / RESULTS_FILE
    payload = _load(path)
    _need(isinstance(payload, dict), path, "(top level)", "a JSON object")
    _need(payload.get("format") == GRID_FORMAT, path, "format", f'"{GRID_FORMAT}" (a folder written by corekd compare)')
    _need(payload.get("version") == 1, path, "version", "1")
    meta = payload.get("meta")
    _need(isinstance(meta, dict), path, "meta", "an object")
    corpora = meta.get("corpora")
    _need(isinstance(corpora, dict) and bool(corpora), path, "meta.corpora", "an object of corpus key -> corpus info")
    for key, info in corpora.items():
        _need(isinstance(info, dict), path, f"meta.corpora.{key}", "an object")
        _need(info.get("task", "classification") in TASKS, path, f"meta.corpora.{key}.task", " or ".join(TASKS))
    seeds = meta.get("seeds", [])
    _need(isinstance(seeds, list) and all(isinstance(s, int) for s in seeds), path, "meta.seeds", "a list of integers")
    variants_meta = meta.get("variants", [])
    _need(isinstance(variants_meta, list), path, "meta.variants", "a list")
    methods: dict[str, str] = {}
    for i, v in enumerate(variants_meta):
        _need(
            isinstance(v, dict) and isinstance(v.get("variant"), str) and isinstance(v.get("method"), str),
            path,
            f"meta.variants[{i}]",
            'an object with string "variant" and "method"',
        )
        methods[v["variant"]] = v["method"]
    reference = meta.get("reference")
    _need(reference is None or isinstance(reference, str), path, "meta.reference", "a variant name or null")
    records = payload.get("records")
    _need(isinstance(records, list), path, "records", "a list")
    for i, r in enumerate(records):
        where = f"records[{i}]"
        _need(isinstance(r, dict), path, where, "an object")
        _need(r.get("corpus") in corpora, path, f"{where}.corpus", f"one of the corpus keys {sorted(corpora)}")
        for name in ("method", "variant", "condition"):
            _need(isinstance(r.get(name), str), path, f"{where}.{name}", "a string")
        _need(isinstance(r.get("seed"), int), path, f"{where}.seed", "an integer")
        _need(r.get("split", "test") in ("dev", "test"), path, f"{where}.split", '"dev" or "test"')
        if r.get("applicable", True):
            for metric, _ in TABLE_METRICS[corpora[r["corpus"]].get("task", "classification")]:
                value = r.get(metric)
                _need(
                    isinstance(value, (int, float)) and not isinstance(value, bool),
                    path,
                    f"{where}.{metric}",
                    "a number (an applicable record carries its scores)",
                )
        methods.setdefault(r["variant"], r["method"])
    trainings = payload.get("trainings", [])
    _need(isinstance(trainings, list), path, "trainings", "a list")
    return Grid(root, meta, records, trainings, read_grid_analyses(root), list(methods), methods)


def read_grid_analyses(out_dir: str | Path) -> dict | None:
    """analyses.json of a grid folder, checked; None when the folder has none."""
    path = Path(out_dir) / ANALYSES_FILE
    if not path.is_file():
        return None
    payload = _load(path)
    _need(isinstance(payload, dict), path, "(top level)", "a JSON object")
    _need(payload.get("format") == GRID_ANALYSES_FORMAT, path, "format", f'"{GRID_ANALYSES_FORMAT}"')
    corpora = payload.get("corpora", {})
    _need(isinstance(corpora, dict), path, "corpora", "an object of corpus key -> analyses payload")
    required = {
        "drift": ("variant", "method", "seed", "condition", "normalized"),
        "rejection": ("variant", "seed", "type", "rate"),
    }
    for key, p in corpora.items():
        _need(isinstance(p, dict), path, f"corpora.{key}", "an object (a corekd run's analyses payload)")
        for name, keys in required.items():
            rows = p.get(name, [])
            _need(isinstance(rows, list), path, f"corpora.{key}.{name}", "a list")
            for i, row in enumerate(rows):
                _need(
                    isinstance(row, dict) and all(k in row for k in keys),
                    path,
                    f"corpora.{key}.{name}[{i}]",
                    "an object with " + ", ".join(keys),
                )
        natural = p.get("natural_conflicts", {})
        _need(
            isinstance(natural, dict) and isinstance(natural.get("records", []), list),
            path,
            f"corpora.{key}.natural_conflicts",
            'an object with a "records" list',
        )
        _need(isinstance(p.get("notes", []), list), path, f"corpora.{key}.notes", "a list of strings")
    embeddings = payload.get("embeddings", {})
    _need(
        isinstance(embeddings, dict) and all(isinstance(v, dict) for v in embeddings.values()),
        path,
        "embeddings",
        "an object of corpus key -> {variant: relative path of an embedding.npz}",
    )
    _need(isinstance(payload.get("figures", []), list), path, "figures", "a list of relative paths")
    return payload


# ------------------------------------------------------------------ per-corpus numbers
def _primary(task: str) -> str:
    return TABLE_METRICS[task][0][0]


def _corpus_records(grid: Grid, key: str) -> list[dict]:
    """The corpus key's records in config order (variant, then seed), whatever order the cells finished in."""
    order = {v: i for i, v in enumerate(grid.variants)}
    recs = [r for r in grid.records if r["corpus"] == key]
    return sorted(recs, key=lambda r: (order[r["variant"]], r["seed"]))


def curve_aucs(test_records: list[dict], metric: str) -> tuple[list[str], dict[str, dict[int, float]], list[str]]:
    """(random conditions used, variant -> {seed: AUC}, notes) over the test records of one corpus.

    The curve spans every random rate some variant is scored at; a (variant, seed) without a score at one of
    them gets no AUC (a note says so), since its area would cover another span.
    """
    scored = [r for r in test_records if r.get("applicable", True) and r["condition"].startswith("random:")]
    conditions = rate_columns({r["condition"] for r in scored}, "random")
    if len(conditions) < 2:
        return conditions, {}, ["fewer than two random rates scored: no area under the missing-rate curve"]
    scores: dict[tuple[str, int], dict[str, float]] = {}
    for r in scored:
        scores.setdefault((r["variant"], r["seed"]), {})[r["condition"]] = float(r[metric])
    for r in test_records:  # a (variant, seed) whose every random record is n/a still gets its note
        if r["condition"].startswith("random:"):
            scores.setdefault((r["variant"], r["seed"]), {})
    out: dict[str, dict[int, float]] = {}
    notes: list[str] = []
    for (variant, seed), by_condition in scores.items():
        lacking = [c for c in conditions if c not in by_condition]
        if lacking:
            notes.append(f"`{variant}` seed {seed}: not scored at {', '.join(lacking)}: no AUC")
            continue
        rates = [float(c.split(":")[1]) for c in conditions]
        out.setdefault(variant, {})[seed] = curve_auc(rates, [by_condition[c] for c in conditions])
    return conditions, out, notes


def _per_seed(frame: pd.DataFrame, variants: list[str], condition: str, metric: str) -> dict[str, dict[int, float]]:
    """variant -> {seed: score} under ``condition``, for the variants with a defined score."""
    out = {v: per_seed(frame, v, condition, metric) for v in variants}
    return {v: values for v, values in out.items() if values}


def _analysis_table(
    rows: list[dict],
    key: str,
    value: str,
    variants: list[str],
    columns: list[str],
    first: str,
    scale: float = 1.0,
    digits: int = 3,
) -> Table:
    """An analyses table as the run report prints it, rows in config order."""
    return grouped_table(rows, key, value, first, scale, digits, variants=variants, columns=columns)


# ------------------------------------------------------------------ sections
def _intro(grid: Grid) -> list[Block]:
    meta = grid.meta
    cells = meta.get("cells") or {}
    seeds = meta.get("seeds") or sorted({r["seed"] for r in grid.records})
    run_info = [f"Status: {meta.get('status', '?')}, {cells.get('done', '?')}/{cells.get('total', '?')} cells done"]
    if meta.get("backend"):
        run_info.append(f"backend {meta['backend']} with {meta.get('workers', '?')} worker(s)")
    if isinstance(meta.get("seconds"), (int, float)):
        run_info.append(f"{meta['seconds']:.0f} s")
    blocks: list[Block] = [
        Heading(1, f"Comparison grid: {meta.get('name', '')}"),
        Paragraph(
            f"{len(meta['corpora'])} corpus key(s) x {len(grid.variants)} method variant(s) x {len(seeds)} "
            f"seed(s) {seeds}; every cell is one `corekd run` unit (one variant, one seed, one corpus). "
            + ", ".join(run_info)
            + "."
        ),
        Paragraph(f"Re-run: `{meta.get('command', '')}`"),
        Bullets(
            tuple(
                f"`{v}`: method {grid.methods[v]}" + (" (the reference)" if v == meta.get("reference") else "")
                for v in grid.variants
            )
        ),
        Paragraph(
            "Tables: mean ± sample std (ddof=1) over seeds, in percent (MAE and Corr as they are; lower MAE "
            'is better); a cell with fewer seeds than planned says (n=...); "–": no record; '
            f'"{NOT_APPLICABLE}": nothing is observed under that condition, or the method is not scored '
            "under it (it enters no average). Numbers are computed exactly as `corekd run`'s report computes "
            "them."
        ),
    ]
    if meta.get("status") == "partial" or (cells and cells.get("done") != cells.get("total")):
        blocks += [
            Heading(2, "Partial grid"),
            Paragraph(
                f"Only {cells.get('done', '?')} of {cells.get('total', '?')} cells are done: the tables "
                "cover what exists, and cells with fewer seeds say (n=...). Paired tests use the seeds "
                "both variants have."
            ),
        ]
    if grid.analyses is None:
        blocks.append(
            Paragraph(
                f"No {ANALYSES_FILE} in this folder: the report has no mechanism analyses (drift, "
                "rejection, natural conflicts) and no drift, rejection or t-SNE figures."
            )
        )
    return blocks


def _test_blocks(task: str, recs: list[dict], n_seeds: int, modalities: int) -> list[Block]:
    test = split_records(recs, "test")
    frame = records_frame(test)
    if frame.empty:
        return [Paragraph("No test records.")]
    conditions = {r["condition"] for r in test}
    fixed_cols = [c for c in FIXED_ORDER if c in conditions]
    have_avg = FIXED_AVG in set(frame.condition)
    random_cols = rate_columns(conditions, "random")
    frame_cols = rate_columns(conditions, "frames")
    blocks: list[Block] = []
    for metric, title in TABLE_METRICS[task]:
        cols = fixed_cols + ([FIXED_AVG] if have_avg else []) + ["complete"]
        headers = [fixed_header(c) for c in fixed_cols] + (["Avg"] if have_avg else []) + ["complete"]
        blocks += [
            Heading(3, f"Test, fixed missing modalities ({title})"),
            Paragraph(
                "Columns name the modalities kept; Avg is the per-seed mean of the applicable fixed "
                "conditions, then averaged over seeds."
                if fixed_cols
                else f"No fixed-subset condition is scored ({modalities} modalit"
                f"{'y' if modalities == 1 else 'ies'}; keeping a proper subset needs at least two): "
                "complete views only."
            ),
            table_block(
                mark_not_applicable(mean_std_table(frame, metric, cols), test), headers, "method", n_seeds, metric
            ),
        ]
    realised = (
        frame[frame.condition.isin(random_cols)].groupby("condition")["missing_rate"].first()
        if "missing_rate" in frame
        else pd.Series(dtype=float)
    )
    for metric, title in TABLE_METRICS[task] if random_cols else ():
        blocks += [
            Heading(3, f"Test, random missing at rate p ({title})"),
            table_block(
                mark_not_applicable(mean_std_table(frame, metric, random_cols), test),
                [c.split(":")[1] for c in random_cols],
                "method \\ p",
                n_seeds,
                metric,
            ),
        ]
    if random_cols:
        blocks.append(
            Paragraph(
                "Realised missing rate on the test masks: "
                + ", ".join(f"p={c.split(':')[1]}: {realised[c]:.3f}" for c in random_cols if c in realised)
                + "."
            )
        )
    for metric, title in TABLE_METRICS[task] if frame_cols else ():
        blocks += [
            Heading(3, f"Test, frame missing at rate p ({title})"),
            Paragraph(
                "Every modality observed, a share p of each sequence modality's frames dropped per "
                "utterance (at p = 1 every frame, and the modality counts as missing; the same frames for every "
                "method and seed)."
            ),
            table_block(
                mark_not_applicable(mean_std_table(frame, metric, frame_cols), test),
                [c.split(":")[1] for c in frame_cols],
                "method \\ p",
                n_seeds,
                metric,
            ),
        ]
    blocks += missingness_blocks(frame, test, n_seeds, TABLE_METRICS[task], [], level=3, prefix="Test, ")
    return blocks


def _dev_blocks(task: str, recs: list[dict], n_seeds: int) -> list[Block]:
    dev = split_records(recs, "dev")
    frame = records_frame(dev)
    if frame.empty:
        return [Heading(3, "Dev split"), Paragraph("No dev records.")]
    metric = _primary(task)
    present = set(frame.condition)
    cols = [c for c in ("complete", FIXED_AVG) if c in present] + rate_columns({r["condition"] for r in dev}, "random")
    headers = [
        "complete" if c == "complete" else "fixed Avg" if c == FIXED_AVG else f"random {c.split(':')[1]}" for c in cols
    ]
    table = mark_not_applicable(mean_std_table(frame, metric, cols), dev)
    blocks: list[Block] = [
        Heading(3, f"Dev split ({dict(TABLE_METRICS[task])[metric]})"),
        Paragraph(
            "The dev split under the test conditions (dev masks drawn like the test masks): the figures "
            "defaults may be chosen on; the tables above are test tables."
        ),
        table_block(table, headers, "method", n_seeds, metric),
    ]
    above = students_above_teacher(table, metric in LOWER_IS_BETTER)
    for v, mean, t_mean in above:
        blocks.append(
            Paragraph(
                f"**Warning:** student `{v}` beats the teacher on complete dev views "
                f"({score_text(mean, metric)} vs {score_text(t_mean, metric)}): the teacher is a weak "
                "reference to distil."
            )
        )
    if not above and "teacher" in table.index:
        blocks.append(Paragraph("No student beats the teacher on complete dev views."))
    return blocks


def _auc_blocks(
    task: str,
    aucs: dict[str, dict[int, float]],
    conditions: list[str],
    notes: list[str],
    variants: list[str],
    n_seeds: int,
) -> list[Block]:
    metric = _primary(task)
    title = dict(TABLE_METRICS[task])[metric]
    blocks: list[Block] = [Heading(3, f"Area under the missing-rate curve ({title})")]
    if aucs:
        lo, hi = conditions[0].split(":")[1], conditions[-1].split(":")[1]
        blocks += [
            Paragraph(
                f"Per variant and seed: the trapezoidal area under the test {title} against the random "
                f"missing rate over p = {', '.join(c.split(':')[1] for c in conditions)}, divided by the "
                f"span {lo}..{hi}, so it reads as the curve's mean score"
                + (" (MAE: lower is better)" if metric in LOWER_IS_BETTER else " in points")
                + "; then mean ± sample std over seeds."
            ),
            Table(
                ("method", "AUC / span"),
                tuple((v, values_cell(aucs[v].values(), n_seeds, metric)) for v in variants if v in aucs),
            ),
        ]
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


def _paired_blocks(grid: Grid, task: str, frame: pd.DataFrame, aucs: dict[str, dict[int, float]]) -> list[Block]:
    reference = grid.meta.get("reference")
    metric = _primary(task)
    title = dict(TABLE_METRICS[task])[metric]
    blocks: list[Block] = [Heading(3, "CoRe-KD against each other method")]
    if reference is None:
        return blocks + [
            Paragraph("No reference variant in this grid (`meta.reference` is null): no paired comparison.")
        ]
    have = set(frame.variant) if not frame.empty else set()
    if reference not in have:
        return blocks + [
            Paragraph(f"The reference `{reference}` has no test records for this corpus: no paired comparison.")
        ]
    others = [v for v in grid.variants if v != reference and v in have | set(aucs)]
    summaries = [
        (f"fixed Avg {title}", _per_seed(frame, grid.variants, FIXED_AVG, metric)),
        (f"complete {title}", _per_seed(frame, grid.variants, "complete", metric)),
        (f"random-curve AUC {title}", aucs),
    ]
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    blocks.append(
        Paragraph(
            f"Reference: `{reference}`. Per seed both have, the difference `{reference}` minus the other variant; the "
            f"mean ± sample std of those differences ({'as they are' if metric in PLAIN_METRICS else 'in points'}; "
            f"{better} is better, so a {'negative' if better == 'lower' else 'positive'} difference favours the "
            'reference), n seeds, and the two-sided paired t-test p-value (scipy.stats.ttest_rel). p is "–" with '
            "fewer than two common seeds or when the differences do not vary. Holm: the p-values adjusted "
            "(Holm-Bonferroni) over the rows of the same table, the family of comparisons of the reference on that "
            "summary; the raw p-values are not corrected for multiple comparisons."
        )
    )
    for label, values in summaries:
        ref = values.get(reference, {})
        results = [paired_difference(ref, values.get(v, {})) for v in others]
        adjusted = holm([None if r is None else r.p for r in results])
        rows = []
        for v, res, p_holm in zip(others, results, adjusted):
            name = v + (" (teacher)" if grid.methods.get(v) == "teacher" else "")
            diff = "–" if res is None else format_cell((res.mean, res.std, res.n), None, metric)
            rows.append(
                (
                    name,
                    diff,
                    str(0 if res is None else res.n),
                    format_p(None if res is None else res.p),
                    format_p(p_holm),
                )
            )
        blocks += [
            Paragraph(f"{label}:"),
            Table((f"{reference} vs", "difference (mean ± std)", "n", "p", "p (Holm)"), tuple(rows)),
        ]
    return blocks


def _analyses_blocks(payload: dict, variants: list[str], task: str) -> list[Block]:
    blocks: list[Block] = [
        Heading(3, "Mechanism analyses"),
        Paragraph(
            "From analyses.json, on the test split; mean ± sample std over seeds (one value: "
            'one seed). Definitions: METHOD.md, "Analyses".'
        ),
    ]
    drift_rows = [dict(r) for r in payload.get("drift", [])]
    if drift_rows and any("relative_to_no_kd" not in r for r in drift_rows):
        drift_rows = add_relative_to_no_kd(drift_rows)
    if drift_rows:
        columns = condition_order(r["condition"] for r in drift_rows)
        blocks += [
            Paragraph(
                "Normalised state drift to the teacher's complete-view state: the squared distance between "
                "the two states after scaling each to length 1 (0: same direction, 4: opposite), per "
                "condition (the teacher's row: its own incomplete views against its complete view):"
            ),
            _analysis_table(drift_rows, "condition", "normalized", variants, columns, "normalised"),
        ]
        rel = relative_drift_rows(drift_rows)
        if rel:
            blocks += [
                Paragraph(RELATIVE_DRIFT_TEXT),
                _analysis_table(
                    rel,
                    "condition",
                    "relative_to_no_kd",
                    variants,
                    condition_order(r["condition"] for r in rel),
                    "relative",
                    100.0,
                    1,
                ),
            ]
    mstate_rows = [r for r in payload.get("mstate_drift", []) if r.get("utterances", 1) > 0]
    for m in dict.fromkeys(r["modality"] for r in mstate_rows):
        mine = [r for r in mstate_rows if r["modality"] == m]
        blocks += [
            Paragraph(
                f"Modality-state drift of `{m}`: normalised distance between the model's h_{m} under each "
                f"condition's view and the teacher's complete-view h_{m}, on the utterances where the model "
                f"observes {m} (what L_mstate anchors):"
            ),
            _analysis_table(
                mine, "condition", "normalized", variants, condition_order(r["condition"] for r in mine), f"h_{m}"
            ),
        ]
    rejection = payload.get("rejection", [])
    if rejection:
        pairs = payload.get("pairs", {})
        types = [t for t in ("a", "v", "av") if any(r["type"] == t for r in rejection)]
        types += [t for t in dict.fromkeys(r["type"] for r in rejection) if t not in types]
        blocks += [
            Paragraph(
                f"Conflict rejection rate in percent ({pairs.get('targets', '?')} target-donor pairs, "
                f"seed {pairs.get('seed', '?')}, the same for every method and seed; a pair is rejected "
                "when the output on the conflict view is nearer the teacher's output for the target than "
                "the one for the donor), per swapped modality type:"
            ),
            _analysis_table(rejection, "type", "rate", variants, types, "method (swapped)", 100.0, 2),
        ]
    natural = payload.get("natural_conflicts", {})
    if natural.get("flagged") and task != "regression":
        records = natural.get("records", [])
        blocks.append(
            Paragraph(
                f"Natural conflicts: {natural.get('utterances')} test utterances whose nonverbal "
                "channels show another emotion than their label; accuracy and weighted F1 in percent."
            )
        )
        if records:
            columns = condition_order(r["condition"] for r in records)
            blocks += [
                _analysis_table(records, "condition", "accuracy", variants, columns, "accuracy", 100.0, 2),
                _analysis_table(records, "condition", "weighted_f1", variants, columns, "weighted F1", 100.0, 2),
            ]
        else:
            blocks.append(Paragraph("No numbers: no flagged utterance in the test split."))
    diagnostics = diagnostics_tables(payload.get("modality_diagnostics", []), variants)
    if diagnostics:
        blocks += [Paragraph("Modality diagnostics:"), *diagnostics]
    notes = list(dict.fromkeys(str(n) for n in payload.get("notes", [])))
    if notes:
        blocks.append(Bullets(tuple(notes)))
    return blocks


# ------------------------------------------------------------------ figures
def _figure_dir(key: str, taken: set[str]) -> str:
    """figures/<key, made file-name safe and unique>."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._") or "corpus"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return f"figures/{name}"


def _embeddings(
    root: Path, key: str, listed: dict[str, str], variants: list[str], task: str
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    notes: list[str] = []
    for variant in [v for v in variants if v in listed] + [v for v in listed if v not in variants]:
        path = root / listed[variant]
        if not path.is_file():
            notes.append(f"t-SNE panel of `{variant}` skipped: {listed[variant]} is missing")
            continue
        try:
            with np.load(path) as npz:
                fused, target = np.asarray(npz["fused"]), np.asarray(npz["target"])
        except (OSError, ValueError, KeyError) as exc:
            raise CorekdError(
                f'unreadable embedding (expected arrays "fused" [n, H] and "target" [n]: {exc})', path=path
            ) from None
        if fused.ndim != 2 or target.shape != (len(fused),):
            raise CorekdError(
                f'expected "fused" [n, H] and "target" [n], got {fused.shape} and {target.shape}',
                path=path,
                field="fused",
            )
        if len(fused) < 5:
            notes.append(f"t-SNE panel of `{variant}` skipped: {len(fused)} points (at least 5 needed)")
            continue
        out[variant] = (fused.astype(np.float32), target if task == "regression" else target.astype(int))
    return out, notes


def draw_figures(grid: Grid) -> tuple[dict[str, list[Figure]], dict[str, list[str]]]:
    """Every figure that can be drawn, per corpus key, and per corpus key the notes on panels skipped.

    Colours: matplotlib's 10-colour cycle up to 10 variants, its 20-colour one beyond (a grid of every method and
    ablation has 16 lines and bars; with 10 colours two variants would share one).
    """
    from cycler import cycler
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    plt = pyplot()
    colormap = colormaps["tab20" if len(grid.variants) > 10 else "tab10"]
    assert isinstance(colormap, ListedColormap)  # tab10 and tab20 are lists of colours
    palette = list(cast(Sequence, colormap.colors))
    with plt.rc_context({"axes.prop_cycle": cycler(color=list(palette))}):
        return _draw_figures(grid)


def _draw_figures(grid: Grid) -> tuple[dict[str, list[Figure]], dict[str, list[str]]]:
    figures: dict[str, list[Figure]] = {}
    notes: dict[str, list[str]] = {}
    taken: set[str] = set()
    for key, info in grid.meta["corpora"].items():
        folder = _figure_dir(key, taken)
        task = info.get("task", "classification")
        recs = _corpus_records(grid, key)
        drawn: list[Figure] = []
        title = dict(TABLE_METRICS[task])[_primary(task)]
        if recs:
            (grid.root / folder).mkdir(parents=True, exist_ok=True)
        path = f"{folder}/score_vs_missing_rate.png"
        if recs and curve_figure(grid.root / path, recs, task):
            drawn.append(
                Figure(
                    path,
                    f"`{key}`: test {title}"
                    + ("" if task == "regression" else " in percent")
                    + " against the random missing rate, mean ± std over seeds (band)",
                )
            )
        payload = (grid.analyses or {}).get("corpora", {}).get(key)
        if payload is not None:
            path = f"{folder}/drift.png"
            if drift_figure(grid.root / path, payload.get("drift", []), grid.variants, f"{key}: state drift"):
                drawn.append(
                    Figure(
                        path,
                        f"`{key}`: normalised state drift (squared distance between the student's "
                        "and the teacher's states scaled to length 1) per condition (points) and "
                        "against the random missing rate (lines), mean ± std over seeds",
                    )
                )
            path = f"{folder}/rejection.png"
            if rejection_figure(
                grid.root / path, payload.get("rejection", []), grid.variants, f"{key}: conflict rejection"
            ):
                drawn.append(
                    Figure(
                        path,
                        f"`{key}`: conflict rejection rate in percent, one panel per swapped "
                        "modality type, mean ± std over seeds",
                    )
                )
        listed = (grid.analyses or {}).get("embeddings", {}).get(key) or {}
        if listed:
            embeddings, skipped = _embeddings(grid.root, key, listed, grid.variants, task)
            notes[key] = skipped
            path = f"{folder}/tsne_random0.5.png"
            if embeddings:
                (grid.root / folder).mkdir(parents=True, exist_ok=True)
                if tsne_figure(grid.root / path, embeddings, task, list(info.get("labels") or []), TSNE_CONDITION):
                    drawn.append(
                        Figure(
                            path,
                            f"`{key}`: t-SNE of the fused states at {TSNE_CONDITION}, first "
                            "seed, one panel per variant (colour: the true label)",
                        )
                    )
        figures[key] = drawn
    return figures, notes


# ------------------------------------------------------------------ the report
def build_blocks(
    grid: Grid, figures: dict[str, list[Figure]] | None = None, figure_notes: dict[str, list[str]] | None = None
) -> list[Block]:
    """The whole report as blocks (a pure function of the grid's contents and the figures drawn)."""
    figures = figures or {}
    figure_notes = figure_notes or {}
    blocks = _intro(grid)
    seeds = grid.meta.get("seeds") or []
    for key, info in grid.meta["corpora"].items():
        task = info.get("task", "classification")
        recs = _corpus_records(grid, key)
        have_seeds = sorted({r["seed"] for r in recs})
        n_seeds = len(seeds) or len(have_seeds)
        test = (info.get("splits") or {}).get("test") or {}
        blocks += [
            Heading(2, f"Corpus `{key}`: {info.get('corpus', key)}"),
            Paragraph(
                f"Task: {task}. Test split: {test.get('dialogues', '?')} dialogues, "
                f"{test.get('utterances', '?')} utterances. Seeds with records: {have_seeds} (planned "
                f"{seeds}). Evaluation masks: seed {info.get('mask_seed', '?')}, identical for every "
                f"method and seed; random missing uses the `{info.get('random_scheme', '?')}` scheme. "
                f"Model selection on {info.get('select_metric', '?')} (dev split)."
            ),
            Paragraph(f"Re-run: `{grid.meta.get('command', '')}`"),
        ]
        if info.get("warnings"):
            blocks.append(Bullets(tuple(f"warning: {w}" for w in info["warnings"])))
        if not recs:
            blocks.append(Paragraph("No records for this corpus yet."))
            continue
        modalities = len(info.get("modalities") or "lav")
        blocks += _test_blocks(task, recs, n_seeds, modalities)
        blocks += _dev_blocks(task, recs, n_seeds)
        test_recs = split_records(recs, "test")
        conditions, aucs, auc_notes = curve_aucs(test_recs, _primary(task))
        blocks += _auc_blocks(task, aucs, conditions, auc_notes, grid.variants, n_seeds)
        blocks += _paired_blocks(grid, task, records_frame(test_recs), aucs)
        metric = _primary(task)
        blocks += realistic_blocks(test_recs, metric, metric in LOWER_IS_BETTER, grid.variants)
        payload = (grid.analyses or {}).get("corpora", {}).get(key)
        if grid.analyses is not None and payload is None:
            blocks += [Heading(3, "Mechanism analyses"), Paragraph(f"{ANALYSES_FILE} holds no analyses for `{key}`.")]
        elif payload is not None:
            blocks += _analyses_blocks(payload, grid.variants, task)
        if figures.get(key) or figure_notes.get(key):
            blocks.append(Heading(3, "Figures"))
            blocks += figures.get(key, [])
            if figure_notes.get(key):
                blocks.append(Bullets(tuple(figure_notes[key])))
    return blocks


def write_grid_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Draw the grid's figures, list them in analyses.json, write report.md and report.html: (md path, html path)."""
    root = Path(out_dir)
    grid = read_grid(root)
    figures, notes = draw_figures(grid)
    if grid.analyses is not None:
        grid.analyses["figures"] = [f.path for key in grid.meta["corpora"] for f in figures.get(key, [])]
        text = json.dumps(grid.analyses, indent=1)
        atomic_write(root / ANALYSES_FILE, lambda p: Path(p).write_text(text, encoding="utf-8"))
    blocks = build_blocks(grid, figures, notes)
    return write_page(root, blocks, f"corekd grid: {grid.meta.get('name', '')}")
