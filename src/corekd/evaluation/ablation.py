"""Paired differences over seeds: the report's "Ablations" section and the sweep's tables.

A difference is always ``candidate - reference`` per seed (seeds both hold), then its mean, sample
std (ddof=1), the number of seeds and a paired t-test over seeds (``scipy.stats.ttest_rel``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

from corekd.evaluation.metrics import LOWER_IS_BETTER, PLAIN_METRICS

NOT_AVAILABLE = "n/a"
REFERENCE = "corekd"
ABLATION_CONDITIONS = ("fixed:avg", "random:0.5", "complete")


@dataclass(frozen=True)
class PairedDifference:
    """``candidate - reference`` over the seeds both have: mean, sample std (None for one seed), n, p (None: n < 2
    or the differences do not vary)."""

    mean: float
    std: float | None
    n: int
    p: float | None


def paired_difference(candidate: dict[int, float], reference: dict[int, float]) -> PairedDifference | None:
    """Per-seed ``candidate - reference`` on the common seeds; None when they share no seed."""
    seeds = sorted(set(candidate) & set(reference))
    if not seeds:
        return None
    a = [float(candidate[s]) for s in seeds]
    b = [float(reference[s]) for s in seeds]
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return PairedDifference(mean, None, n, None)
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    p = float(stats.ttest_rel(a, b).pvalue)
    return PairedDifference(mean, std, n, None if math.isnan(p) else p)


def per_seed(frame: pd.DataFrame, variant: str, condition: str, metric: str) -> dict[int, float]:
    """seed -> the metric of ``variant`` under ``condition`` (a :func:`~corekd.evaluation.report.records_frame`)."""
    if frame.empty or metric not in frame:
        return {}
    sub = frame[(frame.variant == variant) & (frame.condition == condition)]
    return {int(s): float(v) for s, v in zip(sub.seed, sub[metric]) if not pd.isna(v)}


def difference_table(frame: pd.DataFrame, reference: str, candidates: list[str], metric: str,
                     conditions: list[str]) -> dict[str, dict[str, PairedDifference | None]]:
    """candidate -> condition -> its paired difference from ``reference`` (candidate - reference)."""
    return {
        c: {cond: paired_difference(per_seed(frame, c, cond, metric), per_seed(frame, reference, cond, metric))
            for cond in conditions}
        for c in candidates
    }


def format_difference(d: PairedDifference | None, metric: str) -> str:
    """``+1.23 ± 0.45 (n=3, p=0.041)`` in percentage points (MAE/Corr as they are); "–" when nothing is paired."""
    if d is None:
        return "–"
    scale, fmt = (1.0, "{:+.3f}") if metric in PLAIN_METRICS else (100.0, "{:+.2f}")
    text = fmt.format(scale * d.mean)
    if d.std is not None:
        text += f" ± {fmt.format(scale * d.std).lstrip('+')}"
    p = NOT_AVAILABLE if d.p is None else f"{d.p:.3g}"
    return f"{text} (n={d.n}, p={p})"


def ablation_variants(frame: pd.DataFrame) -> list[str]:
    """The CoRe-KD variants other than the reference (first-seen order); empty when the reference is absent."""
    if frame.empty or REFERENCE not in set(frame.variant):
        return []
    corekd = frame[frame.method == "corekd"]
    return [v for v in dict.fromkeys(corekd.variant) if v != REFERENCE]


def ablation_section(frames: dict[str, pd.DataFrame], metric: str) -> list[str]:
    """The "Ablations" section of report.md: per split (``frames``: split -> records frame), every CoRe-KD
    variant minus full CoRe-KD (variant ``corekd``). Empty when no split has a variant besides the reference."""
    parts: list[str] = []
    for split, frame in frames.items():
        variants = ablation_variants(frame)
        if not variants:
            continue
        present = set(frame.condition)
        conditions = [c for c in ABLATION_CONDITIONS if c in present]
        table = difference_table(frame, REFERENCE, variants, metric, conditions)
        headers = {"fixed:avg": "fixed Avg", "random:0.5": "random 0.5", "complete": "complete"}
        lines = ["| variant | " + " | ".join(headers[c] for c in conditions) + " |", "|" + "---|" * (len(conditions) + 1)]
        for v in variants:
            lines.append(f"| {v} | " + " | ".join(format_difference(table[v][c], metric) for c in conditions) + " |")
        unit = "as they are" if metric in PLAIN_METRICS else "in percentage points"
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        if not parts:
            parts += ["## Ablations", ""]
        parts += [
            f"### {split.capitalize()} split ({metric})",
            "",
            f"Each CoRe-KD variant minus full CoRe-KD (variant `{REFERENCE}`) on the {split.upper()} split, {metric} "
            f"{unit} ({better} is better): mean ± sample std of the per-seed paired differences, the number of seeds "
            f"paired (n) and the p-value of a paired t-test over seeds (scipy.stats.ttest_rel; {NOT_AVAILABLE} with "
            "fewer than two seeds or differences that do not vary).",
            "",
            *lines,
            "",
        ]
    return parts
