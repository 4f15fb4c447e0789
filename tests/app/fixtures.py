"""Small X-ray files for the app tests, made from seeded arrays (no patient data; DICOMs carry sentinel
identifiers from ``tests.io.fixtures`` so that tests can check that none of them is echoed or logged)."""

from __future__ import annotations

import io
import socket
import zipfile
from pathlib import Path

import numpy as np

from tests.io.fixtures import IDENTIFYING_VALUES, dicom_bytes, make_dicom, png_bytes

__all__ = ["IDENTIFYING_VALUES", "OPERATOR_SECRET", "free_port", "xray_array", "write_png", "write_dicom",
           "write_zip", "write_real_folder"]

#: The reader study's operator secret of the app the tests launch (``studio``).
OPERATOR_SECRET = "test-operator-secret-0123"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def xray_array(seed: int = 0, shape: tuple[int, int] = (96, 80), bits: int = 8) -> np.ndarray:
    """A smooth, chest-like grey-level array (brighter mediastinum, darker lungs) with seeded noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    lungs = np.exp(-(((x - shape[1] * 0.3) / (shape[1] * 0.15)) ** 2 + ((y - shape[0] * 0.5) / (shape[0] * 0.3)) ** 2))
    lungs += np.exp(-(((x - shape[1] * 0.7) / (shape[1] * 0.15)) ** 2 + ((y - shape[0] * 0.5) / (shape[0] * 0.3)) ** 2))
    image = np.clip(0.8 - 0.5 * lungs + 0.05 * rng.standard_normal(shape), 0, 1)
    top = 255 if bits == 8 else 4095
    return np.round(image * top).astype(np.uint8 if bits == 8 else np.uint16)


def write_png(path: Path, seed: int = 0, shape: tuple[int, int] = (96, 80)) -> Path:
    path.write_bytes(png_bytes(xray_array(seed, shape)))
    return path


def write_dicom(path: Path, seed: int = 0, view_position: str | None = "PA", modality: str = "CR", **tags) -> Path:
    """A 12-bit CR DICOM with the given ViewPosition and the sentinel patient tags."""
    ds = make_dicom(xray_array(seed, bits=12), bits_stored=12, modality=modality, view_position=view_position,
                    pixel_spacing=(0.139, 0.139), **tags)
    path.write_bytes(dicom_bytes(ds))
    return path


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


def write_real_folder(folder: Path) -> Path:
    """A folder of "real" images for the reader study: two DICOMs (PA, LL), one PNG, a damaged PNG and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    write_dicom(folder / "a.dcm", seed=1, view_position="PA")
    write_dicom(folder / "b.dcm", seed=2, view_position="LL")
    write_png(folder / "c.png", seed=3)
    (folder / "d.png").write_bytes(png_bytes(xray_array(4))[:200])
    (folder / "notes.txt").write_text("not an image")
    return folder
