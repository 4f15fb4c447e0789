"""What the app says about images that are not chest radiographs (issue 14, defect 4): a colour photograph is
refused with the reason, in the preview and in a generate request; a grey image that does not look like a chest
radiograph is read with a visible warning; a chest-like image gets neither."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw

from codixr.app.uploads import read_view
from codixr.io import read_xray
from tests.app.fixtures import write_png, xray_array
from tests.io.fixtures import jpeg_bytes, png_bytes

NOT_A_CHEST = "does not look like a chest radiograph"


def _colour_photo(path: Path) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320]
    image = np.stack([120 + 100 * np.sin(x / 40), 90 + 80 * np.cos(y / 30), 60 + 50 * np.sin((x + y) / 50)], -1)
    path.write_bytes(jpeg_bytes(np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)))
    return path


def _document(path: Path) -> Path:
    """A grey scan of a typed page: white paper, black lines of text."""
    page = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(page)
    for line in range(40, 760, 24):
        draw.text((40, line), "Patient report: no acute cardiopulmonary abnormality. " * 2, fill=0)
    path.write_bytes(png_bytes(np.asarray(page)))
    return path


def _blank(path: Path) -> Path:
    path.write_bytes(png_bytes(np.full((300, 300), 128, dtype=np.uint8)))
    return path


def _strip(path: Path) -> Path:
    """A long thin image (a ruler, a panoramic strip): nothing like the near-square chest film."""
    path.write_bytes(png_bytes(xray_array(3, shape=(60, 400))))
    return path


def test_a_colour_photo_is_refused_in_the_preview_with_the_reason(client, tmp_path):
    image, markdown = client.predict(handle_file(str(_colour_photo(tmp_path / "holiday.jpg"))),
                                     api_name="/preview_frontal")
    assert image is None
    assert "not usable" in markdown and "colour" in markdown and "photograph" in markdown


def test_a_colour_photo_is_refused_by_generate(client, tmp_path):
    with pytest.raises(AppError, match="colour"):
        client.predict(handle_file(str(_colour_photo(tmp_path / "holiday.jpg"))), None, "", [], ["report"], 2, 2.0, 0,
                       "dpm++", "truncate", api_name="/generate")


@pytest.mark.parametrize("make", [_document, _blank, _strip], ids=["document", "blank", "strip"])
def test_a_grey_image_that_is_no_chest_film_gets_a_visible_warning(client, tmp_path, make):
    image, markdown = client.predict(handle_file(str(make(tmp_path / "image.png"))), api_name="/preview_frontal")
    assert image is not None  # read, and shown, but flagged
    assert f"**Warning:** This image {NOT_A_CHEST}" in markdown


def test_a_chest_like_image_gets_no_such_warning(client, tmp_path):
    _, markdown = client.predict(handle_file(str(write_png(tmp_path / "chest.png", seed=2))),
                                 api_name="/preview_frontal")
    assert NOT_A_CHEST not in markdown and "Warning" not in markdown


def test_the_warning_reaches_the_generate_status(client, tmp_path):
    result = client.predict(handle_file(str(_blank(tmp_path / "blank.png"))), None, "", [], ["report"], 2, 2.0, 0,
                            "dpm++", "truncate", api_name="/generate")
    assert NOT_A_CHEST in result[3]


def test_real_chest_radiographs_are_not_flagged(shared_data_dir):
    folder = Path(shared_data_dir) / "covid-cxr"
    paths = sorted(folder.rglob("*.png"))
    assert paths
    flagged = [p.name for p in paths if any(NOT_A_CHEST in w for w in read_view(p, "frontal").warnings)]
    assert len(flagged) <= 0.01 * len(paths), flagged


def test_the_check_works_outside_the_app_too(tmp_path):
    view = read_view(_document(tmp_path / "doc.png"), "frontal")
    assert any(NOT_A_CHEST in w for w in view.warnings)
    assert read_xray(tmp_path / "doc.png").image.shape == (256, 256)  # read all the same, only flagged


def test_real_dicoms_a_chest_passes_a_tibia_is_flagged():
    from pydicom.data import get_testdata_file

    chest, tibia = (get_testdata_file(name, download=False) for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"))
    if not (chest and tibia):
        pytest.skip("pydicom-data is not installed")
    assert not any(NOT_A_CHEST in w for w in read_view(chest, "frontal").warnings)  # CR chest, 1955 x 1841
    assert any(NOT_A_CHEST in w for w in read_view(tibia, "frontal").warnings)  # CR extremity, collimated
