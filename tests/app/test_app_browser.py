"""A real headless Chromium (Debian's /usr/bin/chromium driven by Playwright) uses the app like a person would.

Skips, with the reason, when Chromium or Playwright is not installed (`bash .ci/browser-deps.sh` installs it).
Every host name but the loopback address resolves to nothing (``--host-resolver-rules``) and every request the
page makes is recorded: it must make none beyond the app's own address. (Requests are watched, not intercepted:
Playwright's request interception holds back the app's server-sent event stream.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.app.fixtures import write_dicom, write_png

pytestmark = pytest.mark.browser
logger = logging.getLogger(__name__)

CHROMIUM = os.environ.get("CODIXR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def browser_page(request, tmp_path_factory):
    """A page of a fresh headless Chromium profile; yields (page, external requests seen)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (run `bash .ci/browser-deps.sh`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    studio = request.getfixturevalue("studio")  # launched only once a browser is known to be there
    external: list[str] = []
    origin = studio.url.rstrip("/")

    def watch(request) -> None:
        if not request.url.startswith((origin, "data:", "blob:")):
            external.append(request.url)

    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1400, "height": 1000})
        context.on("request", watch)
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page, external
        context.close()


def _outputs_shown(page, views: tuple[str, ...], report: bool) -> None:
    for view in views:
        page.locator(f"#out-{view} img").first.wait_for(state="visible")
    if report:
        page.wait_for_function("() => { const t = document.querySelector('#out-report textarea');"
                               " return t && t.value.trim().length > 0; }", timeout=TIMEOUT_MS)


def test_upload_png_generate_and_see_outputs(browser_page, studio, tmp_path):
    page, external = browser_page
    page.goto(studio.url)
    page.get_by_text("CoDiXR Studio").first.wait_for()
    assert "loaded" in page.locator("#codixr-status").inner_text()

    # upload a PNG as the frontal view: its preprocessed preview appears and frontal is no longer an output
    page.locator("#frontal-file input[type=file]").set_input_files(str(write_png(tmp_path / "frontal.png")))
    page.locator("#frontal-preview img").first.wait_for(state="visible")
    page.wait_for_function("() => { const names = [...document.querySelectorAll('#outputs input[type=checkbox]')]"
                           ".map(box => box.name); return names.length === 2 && !names.includes('frontal'); }")

    page.locator("#generate-button").click()
    _outputs_shown(page, ("lateral",), report=True)
    page.wait_for_function("() => document.querySelector('#downloads').innerText.includes('.dcm')")
    assert "Generated" in page.locator("#generate-status").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-generate.png"), full_page=True)
    assert external == [], f"the page tried to reach the network: {external}"


def test_click_to_all_three_outputs(browser_page, studio):
    """From labels only, all three outputs; the time from click to the last output shown is recorded."""
    page, external = browser_page
    page.goto(studio.url)
    page.locator("#generate-button").wait_for()
    page.get_by_label("Edema").check()
    started = time.perf_counter()
    page.locator("#generate-button").click()
    _outputs_shown(page, ("frontal", "lateral"), report=True)
    seconds = time.perf_counter() - started
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "app-click-to-three-outputs.json").write_text(json.dumps(
        {"seconds": round(seconds, 2), "model": os.environ.get("CODIXR_TEST_APP_MODEL") or "tiny test package (64 px)",
         "steps": 20, "cpus": os.cpu_count(), "load_average": os.getloadavg()}))
    logger.info("click to all three outputs: %.2f s", seconds)
    page.screenshot(path=str(ARTIFACTS / "app-generate-three.png"), full_page=True)
    assert external == [], f"the page tried to reach the network: {external}"


def test_study_upload_fills_the_generate_tab(browser_page, studio, tmp_path):
    page, external = browser_page
    page.goto(studio.url)
    page.get_by_role("tab", name="Study upload").click()
    files = [write_dicom(tmp_path / "IM1.dcm", seed=1, view_position="LL"),
             write_dicom(tmp_path / "IM2.dcm", seed=2, view_position="PA")]
    page.locator("#study-files input[type=file]").set_input_files([str(f) for f in files])
    page.get_by_text("2 readable X-ray(s)").first.wait_for()  # the study is read, views assigned
    page.get_by_role("button", name="Use in Generate").click()
    for view in ("frontal", "lateral"):
        page.locator(f"#{view}-preview img").first.wait_for(state="visible")
    page.wait_for_function("() => { const names = [...document.querySelectorAll('#outputs input[type=checkbox]')]"
                           ".map(box => box.name); return names.length === 1 && names[0] === 'report'; }")
    assert external == [], f"the page tried to reach the network: {external}"
