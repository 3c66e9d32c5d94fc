"""Every figure of every report (PNG, matplotlib Agg, written atomically), drawn by the reporting layer.

A run's figures (:func:`write_run_figures`: the t-SNE panels of the fused states and the score against the
random missing rate) and a grid's (the same two per corpus key, plus state drift and conflict rejection). Each
function draws one figure from plain data (records, an analyses payload's rows, embeddings) and returns whether it
drew anything. The computations behind them (drift, rejection, the embeddings) live in
:mod:`corekd.evaluation.analyses`; nothing there draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from corekd.files import atomic_write
from corekd.reporting.tables import FIXED_ORDER, rate_columns

TSNE_COLUMNS = 3  # t-SNE panels per row
TSNE_FIGURE = "figures/tsne_random0.5.png"
CURVE_FIGURE = "figures/f1_vs_missing_rate.png"


# Figures are drawn at 100 dpi and at most MAX_FIGURE_INCHES wide (1100 px), so that report.html's column (70rem)
# shows them at their own size; every text at 12 pt or more (about 17 px at 100 dpi, the page's 16 px text or larger).
FIGURE_DPI = 100
MAX_FIGURE_INCHES = 11.0
FIGURE_RC = {
    "font.size": 12,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "legend.title_fontsize": 12,
    "figure.titlesize": 14,
}


def pyplot():
    """matplotlib.pyplot on the Agg backend, with the reports' text sizes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(FIGURE_RC)
    return plt


def legend_outside(ax_or_fig, handles=None, labels=None, ncol: int = 1):
    """A legend right of the axes (never over the data); on a figure, right of every panel."""
    kwargs = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "ncol": ncol, "frameon": False}
    if handles is not None:
        return ax_or_fig.legend(handles, labels, **kwargs)
    return ax_or_fig.legend(**kwargs)


def write_run_figures(
    out_dir: str | Path, embeddings: dict, records: list[dict], task: str, labels: list[str], condition: str
) -> list[str]:
    """A run's figures that can be drawn, as paths relative to ``out_dir`` (what analyses.json lists under
    ``figures``): the t-SNE panels of ``embeddings`` (variant -> (fused [n, H], target [n]) taken under
    ``condition``: ``RunAnalyses.embeddings`` and ``TSNE_CONDITION``) and the test score against the random missing
    rate from ``records``."""
    written = []
    (Path(out_dir) / "figures").mkdir(exist_ok=True)
    if embeddings and tsne_figure(Path(out_dir) / TSNE_FIGURE, embeddings, task, labels, condition):
        written.append(TSNE_FIGURE)
    if curve_figure(Path(out_dir) / CURVE_FIGURE, records, task):
        written.append(CURVE_FIGURE)
    return written


def tsne_figure(path: Path, embeddings: dict, task: str, labels: list[str], condition: str) -> bool:
    """t-SNE panels of ``embeddings`` (variant -> (fused [n, H], target [n]), taken under ``condition``), one per
    variant with at least 5 points, coloured by the true label (regression: the true score)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    plt = pyplot()
    panels = [(v, e) for v, e in embeddings.items() if len(e[0]) >= 5]
    if not panels:
        return False
    # Panels wrapped into rows of at most TSNE_COLUMNS, so each stays about 3 inches wide whatever the variants.
    ncols = min(TSNE_COLUMNS, len(panels))
    nrows = -(-len(panels) // ncols)
    legend_in = 0.0 if task == "regression" else 2.0
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(min(MAX_FIGURE_INCHES, 3.0 * ncols + legend_in), 3.1 * nrows + 0.6),
        squeeze=False,
        layout="constrained",
    )
    handles: dict = {}
    for ax, (variant, (fused, target)) in zip(axes.flat, panels):
        perplexity = float(min(30.0, max(2.0, (len(fused) - 1) / 3)))
        # Barnes-Hut on as many OpenMP threads as torch uses (the run's `threads`): about half the CPU time of
        # exact gradients at 600 points, and no spinning threads on a busy machine
        with threadpool_limits(limits=torch.get_num_threads(), user_api="openmp"):
            xy = TSNE(
                n_components=2, perplexity=perplexity, init="pca", random_state=0, max_iter=500, method="barnes_hut"
            ).fit_transform(fused)
        if task == "regression":
            points = ax.scatter(xy[:, 0], xy[:, 1], c=target, cmap="coolwarm", s=6, vmin=-3, vmax=3)
        else:
            for k, name in enumerate(labels):
                hit = target == k
                if hit.any():
                    handles[name] = ax.scatter(xy[hit, 0], xy[hit, 1], s=6, label=name, color=f"C{k % 10}")
        ax.set_title(variant)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    if task == "regression":
        fig.colorbar(points, ax=axes, shrink=0.6, label="true sentiment")
    elif handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside right upper",
            markerscale=3,
            frameon=False,
            title="true label",
        )
    fig.suptitle(f"fused states at {condition} (t-SNE)")
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=FIGURE_DPI))
    plt.close(fig)
    return True


def curve_figure(path: Path, records: list[dict], task: str) -> bool:
    """The test score (weighted F1 in percent; MAE) against the random missing rate, a line per variant with a
    ± std band over seeds."""
    plt = pyplot()
    metric = "mae" if task == "regression" else "weighted_f1"
    rows = [
        r
        for r in records
        if r.get("split", "test") == "test"
        and r.get("applicable", True)
        and str(r.get("condition", "")).startswith("random:")
        and metric in r
    ]
    if not rows:
        return False
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    # Scores in percent, as in the tables (MAE as it is); the legend right of the axes, in two columns beyond 12
    ncol = 2 if len(variants) > 12 else 1
    fig, ax = plt.subplots(figsize=(min(MAX_FIGURE_INCHES, 6.0 + 2.3 * ncol), 4.8), layout="constrained")
    scale = 1.0 if metric == "mae" else 100.0
    for variant in variants:
        by_rate: dict[float, list[float]] = {}
        for r in rows:
            if r["variant"] == variant:
                by_rate.setdefault(float(r["condition"].split(":")[1]), []).append(scale * r[metric])
        rates = sorted(by_rate)
        mean = np.array([np.mean(by_rate[p]) for p in rates])
        std = np.array([np.std(by_rate[p], ddof=1) if len(by_rate[p]) > 1 else 0.0 for p in rates])
        ax.plot(rates, mean, marker="o", label=variant)
        ax.fill_between(rates, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("random missing rate p")
    ax.set_ylabel("MAE" if metric == "mae" else "weighted F1 (%)")
    legend_outside(ax, ncol=ncol)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=FIGURE_DPI))
    plt.close(fig)
    return True


# ------------------------------------------------------------------ grid figures
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
    plt = pyplot()
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
    plt = pyplot()
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(min(MAX_FIGURE_INCHES, 6.5 + 2.2 * ncol), 4.2 * len(panels) + 0.5),
        squeeze=False,
        layout="constrained",
    )
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
    plt = pyplot()
    width = min(MAX_FIGURE_INCHES, 2.0 + 2.8 * len(types))
    fig, axes = plt.subplots(
        1, len(types), figsize=(width, 0.34 * len(shown) + 1.6), sharey=True, squeeze=False, layout="constrained"
    )
    y = np.arange(len(shown))
    for ax, t in zip(axes[0], types):
        stats = [_mean_std(cells[(v, t)]) if cells.get((v, t)) else (np.nan, 0.0) for v in shown]
        ax.barh(
            y,
            [100 * m for m, _ in stats],
            xerr=[100 * s for _, s in stats],
            capsize=2,
            color=[f"C{k}" for k in range(len(shown))],
        )
        ax.set_title(f"swapped: {t}")
        ax.set_xlim(0, 105)
        ax.set_xlabel("rejection rate (%)")
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels(shown)
    axes[0, 0].invert_yaxis()
    fig.suptitle(title)
    _save(fig, path)
    return True
