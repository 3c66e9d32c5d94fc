"""Realistic missingness against the standard protocols, for a grid's report (``configs/missingness_study.yaml``).

Reads one corpus's test records. Three families of conditions are compared at matched overall missing rates:
``random:p`` (one shared rate), ``imbalanced:r_1,...,r_M`` (nominal overall rate: the mean of the per-modality
rates; the family's score per seed is the mean over its conditions at that rate, e.g. each modality once as the
fragile one) and ``burst:p`` (outages over consecutive turns). The standard score of a variant and seed is the
mean over the six fixed subsets and every random rate (the paper's protocols).

Two questions, both answered with paired tests over seeds (:func:`corekd.reporting.stats.paired_difference`):

- Does the ranking of the methods under the standard protocols survive? Kendall's tau between the standard
  ranking and each family's ranking at each matched rate, and every pair of variants whose order flips, with the
  paired difference under that family and its Holm-adjusted p (one family per condition family and rate).
- Does dialogue context help more under bursts than under independent drops? For every variant ``X`` that the
  grid also runs as ``X_no_context`` (the same method with ``model: {context: none}``), the per-seed context gain
  ``X - X_no_context`` under ``burst:p`` minus the same gain under ``random:p``.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from itertools import combinations

from scipy import stats

from corekd.reporting.blocks import Block, Heading, Paragraph, Table
from corekd.reporting.stats import PairedDifference, format_difference, holm, paired_difference
from corekd.reporting.tables import FIXED_ORDER, score_text

FAMILIES = ("random", "imbalanced", "burst")
NO_CONTEXT_SUFFIX = "_no_context"
STANDARD = "standard"


def nominal_rate(condition: str) -> tuple[str, float] | None:
    """(family, nominal overall missing rate) of a realistic-family condition name; None for any other condition."""
    kind, _, arg = condition.partition(":")
    try:
        if kind in ("random", "burst"):
            return kind, round(float(arg), 6)
        if kind == "imbalanced":
            rates = [float(x) for x in arg.split(",")]
            return kind, round(sum(rates) / len(rates), 6)
    except ValueError:
        return None
    return None


def family_scores(test_records: list[dict], metric: str) -> dict[tuple[str, float | None], dict[str, dict[int, float]]]:
    """(family, rate) -> variant -> {seed: score}; the standard protocols as (``"standard"``, None).

    A (variant, seed) missing one condition of a group (not applicable, or an undefined score) gets no score for
    that group: its mean would cover other conditions than the rest's.
    """
    groups: dict[tuple[str, float | None], set[str]] = {}
    values: dict[tuple[str, int], dict[str, float]] = {}
    for r in test_records:
        condition = r["condition"]
        if condition in FIXED_ORDER or condition.startswith("random:"):
            groups.setdefault((STANDARD, None), set()).add(condition)
        family = nominal_rate(condition)
        if family is not None:
            groups.setdefault(family, set()).add(condition)
        score = r.get(metric)
        if r.get("applicable", True) and score is not None and not math.isnan(float(score)):
            values.setdefault((r["variant"], int(r["seed"])), {})[condition] = float(score)
    out: dict[tuple[str, float | None], dict[str, dict[int, float]]] = {}
    for key, conditions in groups.items():
        for (variant, seed), scores in values.items():
            if conditions <= scores.keys():
                out.setdefault(key, {}).setdefault(variant, {})[seed] = sum(scores[c] for c in conditions) / len(
                    conditions
                )
    return out


def matched_rates(scores: dict) -> list[float]:
    """The rates at which the shared-rate family and at least one realistic family are both scored."""
    random_rates = {rate for family, rate in scores if family == "random"}
    return sorted(r for r in random_rates if any((f, r) in scores for f in ("imbalanced", "burst")))


def ranking(by_variant: dict[str, dict[int, float]], lower_is_better: bool) -> list[str]:
    """Variants from best to worst by their mean over seeds (ties: the given order)."""
    means = {v: sum(s.values()) / len(s) for v, s in by_variant.items() if s}
    return sorted(means, key=lambda v: means[v] if lower_is_better else -means[v])


def kendall_tau(first: list[str], second: list[str]) -> float | None:
    """Kendall's tau between two rankings over the variants both hold (None: fewer than three in common)."""
    common = [v for v in first if v in second]
    if len(common) < 3:
        return None
    tau = stats.kendalltau([first.index(v) for v in common], [second.index(v) for v in common]).statistic
    return None if math.isnan(tau) else float(tau)


def flipped_pairs(
    standard: list[str], family: dict[str, dict[int, float]], lower_is_better: bool
) -> list[tuple[str, str, PairedDifference]]:
    """Pairs (a above b under the standard protocols) whose order the family reverses: (a, b, a - b under it)."""
    out = []
    for a, b in combinations([v for v in standard if v in family], 2):
        d = paired_difference(family[a], family[b])
        if d is not None and (d.mean > 0 if lower_is_better else d.mean < 0):
            out.append((a, b, d))
    return out


def context_gains(scores: dict, rate: float) -> dict[str, tuple[PairedDifference | None, PairedDifference | None]]:
    """variant -> (its gain over its ``_no_context`` twin under burst:rate minus that under random:rate, the burst
    gain itself), both paired over seeds; only variants the grid runs with their twin at that rate."""
    burst, shared = scores.get(("burst", rate), {}), scores.get(("random", rate), {})
    out = {}
    for variant in burst:
        twin = variant + NO_CONTEXT_SUFFIX
        if twin not in burst or variant not in shared or twin not in shared:
            continue
        gain_burst = {s: burst[variant][s] - burst[twin][s] for s in burst[variant].keys() & burst[twin].keys()}
        gain_random = {s: shared[variant][s] - shared[twin][s] for s in shared[variant].keys() & shared[twin].keys()}
        out[variant] = (
            paired_difference(gain_burst, gain_random),
            paired_difference(burst[variant], burst[twin]),
        )
    return out


def realistic_blocks(test_records: list[dict], metric: str, lower_is_better: bool, variants: list[str]) -> list[Block]:
    """The report section, or no block when the records hold no realistic family at a rate random missing has."""
    scores = family_scores(test_records, metric)
    rates = matched_rates(scores)
    standard = scores.get((STANDARD, None), {})
    if not rates or not standard:
        return []
    order = ranking(standard, lower_is_better)
    columns = [(STANDARD, None)] + [(f, r) for r in rates for f in FAMILIES if (f, r) in scores]
    headers = ("variant", "standard (fixed + random)", *(f"{f} @ {r:g}" for f, r in columns[1:]))
    rows = []
    for v in [v for v in variants if v in standard]:
        cells = []
        for key in columns:
            by_seed = scores.get(key, {}).get(v, {})
            if not by_seed:
                cells.append("n/a")
                continue
            mean = sum(by_seed.values()) / len(by_seed)
            std = None if len(by_seed) < 2 else statistics.stdev(by_seed.values())
            cells.append(score_text(mean, metric) + ("" if std is None else f" ± {score_text(float(std), metric)}"))
        rows.append((f"`{v}`", *cells))
    blocks: list[Block] = [
        Heading(3, "Realistic missingness against the standard protocols"),
        Paragraph(
            f"Test {metric}, mean ± std over seeds. Standard: the mean over the six fixed subsets and every random "
            "rate. At each matched overall rate p: `random` drops every modality at the one rate p, `imbalanced` "
            "gives each modality its own rate (the mean over its conditions at that nominal rate, e.g. each modality "
            "once as the fragile one), `burst` makes outages last several consecutive turns (a two-state Markov "
            "chain per modality and dialogue). Realised rates are in results.json (`missing_rate`)."
        ),
        Table(headers, tuple(rows)),
    ]
    unranked = [v for v in variants if v not in standard]
    if unranked:
        blocks.append(
            Paragraph(
                "Not in this section (no standard score: not scored under every fixed subset and random rate, e.g. a "
                "student restricted to one modality): " + ", ".join(f"`{v}`" for v in unranked) + "."
            )
        )
    tau_rows, flip_rows = [], []
    for key in columns[1:]:
        family_ranking = ranking(scores[key], lower_is_better)
        tau = kendall_tau(order, family_ranking)
        flips = flipped_pairs(order, scores[key], lower_is_better)
        adjusted = holm([d.p for _, _, d in flips])
        significant = sum(1 for p in adjusted if p is not None and p < 0.05)
        name = f"{key[0]} @ {key[1]:g}"
        tau_rows.append(
            (
                name,
                "n/a" if tau is None else f"{tau:.2f}",
                str(len(flips)),
                str(significant),
                ", ".join(f"`{v}`" for v in family_ranking[:3]),
            )
        )
        flip_rows += [
            (name, f"`{a}` over `{b}`", format_difference(replace(d, p=p), metric))
            for (a, b, d), p in zip(flips, adjusted)
        ]
    blocks += [
        Paragraph(
            "Does the standard ranking survive? Kendall's tau between the ranking under the standard protocols "
            f"({', '.join(f'`{v}`' for v in order)}) and each family's ranking; a flip is a pair of variants whose "
            "order reverses, tested with the paired difference over seeds (p Holm-adjusted within each family and "
            "rate; significant: p < 0.05)."
        ),
        Table(("family @ rate", "Kendall's tau", "pairs flipped", "flips significant", "top three"), tuple(tau_rows)),
    ]
    if flip_rows:
        blocks.append(
            Table(
                ("family @ rate", "standard order reversed", "difference under the family (first - second)"),
                tuple(flip_rows),
            )
        )
    context_rows = [
        (f"`{v}`", f"{r:g}", format_difference(burst_gain, metric), format_difference(extra, metric))
        for r in rates
        for v, (extra, burst_gain) in context_gains(scores, r).items()
    ]
    if context_rows:
        blocks += [
            Paragraph(
                "Does dialogue context help more under bursts? Per seed, the context gain is a variant's score minus "
                f"its `{NO_CONTEXT_SUFFIX}` twin's (the same method with `model: {{context: none}}`); the last column "
                "is the gain under `burst:p` minus the gain under `random:p` (paired over seeds: positive means "
                "context helps more when outages last several turns)."
            ),
            Table(("variant", "rate", "context gain under bursts", "burst gain - random gain"), tuple(context_rows)),
        ]
    elif any(v.endswith(NO_CONTEXT_SUFFIX) for v in variants):
        blocks.append(Paragraph("No variant has both its no-context twin and burst and random scores at one rate."))
    return blocks
