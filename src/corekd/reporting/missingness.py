"""Report tables of the issue-32 missingness conditions, shared by the run and grid reports: imbalanced per-modality
rates (``imbalanced:r1,r2,..``), missing runs across turns (``burst:p``), feature missing (``features:p``), and the
per-protocol averages side by side (fixed, random, imbalanced, burst)."""

from __future__ import annotations

import pandas as pd

from corekd.reporting.blocks import Block, Heading, Paragraph
from corekd.reporting.tables import (
    FIXED_AVG,
    kind_average_frame,
    kind_columns,
    mark_not_applicable,
    mean_std_table,
    table_block,
)

IMBALANCED_AVG = "imbalanced:avg"
BURST_AVG = "burst:avg"
RANDOM_AVG = "random:avg"


def _first(records: list[dict], condition: str, key: str):
    """``key`` of the first record of ``condition`` that has it (masks are shared: every record has the same)."""
    return next((r[key] for r in records if r["condition"] == condition and key in r), None)


def _by_modality(records: list[dict], condition: str) -> str:
    rates = _first(records, condition, "missing_rate_by_modality") or {}
    return ", ".join(f"{m} {v:.3f}" for m, v in rates.items())


def imbalanced_header(condition: str, modalities: list[str]) -> str:
    """``imbalanced:0.6,0.15,0.15`` -> ``l 0.6 · a 0.15 · v 0.15`` (the rates named by modality)."""
    rates = condition.split(":", 1)[1].split(",")
    if len(rates) != len(modalities):
        return condition.split(":", 1)[1]
    return " · ".join(f"{m} {r}" for m, r in zip(modalities, rates))


def missingness_blocks(
    frame: pd.DataFrame,
    records: list[dict],
    n_seeds: int | None,
    table_metrics,
    modalities: list[str],
    level: int = 2,
    prefix: str = "",
    burst_length: float | None = None,
) -> list[Block]:
    """Imbalanced, burst and feature-missing tables (test records: ``frame`` = ``records_frame(records)``), then the
    protocol averages. ``prefix``: put before each heading (the grid report's "Test, "). Nothing when the records
    have none of these conditions."""
    conditions = list(dict.fromkeys(r["condition"] for r in records))  # in the run's order
    imbalanced = kind_columns(conditions, "imbalanced")
    bursts = kind_columns(conditions, "burst")
    features = kind_columns(conditions, "features")
    if not (imbalanced or bursts or features):
        return []
    extra = pd.concat(
        [
            kind_average_frame(frame, records, imbalanced, IMBALANCED_AVG),
            kind_average_frame(frame, records, bursts, BURST_AVG),
        ],
        ignore_index=True,
    )
    full = pd.concat([frame, extra], ignore_index=True) if not extra.empty else frame

    def table(metric: str, cols: list[str]) -> pd.DataFrame:
        return mark_not_applicable(mean_std_table(full, metric, cols), records)

    blocks: list[Block] = []
    for metric, title in table_metrics if imbalanced else ():
        cols = imbalanced + ([IMBALANCED_AVG] if IMBALANCED_AVG in set(full.condition) else [])
        headers = [imbalanced_header(c, modalities) for c in imbalanced] + (
            ["mean"] if len(cols) > len(imbalanced) else []
        )
        blocks += [
            Heading(level, f"{prefix}Imbalanced missing rates ({title})"),
            Paragraph(
                "Each modality dropped independently at its own rate (columns: the rates, corpus order); an utterance "
                "left with none keeps one, drawn with probability proportional to 1 - r. mean: the per-seed mean "
                "over these conditions, then over seeds."
            ),
            table_block(table(metric, cols), headers, "method", n_seeds, metric),
        ]
    if imbalanced:
        blocks.append(
            Paragraph(
                "Realised missing rate per modality on the test masks: "
                + "; ".join(f"{imbalanced_header(c, modalities)}: {_by_modality(records, c)}" for c in imbalanced)
                + "."
            )
        )
    run_text = f"{burst_length:g}" if burst_length is not None else "L"
    for metric, title in table_metrics if bursts else ():
        cols = bursts + ([BURST_AVG] if BURST_AVG in set(full.condition) else [])
        headers = [c.split(":")[1] for c in bursts] + (["mean"] if len(cols) > len(bursts) else [])
        blocks += [
            Heading(level, f"{prefix}Missing runs across turns, burst rate p ({title})"),
            Paragraph(
                "Per dialogue and modality a two-state Markov chain over the utterances: stationary missing rate p, "
                f"mean missing run {run_text} utterances; an utterance whose modalities are all in a run keeps one, "
                "drawn uniformly. Same masks for every method and seed."
            ),
            table_block(table(metric, cols), headers, "method \\ p", n_seeds, metric),
        ]
    if bursts:
        blocks.append(
            Paragraph(
                "Realised missing rate on the test masks: "
                + "; ".join(
                    f"p={c.split(':')[1]}: {_first(records, c, 'missing_rate'):.3f} ({_by_modality(records, c)})"
                    for c in bursts
                    if _first(records, c, "missing_rate") is not None
                )
                + "."
            )
        )
    for metric, title in table_metrics if features else ():
        blocks += [
            Heading(level, f"{prefix}Feature missing, rate p ({title})"),
            Paragraph(
                "Every modality observed; in each observed vector modality round(p * D) of its D feature dimensions, "
                "drawn per utterance, are zeroed after standardisation (sequence modalities untouched)."
            ),
            table_block(table(metric, features), [c.split(":")[1] for c in features], "method \\ p", n_seeds, metric),
        ]
    if features:
        blocks.append(
            Paragraph(
                "Realised share of vector feature dimensions zeroed: "
                + ", ".join(
                    f"p={c.split(':')[1]}: {v:.3f}"
                    for c in features
                    if (v := _first(records, c, "feature_missing_rate")) is not None
                )
                + "."
            )
        )
    if imbalanced or bursts:
        randoms = [c for c in kind_columns(conditions, "random") if float(c.split(":")[1]) > 0]
        with_random = pd.concat([full, kind_average_frame(frame, records, randoms, RANDOM_AVG)], ignore_index=True)
        present = set(with_random.condition)
        cols = [c for c in (FIXED_AVG, RANDOM_AVG, IMBALANCED_AVG, BURST_AVG, "complete") if c in present]
        names = {
            FIXED_AVG: "fixed Avg",
            RANDOM_AVG: "random Avg",
            IMBALANCED_AVG: "imbalanced Avg",
            BURST_AVG: "burst Avg",
            "complete": "complete",
        }
        metric = table_metrics[0][0]
        blocks += [
            Heading(level, f"{prefix}Averages per missingness protocol ({table_metrics[0][1]})"),
            Paragraph(
                "Per seed, the mean over each protocol's conditions (random: the rates above 0), then mean ± std over "
                "seeds: whether a ranking under the standard protocols survives per-modality rates and outages."
            ),
            table_block(
                mark_not_applicable(mean_std_table(with_random, metric, cols), records),
                [names[c] for c in cols],
                "method",
                n_seeds,
                metric,
            ),
        ]
    return blocks
