"""``corekd tune``'s report (``tuning.md`` and ``tuning.html``) from its ``tuning.json`` payload: the budget and the
search space per method, each method's best parameters and the distribution of its trials' dev scores."""

from __future__ import annotations

from pathlib import Path

from corekd.reporting.blocks import Block, Bullets, Heading, Paragraph, Table, md, write_page


def _spec_text(spec: dict) -> str:
    if "choice" in spec:
        return "one of " + ", ".join(str(v) for v in spec["choice"])
    kind = "float" if "float" in spec else "int"
    low, high = spec[kind]
    return f"{kind} in [{low:g}, {high:g}]" + (", log scale" if spec.get("log") else "")


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def tuning_blocks(payload: dict) -> list[Block]:
    """The report's blocks (plain data in, blocks out)."""
    metric = payload["metric"]
    blocks: list[Block] = [
        Heading(1, f"Tuning: {payload['config']}"),
        Paragraph(
            f"The same budget for every method: **{payload['budget']} trials** each (Optuna TPE, sampler seed "
            f"{payload['sampler_seed']}, pruning {'on' if payload['pruning'] else 'off'}), on corpus "
            f"`{payload['tuned_on']}`, seeds {', '.join(map(str, payload['seeds']))}. Trial score: dev "
            f"`{metric}` ({'lower' if payload['direction'] == 'minimize' else 'higher'} is better); "
            f"{payload['score']}. Students were tuned against {payload['students_against']}. The test split was "
            "never read."
        ),
        Heading(2, "Best parameters and dev-score distribution"),
    ]
    rows = []
    for label, m in payload["methods"].items():
        best, dist = m["best"], m["distribution"]
        states = [t["state"] for t in m["trials"] if not t.get("interrupted")]
        counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if states.count(s))
        rows.append(
            (
                md(label),
                counts or "none",
                "-" if not dist else f"{dist['min']:.4f}",
                "-" if not dist else f"{dist['median']:.4f}",
                "-" if not dist else f"{dist['max']:.4f}",
                "-" if not best else str(best["number"]),
                "-" if not best else md(", ".join(f"{k}={_value(v)}" for k, v in best["params"].items())),
            )
        )
    blocks.append(Table(("method", "trials", "min", "median", "max", "best trial", "best parameters"), tuple(rows)))
    blocks.append(Heading(2, "Search spaces"))
    for label, m in payload["methods"].items():
        items = [f"`{k}`: {_spec_text(s)}" for k, s in m["space"].items()]
        if m.get("fixed"):
            items.append("held fixed (they define this variant): " + ", ".join(f"`{k}`" for k in m["fixed"]))
        blocks.append(Paragraph(f"**{md(label)}** (method `{m['method']}`)"))
        blocks.append(Bullets(tuple(items) or ("nothing to tune",)))
    blocks.append(
        Paragraph(
            "Every trial (parameters, dev score, seconds, state) is in `tuning.json`; `tuned.yaml` holds the config "
            "with each method's best parameters."
        )
    )
    return blocks


def write_tuning_report(out: str | Path, payload: dict) -> tuple[Path, Path]:
    """Write ``tuning.md`` and ``tuning.html`` into ``out``."""
    return write_page(out, tuning_blocks(payload), f"Tuning: {payload['config']}", stem="tuning")
