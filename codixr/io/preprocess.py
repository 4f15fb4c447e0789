"""The paper's X-ray preprocessing (CoDi-XR, Sec. II), one function per step.

The paper (Sec. II, "Dataset"): "First, we examined the pixel spacing of each image and resampled those
with non-standard spacing to [0.139, 0.139]. For images with a Photometric Interpretation of Monochrome-1,
the pixel values were inverted to ensure proper representation. Subsequently, we normalized the images by
dividing every pixel by the maximum pixel value possible given by their bit depth, bringing the range to
[0, 1]. Since the original scans are not square, we added zero-padding around the images and then resized
them to 256x256."

:func:`preprocess` applies the steps to a decoded :class:`RawImage`. The point-wise steps (rescale,
normalise, invert, clip) run before the geometric ones; with a linear resampler this gives the same
result as the paper's order, and it means the zero padding is black in the final image for MONOCHROME1
sources too. Resampling uses Pillow's antialiased bilinear filter on float32 images.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from codixr.io.errors import ImageTooLargeError

logger = logging.getLogger(__name__)

#: Pixel spacing (mm) every image is resampled to, from the paper (MIMIC-CXR's standard spacing).
TARGET_SPACING_MM = 0.139

#: Default limit on the declared pixel count of a source image (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 100_000_000

# ITU-R BT.601 luma weights: the same ones Pillow's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class RawImage:
    """A decoded image before preprocessing: stored pixel values and what is needed to interpret them."""

    pixels: np.ndarray  # 2-D, stored values (not yet rescaled or normalised)
    bits_stored: int  # normalisation divides by 2**bits_stored - 1
    monochrome1: bool = False
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Grey level of an (H, W, 3) RGB array with the ITU-R BT.601 weights (float32, same scale as input)."""
    return rgb[..., :3].astype(np.float32) @ _LUMA


def rescale(pixels: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Apply the DICOM Modality LUT's linear form: ``pixels * RescaleSlope + RescaleIntercept``."""
    out = pixels.astype(np.float32, copy=True)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def normalise_bit_depth(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """"Dividing every pixel by the maximum pixel value possible given by their bit depth": x / (2**bits - 1)."""
    return pixels / np.float32(2**bits_stored - 1)


def invert_monochrome1(image: np.ndarray) -> np.ndarray:
    """MONOCHROME1 (bright = low values) to MONOCHROME2 on a [0, 1] image: x -> 1 - x."""
    return np.float32(1.0) - image


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Antialiased bilinear resize of a 2-D float image with Pillow (mode "F")."""
    if image.shape == (height, width):
        return image
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def resampled_shape(
    shape: tuple[int, int], spacing_mm: tuple[float, float], target_mm: float = TARGET_SPACING_MM
) -> tuple[int, int]:
    """The (rows, columns) an image of ``shape`` at ``spacing_mm`` (row, column) has at ``target_mm``."""
    return tuple(max(1, round(n * s / target_mm)) for n, s in zip(shape, spacing_mm))  # type: ignore[return-value]


def resample_to_spacing(
    image: np.ndarray,
    spacing_mm: tuple[float, float] | None,
    target_mm: float = TARGET_SPACING_MM,
    max_pixels: int | None = None,
) -> np.ndarray:
    """"Resampled those with non-standard spacing to [0.139, 0.139]", each axis by its own spacing.

    ``spacing_mm`` is (row spacing, column spacing) as in DICOM PixelSpacing; ``None`` (unknown) leaves the
    image as it is. Raises :class:`ImageTooLargeError` when the resampled image would exceed ``max_pixels``.
    """
    if spacing_mm is None:
        return image
    rows, cols = resampled_shape(image.shape, spacing_mm, target_mm)
    if max_pixels is not None and rows * cols > max_pixels:
        raise ImageTooLargeError(
            f"At its stated pixel spacing ({spacing_mm[0]:g} x {spacing_mm[1]:g} mm) this image would be "
            f"{rows} x {cols} pixels at {target_mm} mm, above the limit of {max_pixels / 1e6:g} megapixels. "
            "Check the PixelSpacing of the exported file."
        )
    return _resize(image, rows, cols)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """"Added zero-padding around the images": centre the image in a zero square of side max(H, W)."""
    rows, cols = image.shape
    side = max(rows, cols)
    if rows == cols:
        return image
    out = np.zeros((side, side), dtype=np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    out[top : top + rows, left : left + cols] = image
    return out


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """"Then resized them to 256x256" (here ``size`` x ``size``), antialiased bilinear."""
    return _resize(image, size, size)


def preprocess(raw: RawImage, size: int | None = 256, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Run the paper's preprocessing on a decoded image; returns float32 ``size`` x ``size`` in [0, 1].

    1. Rescale: stored values * RescaleSlope + RescaleIntercept (DICOM only, where present).
    2. Normalise: "dividing every pixel by the maximum pixel value possible given by their bit depth,
       bringing the range to [0, 1]", i.e. by 2**BitsStored - 1 (255 / 65535 for 8 / 16-bit PNG, JPEG).
    3. Invert: "for images with a Photometric Interpretation of Monochrome-1, the pixel values were
       inverted", x -> 1 - x.
    4. Clip to [0, 1] (rescaled or signed values may fall outside).
    5. Resample: "resampled those with non-standard spacing to [0.139, 0.139]" (per axis; skipped when
       the spacing is unknown or already gives the same size).
    6. Pad: "added zero-padding around the images" to a centred square.
    7. Resize: "then resized them to 256x256" (``size``; ``None`` keeps the padded square at 0.139 mm).
    """
    image = rescale(raw.pixels, raw.rescale_slope, raw.rescale_intercept)
    image = normalise_bit_depth(image, raw.bits_stored)
    if raw.monochrome1:
        image = invert_monochrome1(image)
    image = np.clip(image, 0.0, 1.0, out=image)
    image = resample_to_spacing(image, raw.spacing_mm, TARGET_SPACING_MM, max_pixels)
    image = pad_to_square(image)
    if size is not None:
        image = resize_square(image, size)
    # Interpolation of values in [0, 1] stays in [0, 1] up to float rounding.
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
