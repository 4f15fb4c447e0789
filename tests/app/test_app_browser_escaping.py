"""Markup in a name stays text on the page (issue 14, defect 2), checked in a real headless Chromium.

A zip whose member names are HTML and Markdown is uploaded on Study upload: its error toast and its study message
must show the names as text, and the page must not hold an ``<img>`` / ``<a href=javascript:…>`` / ``<form>`` /
``<input>`` made from them, nor request ``beacon.invalid`` (which resolves nowhere: the browser's resolver maps
every host but 127.0.0.1 to nothing, and every request the page makes is recorded).
"""

from __future__ import annotations

import pytest

from tests.app.fixtures import write_dicom, write_zip
from tests.app.test_app_browser import TIMEOUT_MS, browser_page  # noqa: F401  (the page fixture)

pytestmark = pytest.mark.browser

ISSUE_NAME = '<img src="http:\\\\beacon.invalid\\leak.png">.dcm'
NAMES = [
    ISSUE_NAME,
    "<a href=javascript:alert(1) id=injected-link>click.dcm",
    "<form id=injected-form action=javascript:alert(1)><input id=injected-input value=x>go.dcm",
    "x`<img src=http:\\\\beacon.invalid\\md.png>`y.dcm",  # a backtick closes a one-backtick code span
    "![pixel](http:\\\\beacon.invalid\\pixel.png) [link](javascript:alert(2)) $$x^2$$ **bold**.dcm",
]
# What must not exist anywhere in the page once the names are shown.
INJECTED = ("img[src*='beacon'], a[href^='javascript'], #injected-link, #injected-form, #injected-input, "
            "form, [data-testid='toast-body'] input, .katex")


def _open_study_tab(page, studio) -> None:
    page.goto(studio.url)
    page.get_by_role("tab", name="Study upload").click()


def test_markup_in_zip_member_names_is_text_in_the_error_toast(browser_page, studio, tmp_path):
    page, external = browser_page
    _open_study_tab(page, studio)
    archive = write_zip(tmp_path / "names.zip", {name: b"not a dicom" for name in NAMES})
    page.locator("#study-files input[type=file]").set_input_files(str(archive))
    toast = page.locator("[data-testid='toast-body']").filter(has_text="readable chest X-ray").first
    toast.wait_for(timeout=TIMEOUT_MS)
    assert page.locator(INJECTED).count() == 0, toast.inner_html()
    assert external == [], f"the page tried to reach the network: {external}"
    text = toast.inner_text()
    for name in NAMES:
        assert name in text, text  # each name is shown, as typed


def test_markup_in_zip_member_names_is_text_in_the_study_message(browser_page, studio, tmp_path):
    page, external = browser_page
    _open_study_tab(page, studio)
    members = {"IM1.dcm": write_dicom(tmp_path / "IM1.dcm", seed=1, view_position="PA").read_bytes(),
               **{name: b"not a dicom" for name in NAMES}}
    page.locator("#study-files input[type=file]").set_input_files(str(write_zip(tmp_path / "study.zip", members)))
    message = page.locator(".prose").filter(has_text="readable X-ray(s)").first
    message.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("() => [...document.querySelectorAll('.prose')].some(e => e.innerText.includes('go.dcm'))")
    assert page.locator(INJECTED).count() == 0, message.inner_html()
    assert external == [], f"the page tried to reach the network: {external}"
    text = message.inner_text()
    for name in NAMES:
        assert name in text, text


def test_markup_in_an_impression_is_text_everywhere_it_is_shown(browser_page, studio):
    """The impression is shown in the highlighted findings, the status and the tables: as text."""
    page, external = browser_page
    page.goto(studio.url)
    impression = ("Small left pleural effusion <img src=http:\\\\beacon.invalid\\impression.png> "
                  "[x](javascript:alert(3)) $$y^2$$ <form><input value=z></form>. No pneumothorax.")
    page.locator("#generate-button").wait_for()
    page.locator("#impression textarea").fill(impression)
    page.wait_for_function("() => ![...document.querySelectorAll('#outputs input[type=checkbox]')]"
                           ".some(box => box.name === 'report' && box.checked)")  # the impression is an input
    page.locator("#generate-button").click()
    page.locator("#out-frontal img").first.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#generate-status').innerText.includes('Generated')")
    page.get_by_text("beacon.invalid").first.wait_for()  # the impression is shown (highlighted findings)
    assert page.locator(INJECTED).count() == 0
    assert external == [], f"the page tried to reach the network: {external}"
