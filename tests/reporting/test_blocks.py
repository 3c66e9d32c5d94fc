"""corekd.reporting.blocks: one block list rendered to Markdown and to HTML, escaped in both."""

from corekd.reporting.blocks import (
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Quote,
    Table,
    md,
    render_html,
    render_markdown,
    write_page,
)

BLOCKS = [
    Heading(1, "Results: a <b>"),
    Paragraph("Re-run: `corekd run x.yaml` & **bold**"),
    Quote("**WARNING:** careful"),
    Bullets(("one", "two <i>")),
    Table(("method \\ p", "0.5"), (("a|b", "1.00 ± 0.10"), ("c  d\ne", "–"))),
    Figure("figures/x.png", "caption `x`"),
]


def test_markdown():
    assert render_markdown(BLOCKS) == (
        "# Results: a <b>\n\n"
        "Re-run: `corekd run x.yaml` & **bold**\n\n"
        "> **WARNING:** careful\n\n"
        "- one\n- two <i>\n\n"
        "| method \\\\ p | 0.5 |\n|---|---|\n| a\\|b | 1.00 ± 0.10 |\n| c d e | – |\n\n"
        "![caption `x`](figures/x.png)\n"
    )
    assert md("a|b\\c\n  d") == "a\\|b\\\\c d"


def test_html_escapes_and_inlines(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "x.png").write_bytes(b"\x89PNG")
    page = render_html(BLOCKS, tmp_path, "t <1>")
    assert "<title>t &lt;1&gt;</title>" in page
    assert "<h1>Results: a &lt;b&gt;</h1>" in page
    assert "<p>Re-run: <code>corekd run x.yaml</code> &amp; <strong>bold</strong></p>" in page
    assert "<blockquote><strong>WARNING:</strong> careful</blockquote>" in page
    assert "<li>two &lt;i&gt;</li>" in page
    assert "<th>method \\ p</th>" in page and "<td>a|b</td>" in page
    assert 'src="data:image/png;base64,iVBORw==' in page and "<figcaption>caption <code>x</code></figcaption>" in page
    assert "<script" not in page


def test_missing_figure_is_said_not_fatal(tmp_path):
    page = render_html([Figure("figures/gone.png", "gone")], tmp_path, "t")
    assert "Figure missing: <code>figures/gone.png</code>" in page


def test_write_page_writes_both(tmp_path):
    md_path, html_path = write_page(tmp_path, BLOCKS[:2], "title", stem="sweep")
    assert md_path.name == "sweep.md" and html_path.name == "sweep.html"
    assert md_path.read_text(encoding="utf-8") == render_markdown(BLOCKS[:2])
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
