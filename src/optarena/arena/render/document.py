"""The document model: a page as a list of blocks, rendered to Markdown and to HTML.

A page is built once as blocks (headings, paragraphs, bullet lists, tables, figures) whose text is
runs of :class:`Span`, and rendered to both formats, so the two never disagree and every piece of
text is escaped in one place (:mod:`optarena.arena.render.markdown` for Markdown).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from optarena.arena.render import markdown


@dataclass(frozen=True)
class Span:
    """A run of inline text; bold marks a winner, code marks names and values."""

    text: str
    bold: bool = False
    code: bool = False


Inline = list[Span]


def spans(*parts: str | Span) -> Inline:
    return [p if isinstance(p, Span) else Span(p) for p in parts]


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    parts: Inline
    css: str = ""  # an HTML class (e.g. "warning"); Markdown renders the text alone


@dataclass
class Bullets:
    items: list[Inline]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Inline]]


@dataclass
class Image:
    path: str  # relative to the report, e.g. "figures/digits_curves_step.png"
    alt: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def _md_escape(text: str, in_table: bool = False) -> str:
    # Characters that would start emphasis, code, a link or raw HTML (optarena.arena.render.markdown.text).
    return markdown.text(text, in_table=in_table)


def _md_inline(parts: Inline, in_table: bool = False) -> str:
    out = []
    for span in parts:
        # A name may hold backticks, '<' or '|': code goes in one safe code span (optarena.arena.render.markdown).
        text = markdown.code_span(span.text, in_table=in_table) if span.code else _md_escape(span.text, in_table)
        out.append(f"**{text}**" if span.bold else text)
    return "".join(out)


def _html_inline(parts: Inline) -> str:
    out = []
    for span in parts:
        text = html.escape(span.text)
        if span.code:
            text = f"<code>{text}</code>"
        out.append(f"<strong>{text}</strong>" if span.bold else text)
    return "".join(out)


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown."""
    chunks: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            chunks.append(f"{'#' * block.level} {_md_escape(block.text)}")
        elif isinstance(block, Paragraph):
            chunks.append(_md_inline(block.parts))
        elif isinstance(block, Bullets):
            chunks.append("\n".join(f"- {_md_inline(item)}" for item in block.items))
        elif isinstance(block, Table):
            lines = [
                "| " + " | ".join(_md_escape(h, in_table=True) for h in block.header) + " |",
                "|" + "|".join("---" for _ in block.header) + "|",
            ]
            lines += ["| " + " | ".join(_md_inline(c, in_table=True) for c in row) + " |" for row in block.rows]
            chunks.append("\n".join(lines))
        elif isinstance(block, Image):
            alt = block.alt.replace("[", "(").replace("]", ")")
            chunks.append(f"![{_md_escape(alt)}]({markdown.link_target(block.path)})\n\n*{_md_escape(block.caption)}*")
    return "\n\n".join(chunks) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; padding-bottom: .15em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f3; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f6; padding: 0 .25em; border-radius: 3px; font-size: .95em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e3e3; }
figcaption { color: #555; font-size: .9em; }
.warning { background: #fff4e0; border-left: 4px solid #e69500; padding: .5em .8em; }
"""


def render_html(blocks: Sequence[Block], title: str) -> str:
    """The blocks as one self-contained HTML page (inline CSS, no external resources)."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            css = f' class="{html.escape(block.css)}"' if block.css else ""
            body.append(f"<p{css}>{_html_inline(block.parts)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{_html_inline(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            body.append(
                f'<figure><img src="{html.escape(block.path)}" alt="{html.escape(block.alt)}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
