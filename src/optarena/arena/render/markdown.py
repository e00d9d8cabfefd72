"""Safe Markdown for names a user chose: one place that writes text and code spans.

Experiment, task, optimizer and variant names and a claims file's ids and texts go into the
Markdown report and the evidence page. Any of them may hold backticks, ``<``, ``&``, ``|`` or line
breaks; written naively, a backtick closes its code span early and what follows is Markdown again —
raw HTML included — and a ``|`` or a line break splits a table row. These helpers follow CommonMark
and GitHub's table extension:

* :func:`code_span` delimits the text with a backtick run longer than any run inside it, pads it
  with one space on each side when it starts or ends with a backtick (or with a space at both ends:
  CommonMark strips one there), and turns line breaks into spaces (as CommonMark does inside a
  code span).
* :func:`text` backslash-escapes what would start emphasis, code or a link, and writes ``&``, ``<``
  and ``>`` as entities, so no name can become raw HTML.
* With ``in_table=True`` both escape ``|`` as ``\\|`` — also inside a code span: GitHub splits a
  table row at unescaped pipes before it reads code spans.
* :func:`link_target` percent-encodes a link's destination.
"""

from __future__ import annotations

import re
from urllib.parse import quote

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BACKTICKS = re.compile(r"`+")


def _one_line(value: str) -> str:
    return _LINE_BREAK.sub(" ", value)


def code_span(value: str, *, in_table: bool = False) -> str:
    """``value`` as one CommonMark code span that shows exactly ``value`` (line breaks as spaces)."""
    value = _one_line(str(value))
    longest = max((len(run) for run in _BACKTICKS.findall(value)), default=0)
    fence = "`" * (longest + 1)
    if not value:
        return f"{fence} {fence}"  # a code span cannot be empty: one space shows as one space
    pad = value[0] == "`" or value[-1] == "`" or (value[0] == " " and value[-1] == " " and value.strip(" ") != "")
    space = " " if pad else ""
    span = f"{fence}{space}{value}{space}{fence}"
    return span.replace("|", "\\|") if in_table else span


def text(value: str, *, in_table: bool = False) -> str:
    """``value`` as plain Markdown text: no emphasis, code, link or raw HTML can start inside it."""
    out = _one_line(str(value))
    out = out.replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`").replace("](", "\\](")
    # '_' is left alone: GitHub does not read intraword underscores (lookahead_adamw) as emphasis.
    out = out.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return out.replace("|", "\\|") if in_table else out


def link_target(path: str) -> str:
    """A link or image destination: ``path`` percent-encoded (``/`` kept), so no character can end it early."""
    return quote(str(path), safe="/")


__all__ = ["code_span", "link_target", "text"]
