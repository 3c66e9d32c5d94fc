"""The grid report's figures (PNG, matplotlib Agg, written atomically), one set per corpus key.

Each function draws one figure from plain rows (the grid's records or an analyses payload) and returns
whether it drew anything; the score-vs-rate curve and the t-SNE panels reuse the run report's drawing
(``corekd.evaluation.analyses``), so a grid figure reads like a run's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corekd.data.corpus import atomic_write
from corekd.evaluation.analyses import _pyplot, curve_figure, tsne_figure
from corekd.evaluation.report import FIXED_ORDER, rate_columns

__all__ = ["curve_figure", "drift_figure", "rejection_figure", "tsne_figure"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value, where it is undefined: no error bar)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _ordered(variants: list[str], rows: list[dict]) -> list[str]:
    """The variants the rows name: in ``variants``' order, then any other (none is left out)."""
    named = list(dict.fromkeys(r["variant"] for r in rows))
    return [v for v in variants if v in named] + [v for v in named if v not in variants]


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def _grouped_bars(ax, groups: list[str], variants: list[str], cells: dict[tuple[str, str], list[float]],
                  scale: float = 1.0) -> None:
    """Bars per group (x) and variant (colour): mean over seeds, error bar ± sample std."""
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(groups))
    for i, variant in enumerate(variants):
        stats = [_mean_std(cells[(variant, g)]) if cells.get((variant, g)) else (np.nan, 0.0) for g in groups]
        means = np.array([scale * m for m, _ in stats])
        stds = np.array([scale * s for _, s in stats])
        ax.bar(x - 0.4 + width * (i + 0.5), means, width, yerr=stds, capsize=2, label=variant)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=8)


def drift_figure(path: Path, rows: list[dict], variants: list[str], title: str) -> bool:
    """Normalised state drift per variant: bars (± std over seeds) for complete and the fixed conditions, and a
    line (± std band) against the random missing rate. ``rows``: an analyses payload's ``drift`` rows."""
    rows = [r for r in rows if r.get("normalized") is not None and np.isfinite(r["normalized"])]
    if not rows:
        return False
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        cells.setdefault((r["variant"], r["condition"]), []).append(float(r["normalized"]))
    conditions = {r["condition"] for r in rows}
    fixed = [c for c in ["complete", *FIXED_ORDER] if c in conditions]
    rates = rate_columns(conditions, "random")
    shown = _ordered(variants, rows)
    panels = [p for p, have in (("fixed", fixed), ("random", rates)) if have]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "fixed":
            _grouped_bars(ax, fixed, shown, cells)
            ax.set_xlabel("condition (modalities kept)")
        else:
            for variant in shown:
                have = [c for c in rates if cells.get((variant, c))]
                if not have:
                    continue
                x = [float(c.split(":")[1]) for c in have]
                stats = [_mean_std(cells[(variant, c)]) for c in have]
                mean = np.array([m for m, _ in stats])
                std = np.array([s for _, s in stats])
                ax.plot(x, mean, marker="o", label=variant)
                ax.fill_between(x, mean - std, mean + std, alpha=0.2)
            ax.set_xlabel("random missing rate p")
        ax.set_ylabel("normalised drift ||s/|s| - t/|t|||^2")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)
    return True


def rejection_figure(path: Path, rows: list[dict], variants: list[str], title: str) -> bool:
    """Conflict rejection rate (percent) per swapped modality type and variant: bars, ± std over seeds.
    ``rows``: an analyses payload's ``rejection`` rows."""
    rows = [r for r in rows if r.get("rate") is not None and np.isfinite(r["rate"])]
    if not rows:
        return False
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        cells.setdefault((r["variant"], r["type"]), []).append(float(r["rate"]))
    types = [t for t in ("a", "v", "av") if any(r["type"] == t for r in rows)]
    types += [t for t in dict.fromkeys(r["type"] for r in rows) if t not in types]
    shown = _ordered(variants, rows)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(types) * max(1, len(shown)) / 2), 4))
    _grouped_bars(ax, types, shown, cells, scale=100.0)
    ax.set_xlabel("swapped modalities (conflict type)")
    ax.set_ylabel("rejection rate (%)")
    ax.set_ylim(0, 112)
    ax.legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)
    return True
