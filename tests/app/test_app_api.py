"""The app through ``gradio_client``, as an API user or another program would use it (tiny model, 127.0.0.1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from codixr.io import SYNTHETIC_MARKER, XRayReadError, read_xray
from tests.app.fixtures import IDENTIFYING_VALUES, write_dicom, write_png, write_zip, xray_array
from tests.io.fixtures import png_bytes, png_header_only

OUTPUT_NAMES = ("frontal", "lateral", "report", "status", "table", "charts", "overlays", "keypatch_note", "highlights",
                "keypatch_words", "downloads")
IMPRESSION = "Small left pleural effusion with adjacent atelectasis. No pneumothorax."
STEPS = 4


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    return {
        "frontal_png": write_png(folder / "frontal.png", seed=1),
        "lateral_png": write_png(folder / "lateral.png", seed=2, shape=(90, 90)),
        "frontal_dcm": write_dicom(folder / "frontal.dcm", seed=3, view_position="PA"),
        "lateral_dcm": write_dicom(folder / "lateral.dcm", seed=4, view_position="LL"),
    }


def generate(client, *, frontal=None, lateral=None, impression="", labels=(), outputs=(), steps=STEPS,
             guidance=2.0, seed=0, sampler="dpm++", long_impression="truncate") -> dict:
    result = client.predict(handle_file(str(frontal)) if frontal else None,
                            handle_file(str(lateral)) if lateral else None, impression, list(labels), list(outputs),
                            steps, guidance, seed, sampler, long_impression, api_name="/generate")
    return dict(zip(OUTPUT_NAMES, result))


def _names(downloads) -> list[str]:
    return sorted(Path(p).name for p in downloads)


CASES = {  # id: (inputs, outputs)
    "F-png->L+R": ({"frontal": "frontal_png"}, ("lateral", "report")),
    "L-png->F": ({"lateral": "lateral_png"}, ("frontal",)),
    "R->F+L": ({"impression": IMPRESSION}, ("frontal", "lateral")),
    "F+R->L": ({"frontal": "frontal_png", "impression": IMPRESSION}, ("lateral",)),
    "F-dcm+L-dcm->R": ({"frontal": "frontal_dcm", "lateral": "lateral_dcm"}, ("report",)),
    "labels->F+L+R": ({"labels": ["Cardiomegaly", "Edema"]}, ("frontal", "lateral", "report")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_generate_each_kind_of_input_and_output(client, files, case):
    given, wanted = CASES[case]
    kwargs = {k: files[v] if k in ("frontal", "lateral") else v for k, v in given.items()}
    out = generate(client, outputs=wanted, **kwargs)

    for view in ("frontal", "lateral"):
        if view in wanted:
            image = Image.open(out[view])
            assert image.size == (64, 64)  # the tiny package's image size
            assert np.asarray(image.convert("L")).std() > 0
        else:
            assert out[view] is None
    assert bool(out["report"].strip()) == ("report" in wanted)
    assert out["status"].startswith(f"Generated **{' + '.join(wanted)}**")

    expected = {"codixr-findings.json"} | {f"codixr-{v}-synthetic.{ext}" for v in wanted if v != "report"
                                           for ext in ("png", "dcm")}
    if "report" in wanted:
        expected.add("codixr-report-synthetic.txt")
    assert _names(out["downloads"]) == sorted(expected)

    # findings of every item, given and generated
    findings = json.loads(next(Path(p) for p in out["downloads"] if p.endswith(".json")).read_text())
    names = {item["name"] for item in findings["items"]}
    given_names = {f"{m.capitalize()} (given)" for m in ("frontal", "lateral") if m in given}
    given_names |= {"Report (given)"} if "impression" in given else set()
    assert names == given_names | {f"{m.capitalize()} (generated)" for m in wanted}
    assert findings["generated"] == list(wanted) and findings["synthetic_marker"] == SYNTHETIC_MARKER
    table = out["table"]
    assert [row[0] for row in table["data"]][:10][0] == "Atelectasis"


def test_dicom_downloads_are_marked_synthetic_and_copy_nothing(client, files):
    out = generate(client, frontal=files["frontal_dcm"], outputs=("lateral", "report"))
    dicom = pydicom.dcmread(next(p for p in out["downloads"] if p.endswith(".dcm")))
    upload = pydicom.dcmread(files["frontal_dcm"])
    assert str(dicom.PatientName) == "SYNTHETIC^CODIXR" and SYNTHETIC_MARKER in dicom.ImageComments
    assert dicom.ViewPosition == "LL" and read_xray(out["downloads"][1]).view == "lateral"
    assert dicom.StudyInstanceUID != upload.StudyInstanceUID and dicom.SOPInstanceUID != upload.SOPInstanceUID
    report = Path(next(p for p in out["downloads"] if p.endswith(".txt"))).read_text()
    assert report.startswith(SYNTHETIC_MARKER) and out["report"] in report
    for path in out["downloads"]:
        content = Path(path).read_bytes()
        assert not any(value.encode() in content for value in IDENTIFYING_VALUES)
    shown = json.dumps(out)
    assert not any(value in shown for value in IDENTIFYING_VALUES)


def test_nothing_identifying_reaches_the_logs(client, files, caplog):
    caplog.set_level(logging.DEBUG)
    generate(client, frontal=files["frontal_dcm"], lateral=files["lateral_dcm"], outputs=("report",))
    client.predict([handle_file(str(files["frontal_dcm"]))], api_name="/study")
    assert caplog.records, "the app logged nothing at all: the check would be empty"
    assert not any(value in caplog.text for value in IDENTIFYING_VALUES)
    assert "frontal.dcm" not in caplog.text


def test_view_check_warns_when_the_frontal_box_holds_a_lateral(client, files):
    image, markdown = client.predict(handle_file(str(files["lateral_dcm"])), api_name="/preview_frontal")
    assert Image.open(image).size == (256, 256)
    assert "**lateral** view by its DICOM ViewPosition" in markdown
    out = generate(client, frontal=files["lateral_dcm"], outputs=("report",))
    assert "**lateral** view by its DICOM ViewPosition" in out["status"]
    _, markdown = client.predict(handle_file(str(files["frontal_dcm"])), api_name="/preview_frontal")
    assert "ViewPosition confirms a frontal view" in markdown and "Warning" not in markdown


def test_review_holds_out_an_image_and_compares(client, files):
    real, synthetic, real_text, synthetic_text, status, chart, table, downloads = client.predict(
        handle_file(str(files["frontal_png"])), handle_file(str(files["lateral_dcm"])), "", "lateral", STEPS, 0,
        api_name="/review")
    assert Image.open(real).size == (256, 256) and Image.open(synthetic).size == (64, 64)
    assert real_text == "" and synthetic_text == ""
    assert "Held out the **lateral**" in status and "agree on" in status
    assert table["headers"][-1] == "Agreement" and len(table["data"]) == 10
    assert {row[3] for row in table["data"]} <= {"agree", "DIFFER", "not compared"}
    assert "codixr-lateral-synthetic.dcm" in _names(downloads)


def test_review_holds_out_the_report(client, files):
    real, synthetic, real_text, synthetic_text, status, chart, table, downloads = client.predict(
        handle_file(str(files["frontal_png"])), None, IMPRESSION, "report", STEPS, 0, api_name="/review")
    assert real is None and synthetic is None and chart is None
    assert real_text == IMPRESSION and synthetic_text.strip()
    rows = {row[0]: row for row in table["data"]}
    assert rows["Pleural Effusion"][1] == "positive" and rows["Pneumothorax"][1] == "negative"
    assert all(row[3] in ("agree", "DIFFER") for row in table["data"])  # the labeler reads every pathology


def test_review_needs_the_real_part_and_something_else(client, files):
    with pytest.raises(AppError, match="upload the real lateral"):
        client.predict(handle_file(str(files["frontal_png"])), None, "", "lateral", STEPS, 0, api_name="/review")
    with pytest.raises(AppError, match="at least one other part"):
        client.predict(handle_file(str(files["frontal_png"])), None, "", "frontal", STEPS, 0, api_name="/review")


def test_study_upload_assigns_views_from_view_position(client, files, tmp_path):
    frontal, lateral, message = client.predict(
        [handle_file(str(files["lateral_dcm"])), handle_file(str(files["frontal_dcm"]))], api_name="/study")
    assert Image.open(frontal).size == Image.open(lateral).size == (256, 256)
    assert "**Frontal:** `frontal.dcm`" in message and "**Lateral:** `lateral.dcm`" in message

    ct = write_dicom(tmp_path / "ct.dcm", modality="CT")
    archive = write_zip(tmp_path / "study.zip", {
        "study/IM1": files["frontal_dcm"].read_bytes(), "study/IM2": files["lateral_dcm"].read_bytes(),
        "study/IM3": ct.read_bytes(), "study/readme.txt": b"notes", "__MACOSX/._IM1": b"\x00", "DICOMDIR": b"x"})
    frontal, lateral, message = client.predict([handle_file(str(archive))], api_name="/study")
    assert frontal and lateral
    assert "`IM3` was not used: This DICOM is a CT image" in message and "`readme.txt` was not used" in message
    assert "DICOMDIR" not in message and "._IM1" not in message
    assert not any(value in message for value in IDENTIFYING_VALUES)


def test_study_upload_says_when_a_view_is_missing_or_ambiguous(client, files, tmp_path):
    second = write_dicom(tmp_path / "second.dcm", seed=9, view_position="AP")
    frontal, lateral, message = client.predict(
        [handle_file(str(files["frontal_dcm"])), handle_file(str(second))], api_name="/study")
    assert frontal is None and lateral is None
    assert "The frontal view is ambiguous: 2 files state it" in message
    assert "No file states a lateral view" in message
    _, _, message = client.predict([handle_file(str(files["frontal_png"]))], api_name="/study")
    assert "`frontal.png` has no view information" in message


def _bad_file(tmp_path: Path, kind: str) -> Path:
    data = {"text": b"Patient report, not an image.\n" * 20, "empty": b"",
            "corrupt": png_bytes(xray_array(5))[:3000], "huge": png_header_only(40_000, 40_000)}
    path = tmp_path / f"{kind}.png"
    if kind == "ct":
        return write_dicom(path.with_suffix(".dcm"), modality="CT")
    path.write_bytes(data[kind])
    return path


@pytest.mark.parametrize("kind", ["text", "empty", "corrupt", "huge", "ct"])
def test_bad_files_get_the_readers_message(client, tmp_path, kind):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(XRayReadError) as expected:
        read_xray(path)
    with pytest.raises(AppError) as error:
        generate(client, frontal=path, outputs=("lateral",))
    assert str(error.value) == str(expected.value)
    image, markdown = client.predict(handle_file(str(path)), api_name="/preview_frontal")
    assert image is None and str(expected.value) in markdown


@pytest.mark.parametrize(("request_kwargs", "message"), [
    ({}, "Nothing to generate from"),
    ({"impression": IMPRESSION}, "Tick at least one output"),
    ({"impression": "Mild edema. " * 600, "outputs": ("frontal",)}, "paste only the impression section"),
    ({"impression": "Mild interstitial edema is seen. " * 12, "outputs": ("frontal",), "long_impression": "error"},
     "longer than the 77-token limit"),
    ({"labels": ["Edema"], "outputs": ("frontal",), "steps": 0}, "Value 0 is less than minimum value 1"),
])
def test_bad_requests_get_a_message_not_a_traceback(client, request_kwargs, message):
    with pytest.raises(AppError) as error:
        generate(client, **request_kwargs)
    assert message in str(error.value) and "Traceback" not in str(error.value)


def test_long_impression_is_cut_with_a_warning_and_the_app_stays_up(client):
    out = generate(client, impression="Mild interstitial edema is seen. " * 12, outputs=("frontal",))
    assert "**Warning:** The impression exceeded the 77-token limit" in out["status"]
    assert Image.open(out["frontal"]).size == (64, 64)
