"""read_xray on real files: the xrv-samples in ../shared/data and the radiographs shipped by pydicom-data."""

from __future__ import annotations

import glob
import os

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from codixr.io import MultiFrameError, NotARadiographError, UnsupportedFormatError, read_xray
from tests.io.fixtures import dicom_bytes

SIIM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


def pydicom_data(name: str) -> str:
    """Path of a pydicom-data file; skips the test when the package is not installed (never downloads)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not available: install pydicom-data (see requirements.txt)")
    return path


def pad_square(image: np.ndarray) -> np.ndarray:
    """Zero-pad to a centred square with numpy (the independent expectation)."""
    rows, cols = image.shape
    side = max(rows, cols)
    top, left = (side - rows) // 2, (side - cols) // 2
    return np.pad(image, ((top, side - rows - top), (left, side - cols - left)))


def assert_model_input(image: np.ndarray) -> None:
    assert image.shape == (256, 256) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05


@pytest.fixture
def samples(shared_data_dir):
    folder = os.path.join(shared_data_dir, "xrv-samples")
    if not os.path.isdir(folder):
        pytest.skip("xrv-samples are not in ../shared/data")
    return folder


# --- xrv-samples -----------------------------------------------------------------------------------


def test_siim_cr_dicom(samples):
    xray = read_xray(os.path.join(samples, SIIM))
    assert_model_input(xray.image)
    assert (xray.view, xray.modality, xray.bits_stored) == ("frontal", "CR", 8)
    assert xray.source_spacing_mm == (0.168, 0.168) and xray.original_shape == (1024, 1024)
    native = read_xray(os.path.join(samples, SIIM), size=None).image
    assert native.shape == (1238, 1238)  # 1024 * 0.168 / 0.139 = 1237.6
    decoded = pydicom.dcmread(os.path.join(samples, SIIM)).pixel_array / 255
    assert abs(float(native.mean()) - float(decoded.mean())) < 2e-3  # resampling keeps the mean


def test_fake_monochrome1_is_the_inverse(samples):
    m2_path, m1_path = os.path.join(samples, SIIM), os.path.join(samples, "Fake_MONOHR1.dcm")
    # Same JPEG stream, only the PhotometricInterpretation tag differs.
    assert pydicom.dcmread(m1_path).PixelData == pydicom.dcmread(m2_path).PixelData
    m1, m2 = read_xray(m1_path), read_xray(m2_path)
    assert m1.photometric_interpretation == "MONOCHROME1"
    np.testing.assert_allclose(m1.image, 1.0 - m2.image, atol=1e-5)  # square image: no padding


@pytest.mark.parametrize("name", ["00000001_000.png", "00027426_000.png", "16747_3_1.jpg"])
def test_sample_images(samples, name):
    path = os.path.join(samples, name)
    xray = read_xray(path)
    assert_model_input(xray.image)
    assert xray.modality == ("PNG" if name.endswith(".png") else "JPEG") and xray.view == "unknown"
    with Image.open(path) as image:
        expected = np.asarray(image.convert("L"), dtype=np.float64) / 255
        assert xray.original_shape == expected.shape
    # Before resizing the image is the padded source (Pillow's own grey conversion as reference).
    np.testing.assert_allclose(read_xray(path, size=None).image, pad_square(expected), atol=1.01 / 255)


# --- pydicom-data --------------------------------------------------------------------------------------


def test_pydicom_data_chest_radiograph_exact():
    # RG1: a real CR chest PA, 1955 x 1841, 15 bits stored, MONOCHROME1, PixelSpacing "0\0" (unknown).
    path = pydicom_data("RG1_UNCR.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(np.float64)
    native = read_xray(path, size=None)
    assert native.source_spacing_mm is None and native.photometric_interpretation == "MONOCHROME1"
    np.testing.assert_allclose(native.image, pad_square(1.0 - stored / (2**15 - 1)), atol=1e-6)
    xray = read_xray(path)
    assert_model_input(xray.image)
    assert (xray.view, xray.modality, xray.bits_stored, xray.original_shape) == ("frontal", "CR", 15, (1955, 1841))
    assert abs(float(xray.image.mean()) - float(native.image.mean())) < 2e-3


def test_pydicom_data_jpeg2000_radiograph_equals_uncompressed():
    reference = read_xray(pydicom_data("RG1_UNCR.dcm")).image
    np.testing.assert_array_equal(read_xray(pydicom_data("RG1_J2KR.dcm")).image, reference)


def test_jpeg_lossless_decoding():
    # JPEG-LL is a nuclear-medicine Secondary Capture (JPEG Lossless, Process 14 SV1, 16 bits); relabelled as
    # a DX without spacing, its pixels must come through untouched.
    ds = pydicom.dcmread(pydicom_data("JPEG-LL.dcm"))
    with pytest.raises(NotARadiographError, match="nuclear medicine"):
        read_xray(dicom_bytes(ds))
    expected = pad_square(ds.pixel_array / (2 ** int(ds.BitsStored) - 1))
    ds.Modality = "DX"
    del ds.PixelSpacing
    np.testing.assert_allclose(read_xray(dicom_bytes(ds), size=None).image, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "error"),
    [("693_UNCR.dcm", NotARadiographError), ("MR2_J2KR.dcm", NotARadiographError),
     ("US1_UNCR.dcm", NotARadiographError), ("SC_rgb_2frame.dcm", MultiFrameError),
     ("OT-PAL-8-face.dcm", UnsupportedFormatError)],
)
def test_pydicom_data_non_radiographs_are_refused(name, error):
    with pytest.raises(error):
        read_xray(pydicom_data(name))


def test_all_sample_dicoms_read(samples):
    for path in sorted(glob.glob(os.path.join(samples, "*.dcm"))):
        assert_model_input(read_xray(path).image)
