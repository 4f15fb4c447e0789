"""Secondary Capture and PNG export of generated images, and their round trip through read_xray."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import SecondaryCaptureImageStorage

from codixr.errors import InputError
from codixr.io import SYNTHETIC_MARKER, read_xray, write_png, write_secondary_capture
from tests.io.fixtures import IDENTIFYING_VALUES, dicom_bytes, make_dicom

RNG = np.random.default_rng(4)


def test_secondary_capture_tags(tmp_path):
    image = RNG.random((64, 48))
    path = write_secondary_capture(image, tmp_path / "f.dcm", description="frontal from: no acute disease")
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SecondaryCaptureImageStorage == ds.file_meta.MediaStorageSOPClassUID
    assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert (ds.BurnedInAnnotation, ds.ConversionType, ds.Modality) == ("NO", "WSD", "OT")
    assert (str(ds.PatientName), ds.PatientID) == ("SYNTHETIC^CODIXR", "SYNTHETIC")
    assert "SYNTHETIC" in ds.DerivationDescription and "not a patient image" in ds.DerivationDescription
    assert ds.ImageComments.startswith(SYNTHETIC_MARKER) and ds.ImageComments.endswith("no acute disease")
    assert ds.SeriesDescription == "CoDiXR synthetic image"
    assert (ds.PhotometricInterpretation, ds.BitsStored, ds.Rows, ds.Columns) == ("MONOCHROME2", 8, 64, 48)
    assert "PixelSpacing" not in ds and "ViewPosition" not in ds


def test_uids_are_fresh(tmp_path):
    image = RNG.random((8, 8))
    first = pydicom.dcmread(write_secondary_capture(image, tmp_path / "a.dcm", description="x"))
    second = pydicom.dcmread(write_secondary_capture(image, tmp_path / "b.dcm", description="x"))
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        assert getattr(first, keyword) != getattr(second, keyword)
        assert getattr(first, keyword).is_valid


@pytest.mark.parametrize("bits", [8, 16])
def test_secondary_capture_reads_back(tmp_path, bits):
    image = RNG.random((64, 64))
    path = write_secondary_capture(image, tmp_path / "f.dcm", description="d", view="lateral", bits=bits)
    xray = read_xray(path, size=64)
    levels = 2**bits - 1
    np.testing.assert_allclose(xray.image, np.round(image * levels) / levels, atol=1e-6)
    assert (xray.view, xray.modality, xray.bits_stored) == ("lateral", "OT", bits)


@pytest.mark.parametrize(("view", "position"), [("frontal", "PA"), ("lateral", "LL")])
def test_view_round_trip(tmp_path, view, position):
    path = write_secondary_capture(np.zeros((8, 8)), tmp_path / "v.dcm", description="d", view=view)
    assert pydicom.dcmread(path).ViewPosition == position
    assert read_xray(path).view == view


def test_pil_and_integer_inputs(tmp_path):
    pixels = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    for image in (Image.fromarray(pixels), pixels):
        path = write_secondary_capture(image, tmp_path / "p.dcm", description="d")
        np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, pixels)


def test_nothing_of_the_source_reaches_the_export(tmp_path):
    source = make_dicom(RNG.integers(0, 4096, (32, 32), dtype=np.uint16), bits_stored=12, view_position="PA")
    xray = read_xray(dicom_bytes(source), size=32)
    path = write_secondary_capture(xray.image, tmp_path / "out.dcm", description="reconstruction", view=xray.view)
    written = path.read_bytes()
    for value in IDENTIFYING_VALUES:
        assert value.encode() not in written
    ds = pydicom.dcmread(path)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert getattr(ds, keyword) != getattr(source, keyword)


@pytest.mark.parametrize(
    "image",
    [np.full((4, 4), np.nan), np.full((4, 4), 1.5), np.full((4, 4), -0.2), np.zeros((2, 4, 4)),
     np.zeros((4, 4), dtype=np.int32), Image.new("RGB", (4, 4))],
    ids=["nan", "above-1", "below-0", "3d", "int32", "pil-rgb"],
)
def test_invalid_images_are_refused(tmp_path, image):
    with pytest.raises(InputError):
        write_secondary_capture(image, tmp_path / "x.dcm", description="d")
    with pytest.raises(InputError):
        write_png(image, tmp_path / "x.png")
    assert not any(tmp_path.iterdir())


def test_invalid_options_are_refused(tmp_path):
    with pytest.raises(InputError):
        write_secondary_capture(np.zeros((4, 4)), tmp_path / "x.dcm", description="d", bits=12)
    with pytest.raises(InputError):
        write_secondary_capture(np.zeros((4, 4)), tmp_path / "x.dcm", description="d", view="report")
    with pytest.raises(InputError):
        write_secondary_capture(np.zeros((4, 4)), tmp_path / "x.dcm", description="x" * 20000)


@pytest.mark.parametrize(("bits", "mode", "dtype"), [(8, "L", np.uint8), (16, "I;16", np.uint16)])
def test_png_round_trip(tmp_path, bits, mode, dtype):
    image = RNG.random((32, 24))
    path = write_png(image, tmp_path / "x.png", bits=bits)
    levels = 2**bits - 1
    with Image.open(path) as written:
        assert written.mode == mode
        np.testing.assert_array_equal(np.asarray(written), np.round(image * levels).astype(dtype))
    xray = read_xray(path, size=None)
    assert xray.bits_stored == bits
    expected = np.zeros((32, 32))
    expected[:, 4:28] = np.round(image * levels) / levels
    np.testing.assert_allclose(xray.image, expected, atol=1e-6)
