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


# the output checkboxes that are ticked, as "frontal,lateral,report" (the three choices are always there)
_TICKED_OUTPUTS = ("() => [...document.querySelectorAll('#outputs input[type=checkbox]')].filter(box => box.checked)"
                   ".map(box => box.name).join(',')")


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

    # upload a PNG as the frontal view: its preprocessed preview appears and frontal is unticked as an output
    page.locator("#frontal-file input[type=file]").set_input_files(str(write_png(tmp_path / "frontal.png")))
    page.locator("#frontal-preview img").first.wait_for(state="visible")
    page.wait_for_function(_TICKED_OUTPUTS + " === 'lateral,report'")

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
    page.wait_for_function(_TICKED_OUTPUTS + " === 'report'")
    assert external == [], f"the page tried to reach the network: {external}"


def _write_jpeg(path: Path, seed: int = 0) -> Path:
    from PIL import Image

    from tests.app.fixtures import xray_array

    Image.fromarray(xray_array(seed, (96, 96))).save(path, format="JPEG", quality=90)
    return path


def test_fast_click_while_the_server_is_busy(browser_page, studio, tmp_path):
    """Upload a JPEG frontal, type an impression and click Generate at once while another user's request runs.

    The server's answers that untick the outputs given as inputs are held back until the click has been sent
    (as a busy server delays them), so the click carries all three outputs. The request must still succeed: the
    inputs are used as inputs, the rest is generated and the status says so, never a stack of "Error"s.
    """
    from gradio_client import Client
    from gradio_client.utils import Status

    page, external = browser_page
    page.goto(studio.url)
    page.locator("#generate-button").wait_for()

    # another user keeps the model busy (a long request, in flight before the click)
    other = Client(studio.url, analytics_enabled=False, verbose=False,
                   download_files=str(tmp_path / "other-downloads"))
    busy = other.submit(None, None, "", ["Edema"], ["frontal", "lateral", "report"], 60, 2.0, 0, "dpm++",
                        "truncate", api_name="/generate")
    deadline = time.monotonic() + 30
    while busy.status().code not in (Status.PROCESSING, Status.PROGRESS, Status.FINISHED) \
            and time.monotonic() < deadline:
        time.sleep(0.05)

    held = []  # (route, the server's answer): the server has updated its state, the page does not know yet
    page.route("**/gradio_api/run/predict", lambda route: held.append((route, route.fetch())))
    sent = []  # the payloads of queued events, as the page sent them
    page.on("request", lambda r: sent.append(r.post_data_json) if r.method == "POST" and "/queue/join" in r.url
            else None)
    impression = "Small left pleural effusion. No pneumothorax."
    page.locator("#frontal-file input[type=file]").set_input_files(str(_write_jpeg(tmp_path / "frontal.jpg")))
    page.locator("#frontal-file").get_by_text("frontal.jpg").first.wait_for()  # uploaded, preview not awaited
    page.locator("#impression textarea").fill(impression)
    page.locator("#generate-button").click()
    deadline = time.monotonic() + 30
    while not (clicks := [d["data"] for d in sent if d and len(d["data"]) == 10 and d["data"][2] == impression]) \
            or not held:  # the click has gone, and the server has unticked what the impression made an input
        assert time.monotonic() < deadline, f"the click was sent: {bool(clicks)}; answers held: {len(held)}"
        page.wait_for_timeout(50)
    for route, answer in list(held):
        route.fulfill(response=answer)
    page.unroute("**/gradio_api/run/predict")
    assert held and clicks[0][0] and clicks[0][4] == ["frontal", "lateral", "report"]  # the stale value went

    page.wait_for_function("() => { const s = document.querySelector('#generate-status');"
                           " return (s && s.innerText.includes('Generated'))"
                           " || document.body.innerText.includes('Error'); }", timeout=4 * TIMEOUT_MS)
    status = page.locator("#generate-status").inner_text()
    assert "Error" not in page.locator("body").inner_text(), "the request failed: " + status
    assert "Generated lateral from frontal + report" in status
    assert "The frontal and report are inputs, so they were used as given" in status  # dropped, visibly
    page.locator("#out-lateral img").first.wait_for(state="visible")
    page.wait_for_function(_TICKED_OUTPUTS + " === 'lateral'")  # the held answers arrived: inputs unticked
    assert busy.result(timeout=TIMEOUT_MS / 1000)[2]  # the other user's request succeeded too
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app-fast-click-busy.png"), full_page=True)
    assert external == [], f"the page tried to reach the network: {external}"
