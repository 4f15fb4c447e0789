"""read_xray on PNG and JPEG fixtures (8 and 16 bit, colour, palette) and on every kind of source."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codixr.io import read_xray
from codixr.modality import Modality
from tests.io.fixtures import dicom_bytes, jpeg_bytes, make_dicom, png_bytes

RNG = np.random.default_rng(1)
BT601 = np.array([0.299, 0.587, 0.114])


def test_16bit_png_does_not_saturate():
    xray = read_xray(png_bytes(np.full((32, 32), 40000, dtype=np.uint16)))
    assert xray.image.shape == (256, 256) and xray.bits_stored == 16 and xray.modality == "PNG"
    np.testing.assert_allclose(xray.image, 40000 / 65535, atol=1e-6)  # ~0.61, not 1.0
    assert abs(float(xray.image.mean()) - 0.6104) < 1e-3


def test_16bit_png_keeps_all_16_bits():
    pixels = RNG.integers(0, 65536, (24, 24), dtype=np.uint16)
    np.testing.assert_allclose(read_xray(png_bytes(pixels), size=None).image, pixels / 65535, atol=1e-6)


def test_8bit_png():
    pixels = RNG.integers(0, 256, (24, 24), dtype=np.uint8)
    xray = read_xray(png_bytes(pixels), size=None)
    np.testing.assert_allclose(xray.image, pixels / 255, atol=1e-6)
    assert xray.bits_stored == 8 and xray.photometric_interpretation == "MONOCHROME2" and xray.view == "unknown"
    assert xray.source_spacing_mm is None


def test_png_is_padded_to_a_centred_square():
    image = read_xray(png_bytes(np.full((20, 40), 255, dtype=np.uint8)), size=None).image
    expected = np.zeros((40, 40))
    expected[10:30] = 1.0
    np.testing.assert_array_equal(image, expected)


def test_rgb_png_becomes_luminance():
    pixels = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    xray = read_xray(png_bytes(pixels), size=None, allow_colour=True)  # colour is refused unless allowed
    np.testing.assert_allclose(xray.image, pixels @ BT601 / 255, atol=1e-5)
    assert xray.photometric_interpretation == "RGB"


def test_rgb_jpeg_becomes_luminance():
    pixels = np.empty((32, 32, 3), dtype=np.uint8)
    pixels[:] = (200, 100, 50)
    xray = read_xray(jpeg_bytes(pixels), allow_colour=True)
    assert xray.modality == "JPEG" and xray.image.shape == (256, 256)
    np.testing.assert_allclose(xray.image, (BT601 @ [200, 100, 50]) / 255, atol=3 / 255)  # JPEG chroma error


def test_grayscale_jpeg():
    pixels = np.full((16, 32), 90, dtype=np.uint8)
    image = read_xray(jpeg_bytes(pixels), size=None).image
    np.testing.assert_allclose(image[8:24], 90 / 255, atol=1.01 / 255)
    assert np.all(image[:8] == 0) and np.all(image[24:] == 0)


def test_palette_png_uses_its_palette():
    palette = np.array([[0, 0, 0], [80, 80, 80], [160, 160, 160], [255, 0, 0]], dtype=np.uint8)
    indices = RNG.integers(0, 4, (16, 16), dtype=np.uint8)
    image = Image.frombytes("P", (16, 16), indices.tobytes())
    image.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    xray = read_xray(buffer.getvalue(), size=None, allow_colour=True)
    np.testing.assert_allclose(xray.image, (palette @ BT601 / 255)[indices], atol=1e-5)
    assert xray.photometric_interpretation == "PALETTE COLOR"


def test_gray_alpha_png_uses_the_gray_channel():
    pixels = np.stack([np.full((8, 8), 100, np.uint8), np.full((8, 8), 7, np.uint8)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "LA").save(buffer, format="PNG")
    np.testing.assert_allclose(read_xray(buffer.getvalue(), size=None).image, 100 / 255, atol=1e-6)


def test_caller_view_for_images_without_tags():
    data = png_bytes(np.zeros((8, 8), dtype=np.uint8))
    assert read_xray(data, view="frontal").view == "frontal"
    assert read_xray(data, view=Modality.LATERAL).view == "lateral"


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_every_source_type_gives_the_same_image(tmp_path, kind):
    pixels = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    data = png_bytes(pixels) if kind == "png" else dicom_bytes(make_dicom(pixels))
    path = tmp_path / "xray.bin"  # the format comes from the content, not the name
    path.write_bytes(data)
    reference = read_xray(data).image
    with open(path, "rb") as handle:
        from_handle = read_xray(handle).image
    for source in (str(path), Path(path), bytearray(data), memoryview(data), io.BytesIO(data)):
        np.testing.assert_array_equal(read_xray(source).image, reference)
    np.testing.assert_array_equal(from_handle, reference)


def test_size_argument():
    data = png_bytes(np.zeros((10, 20), dtype=np.uint8))
    assert read_xray(data, size=64).image.shape == (64, 64)
    assert read_xray(data, size=None).image.shape == (20, 20)
