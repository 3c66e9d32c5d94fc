"""The grid report's figures (PNG, matplotlib Agg, written atomically), one set per corpus key.

Each function draws one figure from plain rows (the grid's records or an analyses payload) and returns
whether it drew anything; the score-vs-rate curve and the t-SNE panels reuse the run report's drawing
(``corekd.evaluation.analyses``), so a grid figure reads like a run's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corekd.evaluation.analyses import (
    FIGURE_DPI,
    MAX_FIGURE_INCHES,
    _pyplot,
    curve_figure,
    tsne_figure,
)
from corekd.evaluation.report import FIXED_ORDER, rate_columns
from corekd.files import atomic_write

__all__ = ["curve_figure", "drift_figure", "rejection_figure", "tsne_figure"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (0 for one value, where it is undefined: no error bar)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _ordered(variants: list[str], rows: list[dict]) -> list[str]:
    """The variants the rows name: in ``variants``' order, then any other (none is left out)."""
    named = list(dict.fromkeys(r["variant"] for r in rows))
    return [v for v in variants if v in named] + [v for v in named if v not in variants]


DRIFT_LABEL = "normalised state drift"  # the squared distance between unit-length student and teacher states


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=FIGURE_DPI))
    plt.close(fig)


def _legend_columns(variants: list[str]) -> int:
    return 2 if len(variants) > 12 else 1


def drift_figure(path: Path, rows: list[dict], variants: list[str], title: str) -> bool:
    """Normalised state drift per variant, one panel above the other: per condition (complete and the fixed
    conditions; a point per variant, ± std over seeds), and against the random missing rate (a line per variant,
    ± std band); one legend right of both. ``rows``: an analyses payload's ``drift`` rows."""
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
    ncol = _legend_columns(shown)
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(min(MAX_FIGURE_INCHES, 6.5 + 2.2 * ncol), 4.2 * len(panels) + 0.5),
                             squeeze=False, layout="constrained")
    offsets = np.linspace(-0.3, 0.3, len(shown)) if len(shown) > 1 else np.zeros(1)
    for ax, panel in zip(axes[:, 0], panels):
        for k, variant in enumerate(shown):
            groups = fixed if panel == "fixed" else rates
            have = [c for c in groups if cells.get((variant, c))]
            if not have:
                continue
            stats = [_mean_std(cells[(variant, c)]) for c in have]
            mean = np.array([m for m, _ in stats])
            std = np.array([s for _, s in stats])
            if panel == "fixed":  # points side by side within each condition, so that none hides another
                x = np.array([groups.index(c) for c in have]) + offsets[k]
                ax.errorbar(x, mean, yerr=std, fmt="o", markersize=5, capsize=2, color=f"C{k}", label=variant)
            else:
                x = [float(c.split(":")[1]) for c in have]
                ax.plot(x, mean, marker="o", color=f"C{k}", label=variant)
                ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=f"C{k}")
        if panel == "fixed":
            ax.set_xticks(range(len(fixed)))
            ax.set_xticklabels([c if c == "complete" else "{" + ",".join(c.split(":")[1]) + "}" for c in fixed])
            ax.set_xlabel("condition (modalities kept)")
        else:
            ax.set_xlabel("random missing rate p")
        ax.set_ylabel(DRIFT_LABEL)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", ncol=ncol, frameon=False)  # right of both panels
    fig.suptitle(title)
    _save(fig, path)
    return True


def rejection_figure(path: Path, rows: list[dict], variants: list[str], title: str) -> bool:
    """Conflict rejection rate (percent) per variant, one panel per swapped modality type: horizontal bars (the
    variants named on the axis, no legend), ± std over seeds. ``rows``: an analyses payload's ``rejection`` rows."""
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
    width = min(MAX_FIGURE_INCHES, 2.0 + 2.8 * len(types))
    fig, axes = plt.subplots(1, len(types), figsize=(width, 0.34 * len(shown) + 1.6), sharey=True, squeeze=False,
                             layout="constrained")
    y = np.arange(len(shown))
    for ax, t in zip(axes[0], types):
        stats = [_mean_std(cells[(v, t)]) if cells.get((v, t)) else (np.nan, 0.0) for v in shown]
        ax.barh(y, [100 * m for m, _ in stats], xerr=[100 * s for _, s in stats], capsize=2,
                color=[f"C{k}" for k in range(len(shown))])
        ax.set_title(f"swapped: {t}")
        ax.set_xlim(0, 105)
        ax.set_xlabel("rejection rate (%)")
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(shown)
    axes[0, 0].invert_yaxis()
    fig.suptitle(title)
    _save(fig, path)
    return True
