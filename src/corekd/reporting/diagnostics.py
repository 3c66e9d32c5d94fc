"""The "Modality diagnostics" tables of the run and grid reports, from analyses.json's ``modality_diagnostics`` rows.

Per model (rows) and modality: the score lost on complete views when only that modality is removed, the score kept
when only it is present, then the equity index (over the losses) and the learning-balance index (over the encoders'
gradient norms); mean ± sample std over seeds. Definitions: docs/configuration.md, "Modality diagnostics".
"""

from __future__ import annotations

from corekd.evaluation.metrics import LOWER_IS_BETTER
from corekd.reporting.blocks import Block, Paragraph, Table
from corekd.reporting.tables import mean_std_text


def _variants(rows: list[dict], order: list[str] | None) -> list[str]:
    named = list(dict.fromkeys(r["variant"] for r in rows))
    return named if order is None else [v for v in order if v in named] + [v for v in named if v not in order]


def _cell(values: list[float | None], scale: float, digits: int) -> str:
    """:func:`mean_std_text`, with ``(n=k)`` when only k of the seeds' values are defined."""
    text = mean_std_text(values, scale, digits)
    defined = sum(v is not None for v in values)
    return f"{text} (n={defined})" if 0 < defined < len(values) else text


def diagnostics_tables(rows: list[dict], variants: list[str] | None = None) -> list[Block]:
    """The explanation, the contributions-and-indices table and the gradient-norm table; [] without rows, one line
    when no row has a complete-view test score (no test number is shown then).

    ``variants``: the row order (default: first-seen; any variant not listed comes after).
    """
    if not rows:
        return []
    if all(r.get("complete") is None for r in rows):  # e.g. a test split where nothing is observed
        return [
            Paragraph(
                "No modality diagnostics: no model has a test score on complete views (the encoders' gradient "
                "norms are in analyses.json and the training history)."
            )
        ]
    modalities = list(dict.fromkeys(m for r in rows for m in r.get("modalities", [])))
    metric = rows[0].get("metric", "weighted_f1")
    lower = metric in LOWER_IS_BETTER
    scale, digits = (1.0, 3) if lower else (100.0, 2)  # scores in percent, MAE as it is (as the test tables)
    order = _variants(rows, variants)

    def cells(variant: str, value) -> list[float | None]:
        return [value(r) for r in rows if r["variant"] == variant]

    def per_modality(name: str, m: str):
        return lambda r: (r.get(name) or {}).get(m)

    main = tuple(
        (
            variant,
            *(_cell(cells(variant, per_modality("drop", m)), scale, digits) for m in modalities),
            *(_cell(cells(variant, per_modality("alone", m)), scale, digits) for m in modalities),
            _cell(cells(variant, lambda r: r.get("equity")), 1.0, 3),
            _cell(cells(variant, lambda r: r.get("balance")), 1.0, 3),
        )
        for variant in order
    )
    norms = tuple(
        (variant, *(_cell(cells(variant, per_modality("grad_norm", m)), 1.0, 4) for m in modalities))
        for variant in order
    )
    unit = "as it is" if lower else "in percent"
    drop_sign = "score without m minus complete-view score" if lower else "complete-view score minus score without m"
    return [
        Paragraph(
            f"On the test split, {metric} ({unit}), from each model's test records. *drop m*: the score lost when only "
            f"m is removed from complete views ({drop_sign}, so positive means m helps); *alone m*: the score "
            "with only m observed (`fixed:m`). *equity*: 1 - normalised Gini of the drops (negative drops "
            "clipped to 0), 1 = every modality costs the same when removed, 0 = one modality carries it all; "
            "*balance*: the same index over each modality encoder's mean gradient norm during training, 1 = "
            "evenly optimised. Both are documented equivalents of MissBench's MEI and MLI "
            '(docs/configuration.md, "Modality diagnostics"); "–": undefined (one modality, no drop above 0, or '
            "no gradient norms in the training history); (n=k): defined for k seeds only."
        ),
        Table(
            ("method", *(f"drop {m}" for m in modalities), *(f"alone {m}" for m in modalities), "equity", "balance"),
            main,
        ),
        Paragraph(
            "Mean L2 norm of each modality encoder's gradients per step, before clipping, averaged over the "
            "epochs run (training history `grad_norm_<m>`; the learned missing-modality token is left out):"
        ),
        Table(("method", *(f"grad norm {m}" for m in modalities)), norms),
    ]
