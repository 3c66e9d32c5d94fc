"""Records -> frames -> tables of mean ± std over seeds, shared by the run, sweep and grid reports.

Tables are views of the flat records of ``results.json``; a new metric or table never touches training.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from corekd.evaluation.metrics import (
    METRICS,
    PLAIN_METRICS,
    PRESENT_METRICS,
    REGRESSION_METRICS,
)
from corekd.reporting.blocks import Table, markdown_table_lines

FIXED_ORDER = ["fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]
FIXED_AVG = "fixed:avg"
NOT_APPLICABLE = "n/a"
NO_RECORD = "–"
# The two metrics each table pair shows, per task.
TABLE_METRICS = {
    "classification": (("weighted_f1", "weighted F1"), ("accuracy", "accuracy")),
    "regression": (("mae", "MAE"), ("acc2", "Acc-2, negative/non-negative")),
}
REGRESSION_HEADLINE = (
    ("mae", "MAE"),
    ("corr", "Corr"),
    ("acc2", "Acc-2"),
    ("f1_2", "F1-2"),
    ("acc2_nz", "Acc-2 (non-zero)"),
    ("f1_2_nz", "F1-2 (non-zero)"),
    ("acc5", "Acc-5"),
    ("acc7", "Acc-7"),
)
SCORE_COLUMNS = (*METRICS, *PRESENT_METRICS, *REGRESSION_METRICS)

Cell = tuple[float, float | None, int] | str  # (mean, sample std or None, seeds) or a marker (n/a)


# ------------------------------------------------------------------ records
def applicable(records: list[dict]) -> list[dict]:
    """The records that carry numbers (a condition where nothing is observed carries none)."""
    return [r for r in records if r.get("applicable", True)]


def split_records(records: list[dict], split: str) -> list[dict]:
    """The records of one split; records without a ``split`` field (older runs) are test records."""
    return [r for r in records if r.get("split", "test") == split]


def method_not_applicable(records: list[dict]) -> dict[str, dict[str, str]]:
    """variant -> {condition: reason} for the conditions a method is not scored under although another variant of
    the run is (``Method.not_applicable``, e.g. a student restricted to one modality subset); conditions the data
    rules out are not applicable to every variant and are not listed."""
    scored_somewhere = {r["condition"] for r in applicable(records)}
    out: dict[str, dict[str, str]] = {}
    for r in records:
        if not r.get("applicable", True) and r["condition"] in scored_somewhere:
            out.setdefault(r["variant"], {}).setdefault(r["condition"], r.get("reason", ""))
    return out


def rate_columns(conditions: Iterable[str], kind: str) -> list[str]:
    """The ``<kind>:p`` conditions among ``conditions``, by rate."""
    return sorted((c for c in conditions if c.startswith(kind + ":")), key=lambda c: float(c.split(":")[1]))


def fixed_header(condition: str) -> str:
    """``fixed:la`` -> ``{l,a}``: the modalities a fixed condition keeps."""
    return "{" + ",".join(condition.split(":")[1]) + "}"


def condition_order(conditions: Iterable[str]) -> list[str]:
    """complete, the fixed conditions, their average, random then frame rates, the imbalanced conditions (sorted),
    burst then feature rates, then any other (sorted)."""
    present = set(conditions)
    order = [c for c in ["complete", *FIXED_ORDER, FIXED_AVG] if c in present]
    order += rate_columns(present, "random") + rate_columns(present, "frames")
    order += sorted(c for c in present if c.startswith("imbalanced:") and c != "imbalanced:avg")
    order += rate_columns(present, "burst") + rate_columns(present, "features")
    return order + sorted(present - set(order))


def kind_columns(conditions: Iterable[str], kind: str) -> list[str]:
    """The ``<kind>:...`` conditions among ``conditions`` (an average such as ``burst:avg`` left out): by rate for a
    one-rate kind, in the given order for ``imbalanced`` (one rate list each)."""
    named = [c for c in dict.fromkeys(conditions) if c.startswith(kind + ":") and not c.endswith(":avg")]
    return named if kind == "imbalanced" else rate_columns(named, kind)


def kind_average_frame(frame: pd.DataFrame, records: list[dict], conditions: list[str], label: str) -> pd.DataFrame:
    """Rows of ``label`` (e.g. ``burst:avg``): per (method, variant, seed) the mean of every score column over
    ``conditions``, like the fixed average. A variant not scored under one of them (not applicable) gets none."""
    if frame.empty or not conditions:
        return pd.DataFrame()
    numeric = [c for c in SCORE_COLUMNS if c in frame]
    sub = frame[frame.condition.isin(conditions)]
    missing = {r["variant"] for r in records if r["condition"] in conditions and not r.get("applicable", True)}
    sub = sub[~sub.variant.isin(missing)]
    if sub.empty:
        return pd.DataFrame()
    groups = sub.groupby(["method", "variant", "seed"], as_index=False, sort=False)
    avg = groups[numeric].mean()
    complete = groups.size()["size"].to_numpy() == len(conditions)  # every condition has a record for that seed
    avg = avg[complete]
    avg["condition"] = label
    return avg


# ------------------------------------------------------------------ frames and mean ± std tables
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
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "per_class_f1"} for r in applicable(records)])
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


def mark_not_applicable(table: pd.DataFrame, records: list[dict]) -> pd.DataFrame:
    """Cells whose every record is not applicable read n/a (not "–", which means: no record)."""
    na = {(r["variant"], r["condition"]) for r in records if not r.get("applicable", True)}
    na |= {(v, FIXED_AVG) for v, conds in method_not_applicable(records).items() if set(conds) & set(FIXED_ORDER)}
    scored = {(r["variant"], r["condition"]) for r in applicable(records)}
    for variant, condition in na - scored:
        if variant in table.index and condition in table.columns:
            table.loc[variant, condition] = NOT_APPLICABLE
    return table


def score_text(value: float, metric: str | None) -> str:
    """One score as tables print it: MAE and Pearson r as they are (3 decimals), the rest in percent."""
    return f"{value:.3f}" if metric in PLAIN_METRICS else f"{100 * value:.2f}"


def format_cell(value: object, n_expected: int | None = None, metric: str | None = None) -> str:
    """A :func:`mean_std_table` cell as text: ``51.23 ± 1.20`` (percent; MAE/Corr as they are), ``(n=...)`` when
    fewer seeds than ``n_expected``, "n/a" for a not-applicable cell, "–" for no record."""
    if not isinstance(value, tuple):
        return NOT_APPLICABLE if value == NOT_APPLICABLE else NO_RECORD
    mean, std, n = value
    if metric in PLAIN_METRICS:  # MAE and Pearson r read as they are, to 3 decimals
        text = f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"
    else:
        text = f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"
    return text if n_expected is None or n == n_expected else f"{text} (n={n})"


def values_cell(values: Iterable[float], n_expected: int | None, metric: str | None) -> str:
    """:func:`format_cell` of plain per-seed values (mean, sample std when two or more); "–" when none."""
    arr = np.array(list(values), dtype=float)
    if not len(arr):
        return NO_RECORD
    return format_cell(
        (float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None, len(arr)), n_expected, metric
    )


def table_block(
    table: pd.DataFrame,
    headers: list[str],
    first: str = "method",
    n_expected: int | None = None,
    metric: str | None = None,
) -> Table:
    """A :func:`mean_std_table` as a table block, rows in the table's order."""
    rows = tuple((str(v), *(format_cell(c, n_expected, metric) for c in row.tolist())) for v, row in table.iterrows())
    return Table((first, *headers), rows)


def markdown_table(
    table: pd.DataFrame,
    headers: list[str],
    first: str = "method",
    n_expected: int | None = None,
    metric: str | None = None,
) -> str:
    """:func:`table_block` as Markdown text."""
    return "\n".join(markdown_table_lines(table_block(table, headers, first, n_expected, metric)))


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
    return [
        (v, cell[0], teacher[0])
        for v, cell in table["complete"].items()
        if v != "teacher"
        and isinstance(cell, tuple)
        and (cell[0] < teacher[0] if lower_is_better else cell[0] > teacher[0])
    ]


# ------------------------------------------------------------------ tables of plain rows (analyses)
def mean_std_text(values: list[float | None], scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± sample std`` of the defined values, times ``scale``; the mean alone for one value; "–" for none."""
    kept = [v for v in values if v is not None and np.isfinite(v)]
    if not kept:
        return NO_RECORD
    mean = scale * float(np.mean(kept))
    if len(kept) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {scale * float(np.std(kept, ddof=1)):.{digits}f}"


def grouped_table(
    rows: list[dict],
    key: str,
    value: str,
    first: str,
    scale: float = 1.0,
    digits: int = 3,
    variants: list[str] | None = None,
    columns: list[str] | None = None,
) -> Table:
    """Rows: variants; columns: the values of ``rows[...][key]``; cells: :func:`mean_std_text` of ``value`` over
    the rows of that variant and column (the seeds).

    ``variants``: the row order (any variant the rows name but the list does not comes after, none is left out);
    default: first-seen. ``columns``: default: first-seen.
    """
    named = list(dict.fromkeys(r["variant"] for r in rows))
    order = named if variants is None else [v for v in variants if v in named] + [v for v in named if v not in variants]
    cols = list(dict.fromkeys(r[key] for r in rows)) if columns is None else columns
    cells: dict[tuple, list] = {}
    for r in rows:
        cells.setdefault((r["variant"], r[key]), []).append(r[value])
    return Table(
        (first, *(str(c) for c in cols)),
        tuple((v, *(mean_std_text(cells.get((v, c), []), scale, digits) for c in cols)) for v in order),
    )


RELATIVE_DRIFT_TEXT = (
    "Normalised drift relative to no_kd, (d - d_no_kd) / d_no_kd in percent, per seed then averaged (negative: "
    "closer to the teacher than no_kd):"
)


def relative_drift_rows(rows: list[dict]) -> list[dict]:
    """The drift rows that have a value relative to no_kd (every student but no_kd; the teacher has none)."""
    return [r for r in rows if r.get("relative_to_no_kd") is not None and r["method"] not in ("no_kd", "teacher")]
