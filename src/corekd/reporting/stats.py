"""The statistics every report uses: paired differences over seeds, Holm's adjustment, the area under a curve.

One implementation each, so a run report, a sweep and a grid give the same p-value for the same seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from corekd.evaluation.metrics import PLAIN_METRICS

NOT_AVAILABLE = "n/a"
# Differences whose sample std is at most this share of the scores' magnitude (at least 1) "do not vary".
NO_VARIATION = 1e-12


@dataclass(frozen=True)
class PairedDifference:
    """``candidate - reference`` over the seeds both have: mean, sample std (None for one seed), n, p (None: n < 2
    or the differences do not vary)."""

    mean: float
    std: float | None
    n: int
    p: float | None


def paired_difference(candidate: dict[int, float], reference: dict[int, float]) -> PairedDifference | None:
    """Per-seed ``candidate - reference`` on the common seeds (``seed -> score``); None when they share no seed.

    ``std``: the sample std (ddof=1) of the differences; ``p``: the two-sided paired t-test over seeds
    (``scipy.stats.ttest_rel``).

    The rule for differences that do not vary: ``p`` is None when their std is at most ``1e-12`` times the scores'
    magnitude (the largest absolute score, at least 1). The t statistic is mean / (std / sqrt(n)); with a std that is
    zero in exact arithmetic it is undefined, but floating point rarely gives exactly zero: 1.0 - 1.1 and 0.9 - 1.0
    differ in the last bits, and scipy then returns a p of about 1e-15 (or NaN when they happen to be equal), a
    "significant" difference made of rounding error. Comparing the std with the scores' rounding scale treats both
    alike; scipy's NaN (if ever) also gives None.
    """
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
    scale = max(1.0, *(abs(x) for x in a), *(abs(y) for y in b))
    if std <= NO_VARIATION * scale:
        return PairedDifference(mean, std, n, None)
    p = float(stats.ttest_rel(a, b).pvalue)
    return PairedDifference(mean, std, n, None if math.isnan(p) else p)


def per_seed(frame: pd.DataFrame, variant: str, condition: str, metric: str) -> dict[int, float]:
    """seed -> the metric of ``variant`` under ``condition`` (a :func:`corekd.reporting.tables.records_frame`);
    undefined (NaN) values are left out."""
    if frame.empty or metric not in frame:
        return {}
    sub = frame[(frame.variant == variant) & (frame.condition == condition)]
    return {int(s): float(v) for s, v in zip(sub.seed, sub[metric]) if not pd.isna(v)}


def difference_table(
    frame: pd.DataFrame, reference: str, candidates: list[str], metric: str, conditions: list[str]
) -> dict[str, dict[str, PairedDifference | None]]:
    """candidate -> condition -> its paired difference from ``reference`` (candidate - reference)."""
    return {
        c: {
            cond: paired_difference(per_seed(frame, c, cond, metric), per_seed(frame, reference, cond, metric))
            for cond in conditions
        }
        for c in candidates
    }


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values of one family (None entries are left out of it and stay None)."""
    defined = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(defined)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def curve_auc(rates, scores) -> float:
    """Area under a missing-rate curve divided by its rate span: the curve's mean score (trapezoidal rule).

    ``rates``, ``scores``: one score per distinct rate, in any order (sorted here); at least two rates.
    """
    r = np.asarray(rates, dtype=float)
    s = np.asarray(scores, dtype=float)
    if r.ndim != 1 or r.shape != s.shape:
        raise ValueError(f"rates and scores must be two 1-d sequences of one length, got {r.shape} and {s.shape}")
    if len(np.unique(r)) != len(r) or len(r) < 2:
        raise ValueError(f"a curve needs at least two distinct rates, got {r.tolist()}")
    if not (np.isfinite(r).all() and np.isfinite(s).all()):
        raise ValueError("rates and scores must be finite")
    order = np.argsort(r)
    r, s = r[order], s[order]
    area = float(np.sum((r[1:] - r[:-1]) * (s[1:] + s[:-1]) / 2))
    return area / float(r[-1] - r[0])


def format_p(p: float | None) -> str:
    """A p-value as a table column prints it: "–" when undefined, 3 decimals, scientific below 0.001."""
    if p is None:
        return "–"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


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
