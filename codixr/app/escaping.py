"""User text shown as text: one place that escapes what a user or a file controls before it reaches the page.

Gradio renders the message of ``gr.Error`` / ``gr.Warning`` / ``gr.Info`` as HTML (gradio 6.31's toast puts it
through ``{@html}`` after a sanitiser that keeps ``<img>``, ``<a>``, ``<form>`` and ``<input>``), and
``gr.Markdown`` renders Markdown, then HTML, through the same sanitiser. A file name, a zip member name, an
impression, a reader code or a DICOM text field put into either as is becomes markup. So:

* :func:`html_text` for toasts and ``gr.HTML`` text: ``&``, ``<`` and ``>`` become entities (quotes are left
  as they are: nothing here goes into an attribute);
* :func:`markdown_text` for ``gr.Markdown``: the Markdown-significant characters are backslash-escaped and
  ``&<>`` become entities, so the text reads back exactly as typed, with no emphasis, link, image, autolink,
  code span, heading, list, table cell, LaTeX (``$``) or raw HTML in it;
* :func:`markdown_code` for a name shown as code in Markdown: a code span whose fence is longer than any run
  of backticks in the name (CommonMark), so nothing in the name can close it.

In Markdown, line breaks become spaces: a name or a DICOM field is one line of text, never a new block.
"""

from __future__ import annotations

import html
import re

__all__ = ["html_text", "markdown_code", "markdown_text"]

# Characters with an inline meaning anywhere in a line (emphasis, code, links and images, tables, strike-through,
# gradio's LaTeX delimiter `$`, backslash escapes); `&<>` become HTML entities instead. Other punctuation only means
# something at the start of a line (headings, lists, quotes) or in an autolink, and is escaped only there, so that
# ordinary messages ("DICOM (.dcm): damaged.") keep their plain Markdown source.
_INLINE_SPECIAL = frozenset("\\`*_[]|~$")
_BLOCK_START = re.compile(r"^\s*(?:[#>+=-]|\d+[.)])")
_AUTOLINK = re.compile(r"(?i)(://|www\.|@)")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")


def _one_line(text: object) -> str:
    return _LINE_BREAKS.sub(" ", "" if text is None else str(text))


def html_text(text: object) -> str:
    """``text`` as HTML text content (for ``gr.Error``, ``gr.Warning``, ``gr.Info`` and ``gr.HTML``)."""
    return html.escape("" if text is None else str(text), quote=False)


def markdown_text(text: object) -> str:
    """``text`` as literal Markdown (for ``gr.Markdown``): shown exactly as written, never as markup."""
    text = "".join(_ENTITIES.get(c) or (f"\\{c}" if c in _INLINE_SPECIAL else c) for c in _one_line(text))
    text = _AUTOLINK.sub(lambda m: m.group(1)[:-1] + "\\." if m.group(1).endswith(".") else "\\" + m.group(1),
                         text)  # "http\://", "www\.", "\@": no autolink
    start = _BLOCK_START.match(text)
    return text if start is None else text[:start.end() - 1] + "\\" + text[start.end() - 1:]


def markdown_code(text: object) -> str:
    """``text`` as an inline code span in Markdown, fenced so that no backtick in it can end the span."""
    text = _one_line(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}"
