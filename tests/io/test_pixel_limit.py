"""The pixel limit: strict, well below 100 megapixels, and applied before any pixel is decoded (issue 14, defect 8).

Four 10000 x 10000 PNGs of 97 KB each once took the app from 1.2 to 5.0 GB. Every size a header states
(PNG/JPEG dimensions, DICOM Rows x Columns, the size at 0.139 mm, the square it is padded to) is checked
against the limit before the decoder runs; an image of exactly the limit is refused too.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

from codixr.io import DEFAULT_MAX_PIXELS, CorruptFileError, ImageTooLargeError, read_xray
from tests.io.fixtures import dicom_bytes, jpeg_bytes, make_dicom, png_bytes, png_header_only


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if Pillow or pydicom is asked to decode pixels."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("pixels were decoded although the header already exceeds the limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr("pydicom.dataset.Dataset.pixel_array", property(refuse))


def test_the_default_limit_is_well_below_100_megapixels():
    assert DEFAULT_MAX_PIXELS <= 25_000_000
    assert DEFAULT_MAX_PIXELS >= 4300 * 4300  # the largest chest detectors (43 cm at 0.1 mm) still fit


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns on opening; we refuse
def test_the_issues_100_megapixel_png_is_refused_from_its_header(no_decoding):
    with pytest.raises(ImageTooLargeError, match="10000 x 10000"):
        read_xray(png_header_only(10_000, 10_000))  # 97 KB on the wire in the issue, 100 MP declared


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_an_image_of_exactly_the_limit_is_refused(no_decoding, kind):
    side = 5000
    assert side * side == DEFAULT_MAX_PIXELS
    if kind == "png":
        data = png_header_only(side, side)
    else:
        ds = make_dicom(np.zeros((4, 4), dtype=np.uint16))
        ds.Rows = ds.Columns = side
        data = dicom_bytes(ds)
    with pytest.raises(ImageTooLargeError, match="megapixels"):
        read_xray(data)


def test_the_limit_is_strict_when_configured():
    with pytest.raises(ImageTooLargeError):
        read_xray(png_bytes(np.zeros((64, 64), dtype=np.uint8)), max_pixels=64 * 64)
    assert read_xray(png_bytes(np.zeros((64, 64), dtype=np.uint8)), max_pixels=64 * 64 + 1).image.shape == (256, 256)


def test_the_padded_square_counts(no_decoding):
    # 10 megapixels, but a 20000 x 20000 square once padded as the paper does.
    with pytest.raises(ImageTooLargeError, match="square"):
        read_xray(png_header_only(20_000, 500))


def test_the_size_at_0139_mm_is_checked_before_decoding(no_decoding):
    ds = make_dicom(np.zeros((4, 4), dtype=np.uint16), pixel_spacing=(1.0, 1.0))
    ds.Rows = ds.Columns = 1000  # 1 MP stated, 7194 x 7194 at 0.139 mm
    with pytest.raises(ImageTooLargeError, match="PixelSpacing"):
        read_xray(dicom_bytes(ds))


def test_a_jpeg_dicom_whose_stream_is_larger_than_its_header_is_refused_before_decoding(no_decoding):
    big = jpeg_bytes(np.zeros((6000, 6000), dtype=np.uint8), quality=50)  # a few KB, 36 MP when decoded
    ds = make_dicom(np.zeros((64, 64), dtype=np.uint8))
    ds.PixelData = encapsulate([big])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    with pytest.raises(CorruptFileError, match="does not match"):
        read_xray(dicom_bytes(ds))


def test_a_deflated_dicom_that_unpacks_beyond_the_limit_is_refused_before_pydicom_inflates_it(monkeypatch):
    ds = make_dicom(np.zeros((1000, 1000), dtype=np.uint16))  # 2 MB of pixels, a few KB deflated
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = dicom_bytes(ds)
    assert len(data) < 50_000

    def refuse(*_args, **_kwargs):
        raise AssertionError("pydicom was asked to inflate the dataset")

    monkeypatch.setattr("pydicom.filereader.zlib.decompress", refuse)
    with pytest.raises(ImageTooLargeError, match="deflated"):
        read_xray(data, max_pixels=100_000)  # 0.8 MB + 1 MiB of inflated data allowed


def test_a_deflated_dicom_within_the_limit_is_read():
    ds = make_dicom(np.full((64, 64), 300, dtype=np.uint16), bits_stored=12)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    np.testing.assert_allclose(read_xray(dicom_bytes(ds)).image, 300 / 4095, atol=1e-6)


def test_pillows_own_bomb_limit_is_not_what_stops_it(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # even with Pillow's guard off
    with pytest.raises(ImageTooLargeError):
        read_xray(png_header_only(12_000, 10_000))


def test_large_but_allowed_images_are_read():
    pixels = np.full((4000, 3000), 128, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    xray = read_xray(buffer.getvalue())
    assert xray.image.shape == (256, 256) and xray.original_shape == (4000, 3000)
