"""What the app keeps of an upload: nothing on disk once its request is over (issue 14, defect 1).

An uploaded DICOM carries PatientName, PatientID and InstitutionName. The app reads it, keeps only the
de-identified 256-px image it needs, and deletes the file within the request; no route serves an uploaded
original, not even before its request runs; a new start removes the temp folders of runs that died.
The sentinel identifiers of ``tests.io.fixtures`` are looked for in every file under the app's temp folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from codixr.app.runtime import TempStore
from codixr.app.uploads import KeptUploads, UploadGoneError, read_view
from tests.app.fixtures import write_dicom, write_zip, xray_array
from tests.io.fixtures import PATIENT_ID, dicom_bytes, make_dicom, png_bytes

SENTINEL = PATIENT_ID.encode()


def _files_with_sentinel(root: Path) -> list[Path]:
    """Every file under ``root`` whose bytes hold the sentinel PatientID."""
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and SENTINEL in path.read_bytes():
                found.append(path)
        except OSError:  # removed while walking
            continue
    return found


def _upload(url: str, path: Path) -> str:
    """POST one file to the app's upload route, as the browser does; returns the server-side path."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)[0]


def _file_data(server_path: str) -> dict:
    return {"path": server_path, "meta": {"_type": "gradio.FileData"}}


def _call(url: str, api_name: str, data: list) -> tuple[str, object]:
    """Run an endpoint through the REST "call" API; returns (event, payload): ("complete", outputs) or ("error", ...)."""
    request = urllib.request.Request(url + f"gradio_api/call/{api_name}", data=json.dumps({"data": data}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(url + f"gradio_api/call/{api_name}/{event_id}", timeout=300) as response:
        event = None
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("complete", "error"):
                payload = line.split(":", 1)[1].strip()
                return event, json.loads(payload) if payload not in ("", "null") else None
    raise AssertionError(f"{api_name} sent no result")


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def dicom(tmp_path) -> Path:
    return write_dicom(tmp_path / f"frontal-{uuid.uuid4().hex[:6]}.dcm", seed=5, view_position="PA")


def test_an_uploaded_original_is_never_served(studio, dicom):
    server_path = _upload(studio.url, dicom)
    assert SENTINEL in Path(server_path).read_bytes()  # gradio keeps it until a request reads it
    folder, name = os.path.split(server_path)
    for spelled in (server_path, "/" + server_path, f"{folder}/../{os.path.basename(folder)}/{name}"):
        assert _status(studio.url + f"gradio_api/file={spelled}") in (403, 404), spelled
    _call(studio.url, "preview_frontal", [_file_data(server_path)])
    assert _status(studio.url + f"gradio_api/file={server_path}") in (403, 404)


def test_outputs_are_still_served(studio, tmp_path):
    png = tmp_path / "chest.png"
    png.write_bytes(png_bytes(xray_array(3)))
    event, (image, _) = _call(studio.url, "preview_frontal", [_file_data(_upload(studio.url, png))])
    assert _status(studio.url + f"gradio_api/file={image['path']}") == 200  # the preprocessed preview


def test_preview_deletes_the_upload_and_generate_uses_what_it_kept(studio, dicom):
    server_path = _upload(studio.url, dicom)
    event, (image, markdown) = _call(studio.url, "preview_frontal", [_file_data(server_path)])
    assert event == "complete" and image is not None and "DICOM radiograph" in markdown
    assert not Path(server_path).exists(), "the uploaded DICOM is still on disk after its preview"
    assert not _files_with_sentinel(studio.temp.root)

    # The Generate click sends the same upload again: the preprocessed image kept in memory serves it.
    event, outputs = _call(studio.url, "generate", [_file_data(server_path), None, "", [], ["lateral"], 2, 2.0, 0,
                                                    "dpm++", "truncate"])
    assert event == "complete", outputs
    assert outputs[1] is not None  # the generated lateral
    assert not _files_with_sentinel(studio.temp.root)


def test_generate_through_the_api_deletes_its_upload(client, studio, dicom):
    client.predict(handle_file(str(dicom)), None, "", [], ["lateral"], 2, 2.0, 0, "dpm++", "truncate",
                   api_name="/generate")
    assert not _files_with_sentinel(studio.temp.root)


def test_a_refused_request_deletes_its_upload_too(client, studio, dicom):
    # Refused by the request checks before the upload is read (an impression far over the length limit).
    with pytest.raises(AppError, match="paste only the impression section"):
        client.predict(handle_file(str(dicom)), None, "Mild edema. " * 600, [], ["lateral"], 2, 2.0, 0, "dpm++",
                       "truncate", api_name="/generate")
    assert not _files_with_sentinel(studio.temp.root)


def test_review_deletes_both_parts(client, studio, dicom, tmp_path):
    lateral = write_dicom(tmp_path / "lateral.dcm", seed=6, view_position="LL")
    client.predict(handle_file(str(dicom)), handle_file(str(lateral)), "", "lateral", 2, 0, api_name="/review")
    assert not _files_with_sentinel(studio.temp.root)


def test_study_upload_deletes_its_files_and_archives(client, studio, dicom, tmp_path):
    lateral = write_dicom(tmp_path / "lateral.dcm", seed=6, view_position="LL")
    archive = write_zip(tmp_path / "study.zip", {"study/lateral.dcm": lateral.read_bytes()})
    frontal, lateral_image, message = client.predict([handle_file(str(dicom)), handle_file(str(archive))],
                                                     api_name="/study")
    assert frontal is not None and lateral_image is not None, message
    assert not _files_with_sentinel(studio.temp.root)


def test_an_unreadable_upload_is_deleted_and_its_message_kept(studio, tmp_path):
    ct = write_dicom(tmp_path / "ct.dcm", modality="CT")
    server_path = _upload(studio.url, ct)
    event, (image, markdown) = _call(studio.url, "preview_frontal", [_file_data(server_path)])
    assert image is None and "CT image" in markdown
    assert not Path(server_path).exists()
    event, message = _call(studio.url, "generate", [_file_data(server_path), None, "", [], ["lateral"], 2, 2.0, 0,
                                                    "dpm++", "truncate"])
    assert event == "error"


def test_reading_a_file_outside_the_app_leaves_it_alone(tmp_path):
    path = tmp_path / "mine.dcm"
    path.write_bytes(dicom_bytes(make_dicom(xray_array(7, bits=12), bits_stored=12, view_position="PA")))
    read_view(path, "frontal")
    assert path.exists()  # a library caller's own file, not an upload


# --------------------------------------------------------------------------------------------- what is kept
def test_what_is_kept_is_bounded_and_the_file_read_once(tmp_path):
    kept = KeptUploads(max_items=1)
    first, second = tmp_path / "a.dcm", tmp_path / "b.dcm"
    for path, seed in ((first, 1), (second, 2)):
        path.write_bytes(dicom_bytes(make_dicom(xray_array(seed, bits=12), bits_stored=12, view_position="PA")))
    results = []
    threads = [threading.Thread(target=lambda: results.append(kept.take(first))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(r is results[0] for r in results)  # one read, four answers
    assert not first.exists() and results[0].view == "frontal" and results[0].image.shape == (256, 256)
    kept.take(second)  # pushes the first out
    with pytest.raises(UploadGoneError, match="Upload the file again"):
        kept.take(first)


# --------------------------------------------------------------------------------------------- at start
def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_new_start_removes_the_folders_of_runs_that_died(tmp_path):
    dead = tmp_path / f"codixr-app-{_dead_pid()}-abc123"
    (dead / "gradio" / "0a1b").mkdir(parents=True)
    (dead / "gradio" / "0a1b" / "frontal.dcm").write_bytes(b"DICM" + SENTINEL)
    legacy = tmp_path / "codixr-app-x1y2z3ab"  # a folder of a version that did not name its folders by PID
    (legacy / "work").mkdir(parents=True)
    past = time.time() - 2 * 24 * 3600
    os.utime(legacy, (past, past))
    os.utime(legacy / "work", (past, past))
    alive = tmp_path / f"codixr-app-{os.getppid()}-def456"  # a run that is still going
    alive.mkdir()
    TempStore.write_owner(alive, os.getppid())
    unrelated = tmp_path / "something-else"
    unrelated.mkdir()

    store = TempStore(base=tmp_path)
    try:
        assert not dead.exists() and not legacy.exists()
        assert alive.exists() and unrelated.exists()
        assert store.root.name.startswith(f"codixr-app-{os.getpid()}-")
    finally:
        store.cleanup()


def test_a_folder_whose_pid_was_reused_is_removed(tmp_path):
    reused = tmp_path / f"codixr-app-{os.getppid()}-0ld0ne"
    reused.mkdir()
    (reused / TempStore.OWNER_FILE).write_text(f"{os.getppid()} 0\n")  # another process once had that PID
    store = TempStore(base=tmp_path)
    try:
        assert not reused.exists()
    finally:
        store.cleanup()
