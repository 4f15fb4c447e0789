"""Colour content: a colour photograph is refused with the reason, a grey image saved as RGB is read as before
(issue 14, defect 4). Chroma is the largest channel difference per pixel, taken at a high percentile so that a
small coloured marker on a radiograph does not count."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from codixr.io import ColourImageError, NotARadiographError, read_xray
from codixr.io.preprocess import chroma
from tests.io.fixtures import dicom_bytes, jpeg_bytes, make_dicom, png_bytes

RNG = np.random.default_rng(3)


def _photo(shape=(120, 160)) -> np.ndarray:
    """A smooth colour picture: sky, grass and a skin-toned disc (no grey in it)."""
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols]
    image = np.empty((rows, cols, 3), dtype=np.float32)
    image[:] = (90, 160, 230)  # sky
    image[y > rows * 0.6] = (70, 150, 60)  # grass
    image[(y - rows * 0.45) ** 2 + (x - cols * 0.5) ** 2 < (rows * 0.2) ** 2] = (225, 180, 150)  # a face
    image += RNG.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _grey(shape=(120, 160)) -> np.ndarray:
    return RNG.integers(20, 236, shape, dtype=np.uint8)


@pytest.mark.parametrize("encode", [png_bytes, jpeg_bytes], ids=["png", "jpeg"])
def test_a_colour_photograph_is_refused_and_told_why(encode):
    with pytest.raises(ColourImageError) as error:
        read_xray(encode(_photo()))
    message = str(error.value)
    assert "colour" in message and "photograph" in message and "grey" in message
    assert isinstance(error.value, NotARadiographError)


@pytest.mark.parametrize("encode", [png_bytes, jpeg_bytes], ids=["png", "jpeg"])
def test_a_grey_image_saved_as_rgb_is_accepted(encode):
    grey = _grey()
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    xray = read_xray(encode(rgb), size=None)
    assert xray.photometric_interpretation == "RGB"
    expected = read_xray(encode(grey), size=None).image
    np.testing.assert_allclose(xray.image, expected, atol=3 / 255)  # JPEG: chroma noise only


def test_a_small_coloured_marker_on_a_radiograph_is_accepted():
    rgb = np.repeat(_grey((200, 200))[..., None], 3, axis=-1)
    rgb[5:20, 5:20] = (255, 0, 0)  # a red side marker, under 1 % of the pixels
    assert read_xray(png_bytes(rgb)).image.shape == (256, 256)


def test_a_tinted_image_is_refused():
    rgb = np.repeat(_grey()[..., None], 3, axis=-1).astype(np.int16)
    rgb[..., 0] = np.clip(rgb[..., 0] + 60, 0, 255)  # a sepia-like cast over every pixel
    with pytest.raises(ColourImageError):
        read_xray(png_bytes(rgb.astype(np.uint8)))


def test_a_colour_palette_image_is_refused():
    with pytest.raises(ColourImageError):
        read_xray(png_bytes(_photo(), mode="P"))


def test_a_colour_dicom_is_refused():
    pixels = _photo((32, 32))
    ds = make_dicom(np.zeros((32, 32), dtype=np.uint8), modality="OT",
                    sop_class="1.2.840.10008.5.1.4.1.1.7")  # Secondary Capture
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pytest.raises(ColourImageError):
        read_xray(dicom_bytes(ds))


def test_colour_can_be_read_as_luminance_when_asked():
    xray = read_xray(png_bytes(_photo()), allow_colour=True)
    assert xray.photometric_interpretation == "RGB" and xray.image.shape == (256, 256)


def test_chroma_measure():
    grey = np.repeat(_grey()[..., None], 3, axis=-1)
    assert chroma(grey) == 0.0
    assert chroma(_photo()) > 0.2  # in units of the full scale
