"""report.html readable in a browser: figures at most 1100 px wide (shown at their own size in the 70rem column)
with text of 12 pt or more, legends outside the data, scores in percent as in the tables, axis labels in words;
tables and figures scroll sideways rather than clip. (Checked by eye with headless Chromium screenshots too.)"""

import struct

import numpy as np
import pytest

from corekd.reporting.blocks import CSS, Figure, Table, render_html
from corekd.reporting.figures import (
    FIGURE_RC,
    MAX_FIGURE_INCHES,
    curve_figure,
    drift_figure,
    pyplot,
    rejection_figure,
    tsne_figure,
)

VARIANTS = [f"variant_{k:02d}" for k in range(16)]
FIXED = ["complete", "fixed:l", "fixed:a", "fixed:v", "fixed:la", "fixed:lv", "fixed:av"]


def _png_size(path):
    return struct.unpack(">II", path.read_bytes()[16:24])


@pytest.fixture
def drawn(monkeypatch):
    """Every figure a drawing function closes, kept open for inspection."""
    plt = pyplot()
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    yield figs
    monkeypatch.undo()
    plt.close("all")


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _check(fig, path):
    width, height = _png_size(path)
    assert width <= 100 * MAX_FIGURE_INCHES + 1  # never shrunk by the page column
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [
        t
        for t in fig.findobj(lambda o: hasattr(o, "get_fontsize") and hasattr(o, "get_text"))
        if t.get_text().strip() and t.get_visible()
    ]
    assert texts and min(t.get_fontsize() for t in texts) >= 12
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    for legend in legends:  # outside every panel's data area
        box = legend.get_window_extent(renderer)
        assert not any(
            _overlaps(box, ax.get_window_extent(renderer)) for ax in fig.axes if ax.get_visible() and ax.axison
        ), legend
    labels = [ax.get_xlabel() + ax.get_ylabel() for ax in fig.axes]
    assert not any("||" in text or "^2" in text for text in labels)  # words, not a raw formula
    return labels


def test_grid_figures_with_sixteen_variants_are_readable(tmp_path, drawn):
    rng = np.random.default_rng(0)
    drift = [
        {"variant": v, "method": "m", "seed": s, "condition": c, "normalized": float(rng.uniform(0, 2))}
        for v in VARIANTS
        for s in (0, 1)
        for c in FIXED + ["random:0.0", "random:0.5", "random:0.7"]
    ]
    assert drift_figure(tmp_path / "drift.png", drift, VARIANTS, "k: state drift")
    labels = _check(drawn[-1], tmp_path / "drift.png")
    assert any("normalised state drift" in text for text in labels)
    rejection = [
        {"variant": v, "seed": s, "type": t, "rate": float(rng.uniform())}
        for v in VARIANTS
        for s in (0, 1)
        for t in ("a", "v", "av")
    ]
    assert rejection_figure(tmp_path / "rejection.png", rejection, VARIANTS, "k: conflict rejection")
    fig = drawn[-1]
    _check(fig, tmp_path / "rejection.png")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == VARIANTS  # named on the axis: no legend
    records = [
        {"variant": v, "seed": s, "condition": f"random:{p}", "split": "test", "weighted_f1": 0.3 + 0.01 * k}
        for k, v in enumerate(VARIANTS)
        for s in (0, 1)
        for p in (0.0, 0.5, 0.7)
    ]
    assert curve_figure(tmp_path / "curve.png", records, "classification")
    fig = drawn[-1]
    _check(fig, tmp_path / "curve.png")
    assert fig.axes[0].get_ylabel() == "weighted F1 (%)"  # percent, as the tables
    assert max(max(line.get_ydata()) for line in fig.axes[0].get_lines()) == pytest.approx(45.0)


def test_tsne_panels_wrap_into_rows(tmp_path, drawn):
    rng = np.random.default_rng(1)
    embeddings = {v: (rng.normal(size=(8, 4)).astype(np.float32), rng.integers(0, 3, 8)) for v in VARIANTS[:4]}
    assert tsne_figure(tmp_path / "tsne.png", embeddings, "classification", ["a", "b", "c"], "random:0.5")
    fig = drawn[-1]
    _check(fig, tmp_path / "tsne.png")
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 4 and len({round(ax.get_position().y0, 3) for ax in panels}) == 2  # 3 + 1, not 1 x 4
    assert min(ax.get_window_extent().width for ax in panels) >= 250  # each panel about 3 inches wide


def test_rc_text_is_at_least_the_pages():
    assert min(v for v in FIGURE_RC.values()) >= 12  # 12 pt at 100 dpi: about 17 px, the page's text is 16 px


def test_tables_and_figures_scroll_rather_than_clip(tmp_path):
    (tmp_path / "f.png").write_bytes(b"\x89PNG")
    page = render_html([Table(("a", "b"), (("1", "2"),)), Figure("f.png", "cap")], tmp_path, "t")
    assert '<div class="table-wrap"><table>' in page
    assert ".table-wrap{overflow-x:auto" in CSS and "figure{margin:1rem 0;overflow-x:auto" in CSS
    assert "img{max-width:none" in CSS  # a figure is never shrunk (its text with it)
