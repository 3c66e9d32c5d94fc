"""A sweep's report: ``sweep.md`` and ``sweep.html`` from sweep.json's payload, the same blocks rendered twice.

Per value of the swept setting: each student minus ``no_kd`` paired over seeds (the differences are computed when
sweep.json is written, with :func:`corekd.reporting.stats.difference_table`), and the rejection rates per conflict
type from each sub-run's analyses.json.
"""

from __future__ import annotations

from pathlib import Path

from corekd.evaluation.metrics import PLAIN_METRICS
from corekd.reporting.blocks import (
    Block,
    Heading,
    Paragraph,
    Table,
    render_markdown,
    write_page,
)
from corekd.reporting.stats import PairedDifference, format_difference

BASELINE = "no_kd"  # every student is paired against it
SWEEP_CONDITIONS = ("fixed:avg", "random:0.5")
CONFLICT_TYPES = ("a", "v", "av")
NOT_COMPUTED = "not computed"
SWEEP_STEM = "sweep"  # sweep.md, sweep.html
HEADS = {"fixed:avg": "fixed Avg", "random:0.5": "random 0.5"}


def sweep_blocks(payload: dict) -> list[Block]:
    """The sweep report as blocks, from sweep.json's payload."""
    option, runs = payload["option"], payload["runs"]
    name = option.split(".")[-1]
    metric = next((r["metric"] for r in runs if r.get("metric")), "weighted_f1")
    candidates = list(dict.fromkeys(v for r in runs for v in r["differences"]))
    conditions = [c for c in SWEEP_CONDITIONS if any(c in by_c for r in runs for by_c in r["differences"].values())]
    cols = [(v, c) for v in candidates for c in conditions]
    rows: list[tuple[str, ...]] = []
    for r in runs:
        if r["status"] == "missing":
            rows.append((str(r["value"]), *("no run" for _ in cols)))
            continue
        cells = []
        for v, c in cols:
            d = (r["differences"].get(v) or {}).get(c)
            cells.append(format_difference(PairedDifference(**d) if d else None, metric))
        rows.append((str(r["value"]), *cells))
    blocks: list[Block] = [
        Heading(1, f"Sweep over {option}"),
        Paragraph(
            f"Re-run: `{payload['command']}`. Seeds {payload['seeds']}; one ordinary run per value in "
            f"`{name}=<value>/` (each with its own report.md)."
        ),
        Heading(2, f"Students minus {BASELINE}, paired over seeds"),
        Paragraph(
            f"Test split, {metric} ({'as it is' if metric in PLAIN_METRICS else 'in percentage points'}): per "
            f"value, each student minus `{BASELINE}` per seed, then mean ± sample std, the seeds paired (n) and "
            "the p-value of a paired t-test over seeds (scipy.stats.ttest_rel; n/a with fewer than two seeds)."
        ),
        Table((name, *(f"{v} − {BASELINE}, {HEADS[c]}" for v, c in cols)), tuple(rows)),
        Heading(2, "Rejection rates per conflict type"),
        Paragraph(
            'From each sub-run\'s analyses.json, in percent (mean over seeds), as in report.md; "not computed" '
            "where a sub-run has none."
        ),
    ]
    rejection_rows: list[tuple[str, ...]] = []
    for r in runs:
        rejection = r.get("rejection")
        if not rejection:
            rejection_rows.append((str(r["value"]), "–", *(NOT_COMPUTED for _ in CONFLICT_TYPES)))
            continue
        for variant, by_type in rejection.items():
            rejection_rows.append(
                (
                    str(r["value"]),
                    str(variant),
                    *(
                        f"{100 * by_type[t]['rate']:.1f} (n={by_type[t]['n']})" if t in by_type else "–"
                        for t in CONFLICT_TYPES
                    ),
                )
            )
    blocks.append(Table((name, "method", *CONFLICT_TYPES), tuple(rejection_rows)))
    incomplete = [str(r["value"]) for r in runs if r["status"] not in ("complete",)]
    if incomplete:
        blocks.append(
            Paragraph(
                f"Incomplete or missing sub-runs: {', '.join(incomplete)} (finish with "
                f"`{payload['command']} --resume`)."
            )
        )
    return blocks


def render_sweep(payload: dict) -> str:
    """sweep.md's text from sweep.json's payload."""
    return render_markdown(sweep_blocks(payload))


def write_sweep_report(out_dir: str | Path, payload: dict) -> tuple[Path, Path]:
    """Write ``sweep.md`` and ``sweep.html`` into the sweep's top folder: (md path, html path)."""
    return write_page(out_dir, sweep_blocks(payload), f"corekd sweep: {payload['option']}", stem=SWEEP_STEM)
