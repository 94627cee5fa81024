"""Document blocks and their two renderings: Markdown (figures linked) and self-contained
HTML (figures embedded as base64 ``data:`` URIs; no external resources, no scripts)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    """A section heading (level 1-4); ``anchor`` becomes the HTML id."""

    level: int
    text: str
    anchor: str | None = None


@dataclass
class Para:
    """A paragraph of plain text (escaped in both renderings)."""

    text: str
    small: bool = False


@dataclass
class Bullets:
    """A bulleted list of plain-text items."""

    items: list[str]


@dataclass
class Table:
    """A table of plain-text cells. ``numeric`` marks right-aligned columns."""

    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)
    css: str = ""


@dataclass
class Image:
    """A PNG figure: ``path`` on disk, ``rel`` the link used in Markdown."""

    path: Path
    rel: str
    alt: str
    caption: str | None = None


@dataclass
class ImageGrid:
    """Several figures side by side (HTML) or one after another (Markdown)."""

    images: list[Image]


Block = Heading | Para | Bullets | Table | Image | ImageGrid


def slug(text: str) -> str:
    """An HTML id from heading text (lowercase, non-alphanumerics -> ``-``)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


# --------------------------------------------------------------------------- markdown
_MD_SPECIAL = re.compile(r"([\\`*])")
_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_escape(text: str, *, table: bool = False) -> str:
    """Escape text so Markdown shows it literally (``*``, backticks, tag-like ``<x``,
    word-boundary ``_``; in tables also ``|`` and newlines)."""
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _MD_TAG.sub(r"\\<", text)
    text = _MD_UNDERSCORE.sub(r"\\_", text)
    if table:
        text = text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text


def render_markdown(title: str, blocks: list[Block]) -> str:
    """Render blocks as GitHub-flavoured Markdown; images link to ``Image.rel``."""
    out = [f"# {md_escape(title)}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + md_escape(b.text), ""]
        elif isinstance(b, Para):
            out += [md_escape(b.text), ""]
        elif isinstance(b, Bullets):
            out += [f"- {md_escape(item)}" for item in b.items] + [""]
        elif isinstance(b, Table):
            cols = len(b.headers)
            num = (b.numeric + [False] * cols)[:cols]
            out.append("| " + " | ".join(md_escape(h, table=True) for h in b.headers) + " |")
            out.append("|" + "|".join("---:" if n else "---" for n in num) + "|")
            for row in b.rows:
                cells = (list(row) + [""] * cols)[:cols]
                out.append("| " + " | ".join(md_escape(c, table=True) for c in cells) + " |")
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{md_escape(b.alt)}]({b.rel})", ""]
            if b.caption:
                out += [f"*{md_escape(b.caption)}*", ""]
        elif isinstance(b, ImageGrid):
            for im in b.images:
                out += [f"![{md_escape(im.alt)}]({im.rel})", ""]
                if im.caption:
                    out += [f"*{md_escape(im.caption)}*", ""]
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- html
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans','DejaVu Sans','Noto Sans Arabic','Noto Naskh Arabic','Noto Sans Devanagari','Noto Sans Bengali','Noto Sans Gurmukhi','Noto Sans Gujarati','Noto Sans Tamil','Noto Sans Telugu','Noto Sans Sinhala','Noto Sans Thai','Noto Sans Myanmar','Noto Sans Ethiopic','Noto Sans CJK SC','Noto Sans CJK TC','Noto Sans CJK JP','Noto Sans CJK KR','Microsoft YaHei','Nirmala UI','Leelawadee UI','Myanmar Text','Ebrima',sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1240px;margin:0 auto;padding:24px 32px 64px;background:#fff}
h1{font-size:1.7em;margin:.2em 0 .6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.86em}
th,td{border:1px solid #d8d8d8;padding:4px 8px;vertical-align:top}
th{background:#f1f3f5;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
.tw{overflow-x:auto;max-width:100%}
tr:nth-child(even) td{background:#fbfbfc}
table.samples td{max-width:360px;font-size:.95em}
figure{margin:.5em 0 1.2em}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{flex:0 1 590px;margin:0}
nav ul{columns:2;font-size:.92em}p.small{font-size:.85em;color:#555}
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _html_figure(im: Image) -> str:
    cap = f"<figcaption>{html.escape(im.caption)}</figcaption>" if im.caption else ""
    return f'<figure><img src="{_data_uri(im.path)}" alt="{html.escape(im.alt, quote=True)}">{cap}</figure>'


def render_html(title: str, blocks: list[Block]) -> str:
    """Render blocks as one self-contained HTML page (inline CSS, images as data URIs,
    a table of contents linking to in-page anchors only)."""
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if toc:
        items = "".join(
            f'<li><a href="#{b.anchor or slug(b.text)}">{html.escape(b.text)}</a></li>' for b in toc
        )
        out.append(f"<nav><ul>{items}</ul></nav>")
    for b in blocks:
        if isinstance(b, Heading):
            lvl = min(max(b.level, 2), 6)
            out.append(f'<h{lvl} id="{b.anchor or slug(b.text)}">{html.escape(b.text)}</h{lvl}>')
        elif isinstance(b, Para):
            cls = ' class="small"' if b.small else ""
            out.append(f"<p{cls}>{html.escape(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            cols = len(b.headers)
            num = (b.numeric + [False] * cols)[:cols]
            cls = f' class="{b.css}"' if b.css else ""
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
            rows = []
            for row in b.rows:
                cells = (list(row) + [""] * cols)[:cols]
                rows.append(
                    "<tr>"
                    + "".join(
                        f'<td class="n">{html.escape(c)}</td>' if n else f"<td>{html.escape(c)}</td>"
                        for c, n in zip(cells, num)
                    )
                    + "</tr>"
                )
            out.append(
                f'<div class="tw"><table{cls}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
            )
        elif isinstance(b, Image):
            out.append(_html_figure(b))
        elif isinstance(b, ImageGrid):
            out.append('<div class="grid">' + "".join(_html_figure(im) for im in b.images) + "</div>")
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
