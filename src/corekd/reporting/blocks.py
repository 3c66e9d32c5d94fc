"""The one block model of every report, rendered twice: to Markdown and to a self-contained HTML page.

A report (a run's, a sweep's, a grid's) is built ONCE as a list of blocks; :func:`render_markdown` and
:func:`render_html` turn the same list into ``<stem>.md`` and ``<stem>.html`` (:func:`write_page`), so both
always hold the same numbers. Inline markup inside text is limited to ``code`` (backticks) and **bold**.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from corekd.files import atomic_write


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str  # inline markup: `code` and **bold** only


@dataclass(frozen=True)
class Quote:
    """A block quote (a warning banner): ``> text`` in Markdown, ``<blockquote>`` in HTML."""

    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the report's folder
    caption: str


Block = Heading | Paragraph | Quote | Bullets | Table | Figure


def md(text: object) -> str:
    """``text`` safe inside a Markdown table cell: ``|`` and ``\\`` escaped, line breaks and runs of spaces as one."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").split())


def markdown_table_lines(table: Table) -> list[str]:
    """A table block's Markdown lines: every header and cell escaped with :func:`md`."""
    lines = ["| " + " | ".join(md(h) for h in table.headers) + " |", "|" + "---|" * len(table.headers)]
    return lines + ["| " + " | ".join(md(c) for c in row) + " |" for row in table.rows]


def render_markdown(blocks: list[Block]) -> str:
    """The blocks as Markdown: one blank line between blocks, a newline at the end."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Quote):
            out.append("> " + b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            out.append("\n".join(markdown_table_lines(b)))
        else:
            out.append(f"![{b.caption}]({b.path})")
    return "\n\n".join(out) + "\n"


def inline_html(text: str) -> str:
    """Text with its inline markup as HTML: escaped, then `code` and **bold**."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


# Tables and figures scroll sideways inside the page column instead of being clipped or shrunk: a figure is
# drawn at most 1100 px wide with 12 pt text (corekd.reporting.figures.FIGURE_RC), shown at its own size.
CSS = (
    "body{font-family:system-ui,sans-serif;font-size:16px;max-width:70rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.4;color:#222}"
    ".table-wrap{overflow-x:auto;max-width:100%;margin:.5rem 0 1rem}"
    "table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:.2rem .5rem;"
    "text-align:right;white-space:nowrap}th{background:#eee}td:first-child,th:first-child{text-align:left}"
    "code{background:#f3f3f3;padding:0 .2rem}figure{margin:1rem 0;overflow-x:auto;max-width:100%}"
    "img{max-width:none;height:auto}figcaption{font-size:.9em;color:#555}"
    "blockquote{margin:1rem 0;padding:.3rem 1rem;border-left:4px solid #c33;background:#fff3f3}"
)


def _figure_html(b: Figure, root: Path) -> str:
    file = root / b.path
    if not file.is_file():  # e.g. a report rebuilt after its figures were removed: say so, do not fail
        return f"<p>Figure missing: <code>{html.escape(b.path)}</code></p>"
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(b.caption.replace("`", ""))}" src="data:image/png;base64,{data}">'
        f"<figcaption>{inline_html(b.caption)}</figcaption></figure>"
    )


def render_html(blocks: list[Block], root: Path, title: str) -> str:
    """One HTML file with nothing outside it: figures inline as base64 data URIs (read from ``root``), CSS inline,
    no script."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{inline_html(b.text)}</p>")
        elif isinstance(b, Quote):
            out.append(f"<blockquote>{inline_html(b.text)}</blockquote>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{inline_html(h)}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append(
                f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
            )
        else:
            out.append(_figure_html(b, Path(root)))
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def write_page(root: str | Path, blocks: list[Block], title: str, stem: str = "report") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.html`` side by side in ``root`` (each atomically): (md path, html path)."""
    root = Path(root)
    md_text = render_markdown(blocks)
    html_text = render_html(blocks, root, title)
    md_path, html_path = root / f"{stem}.md", root / f"{stem}.html"
    atomic_write(md_path, lambda p: Path(p).write_text(md_text, encoding="utf-8"))
    atomic_write(html_path, lambda p: Path(p).write_text(html_text, encoding="utf-8"))
    return md_path, html_path
