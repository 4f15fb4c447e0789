"""User-controlled text reaches the page as text (issue 14, defect 2): the escaping helpers, and the handlers that
put file names, zip member names and DICOM text fields into toasts and Markdown.

The browser-level check (a toast must not render an ``<img>`` from a zip member name) is in
``tests/app/test_app_browser.py``; here, no server.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import gradio as gr
import pytest

from codixr.app.escaping import html_text, markdown_code, markdown_text
from codixr.app.ui import guarded
from codixr.app.uploads import StudyUploadError
from tests.app.fixtures import write_dicom, write_zip

# Zip member names (a zip member's name is what follows its last "/", so none has one): the one seen in the issue,
# and what else a name can carry.
MEMBER_NAMES = [
    '<img src="http:\\\\beacon.invalid\\leak.png">.dcm',
    "<a href=javascript:alert(1)>click.dcm",
    "<form action=javascript:alert(1)><input name=q value=x><button>go.dcm",
    "x`<img src=http:\\\\beacon.invalid\\md.png>`y.dcm",  # breaks out of a one-backtick code span
    "![pixel](http:\\\\beacon.invalid\\md.png).dcm",
    "[link](javascript:alert(1)) **bold** _em_ ~~s~~ <b>b &amp; $$x^2$$ | cell | #1.dcm",
]
# And text from anywhere else (impressions, reader codes, DICOM fields): line breaks, closing tags, autolinks.
HOSTILE = MEMBER_NAMES + [
    "line one\n# heading\n- item\r\n<script>alert(1)</script>",
    "www.beacon.invalid http://beacon.invalid/a.png name@beacon.invalid",
    "</p><img src=http://beacon.invalid/x.png>",
]


class _Tags(HTMLParser):
    """Collects the tags of an HTML fragment and its text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _parse(fragment: str) -> _Tags:
    parser = _Tags()
    parser.feed(fragment)
    parser.close()
    return parser


def _one_line(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", text)


def _markdown():
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py (a gradio dependency) is not installed")
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])


@pytest.mark.parametrize("text", HOSTILE)
def test_html_text_is_text_in_html(text):
    parsed = _parse(html_text(text))
    assert parsed.tags == [] and "".join(parsed.text) == text
    assert html_text(None) == "" and html_text(3) == "3"


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_text_renders_as_the_same_text_and_no_markup(text):
    rendered = _markdown().render(markdown_text(text))
    parsed = _parse(rendered)
    assert parsed.tags == ["p"], rendered  # one paragraph: no heading, list, link, image, code, emphasis, html
    assert "".join(parsed.text).strip() == _one_line(text).strip()


@pytest.mark.parametrize("text", HOSTILE + ["plain.dcm", "`", "a``b", " lead", "trail`"])
def test_markdown_code_is_one_code_span_holding_the_name(text):
    rendered = _markdown().render(f"File {markdown_code(text)} was not used.")
    parsed = _parse(rendered)
    assert parsed.tags == ["p", "code"], rendered
    code = rendered.split("<code>", 1)[1].split("</code>", 1)[0]
    assert html.unescape(code) == _one_line(text)
    assert markdown_code("frontal.dcm") == "`frontal.dcm`"  # what the study message has always shown


def test_errors_with_markup_in_them_reach_the_toast_as_text():
    name = HOSTILE[0]

    @guarded("Study upload")
    def handler():
        raise StudyUploadError(f"None of the uploaded files is a readable chest X-ray:\n- `{name}`: not a DICOM")

    with pytest.raises(gr.Error) as caught:
        handler()
    assert "<img" not in caught.value.message and "&lt;img" in caught.value.message
    assert "img" not in _parse(caught.value.message).tags and name in html.unescape(caught.value.message)


def test_study_upload_shows_hostile_member_names_as_text(tmp_path, monkeypatch):
    """The study handler's toasts and Markdown, fed a zip whose member names are markup."""
    from codixr.app.config import AppConfig
    from codixr.app.runtime import ModelService, TempStore
    from codixr.app.ui import build_app

    seen: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message="", *a, **k: seen.append(message))
    members = {"frontal.dcm": write_dicom(tmp_path / "f.dcm", seed=1, view_position="PA").read_bytes(),
               **{name: b"not a dicom" for name in MEMBER_NAMES}}
    archive = write_zip(tmp_path / "study.zip", members)
    demo = build_app(AppConfig(examples_dir=tmp_path / "none"), ModelService(), TempStore(tmp_path / "temp"))
    study = next(fn for fn in demo.fns.values() if fn.api_name == "study").fn
    frontal, lateral, markdown, pngs = study([str(archive)])
    rendered = _markdown().render(markdown)
    tags = _parse(rendered).tags
    assert {"img", "a", "form", "input", "script", "h1", "button"}.isdisjoint(tags), rendered
    shown = "".join(_parse(rendered).text)
    assert all(name in shown for name in MEMBER_NAMES), shown  # every name is shown as it is, as text
    for message in seen:
        assert {"img", "a", "form", "input", "script"}.isdisjoint(_parse(message).tags), message


@pytest.mark.parametrize("message", [
    "This DICOM is a CT image (Modality=CT); CoDiXR reads chest radiographs (CR/DX). Export it again.",
    "The file is empty (0 bytes): the transfer or export did not complete. Pillow's limit, 25 MP.",
])
def test_markdown_text_leaves_ordinary_messages_as_they_read(message):
    assert markdown_text(message) == message


@pytest.mark.parametrize(("text", "escaped"), [
    ("# heading", "\\# heading"), ("12. item", "12\\. item"), ("- item", "\\- item"),
    ("see http://x.invalid or WWW.x.invalid or a@x.invalid",
     "see http\\://x.invalid or WWW\\.x.invalid or a\\@x.invalid"),
])
def test_markdown_text_breaks_block_starts_and_autolinks(text, escaped):
    assert markdown_text(text) == escaped
