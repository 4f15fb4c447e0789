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

from codixr.io.errors import ColourImageError, ImageTooLargeError

logger = logging.getLogger(__name__)

#: Pixel spacing (mm) every image is resampled to, from the paper (MIMIC-CXR's standard spacing).
TARGET_SPACING_MM = 0.139

#: Pixel limit of a source image: an image with this many pixels or more is refused before it is decoded, and
#: so is one whose size at 0.139 mm, or the square it is padded to, reaches it. 5000 x 5000 = 25 megapixels:
#: the largest chest detectors (43 cm at 0.1 mm, 4300 x 4300 px) fit, and the app's memory stays bounded when
#: several large uploads arrive at once (four 10000 x 10000 PNGs of 97 KB each once took it from 1.2 to 5.0 GB;
#: see bench/upload_memory.py).
DEFAULT_MAX_PIXELS = 25_000_000

#: Colour content: the chroma of a pixel is its largest channel difference (max - min over R, G, B) as a
#: fraction of full scale. An image whose chroma at this percentile exceeds the limit has real colour in it
#: (a photograph, a colour-mapped screenshot, a tinted scan); a grey image saved as RGB or a JPEG of one has
#: chroma near 0, and a small coloured side marker (under 100 - COLOUR_PERCENTILE % of the image) is ignored.
COLOUR_PERCENTILE = 95.0
COLOUR_CHROMA_LIMIT = 0.08
_CHROMA_SAMPLES = 1_000_000  # pixels the chroma percentile is taken over (a regular grid on large images)
_LUMINANCE_ROWS = 512  # rows converted at a time, so a large RGB image never has a float32 copy of all 3 channels

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
    out = np.empty(rgb.shape[:2], dtype=np.float32)
    for top in range(0, rgb.shape[0], _LUMINANCE_ROWS):
        rows = slice(top, top + _LUMINANCE_ROWS)
        out[rows] = rgb[rows, :, :3].astype(np.float32) @ _LUMA
    return out


def chroma(rgb: np.ndarray, full_scale: float = 255.0, percentile: float = COLOUR_PERCENTILE) -> float:
    """Colour content of an (H, W, 3) RGB array: the ``percentile`` of per-pixel max - min over the channels,
    as a fraction of ``full_scale`` (0 for a grey image). Large images are sampled on a regular grid."""
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / _CHROMA_SAMPLES))))
    sample = rgb[::step, ::step, :3]
    spread = sample.max(axis=-1).astype(np.float32) - sample.min(axis=-1).astype(np.float32)
    return float(np.percentile(spread, percentile)) / full_scale


def check_grey(rgb: np.ndarray, full_scale: float = 255.0) -> None:
    """Raise :class:`ColourImageError` when an RGB array has real colour content (see ``COLOUR_CHROMA_LIMIT``)."""
    measured = chroma(rgb, full_scale)
    if measured > COLOUR_CHROMA_LIMIT:
        logger.debug("colour content %.3f above %.3f: refused", measured, COLOUR_CHROMA_LIMIT)
        raise ColourImageError(
            "This image is in colour: it looks like a photograph or a screenshot, not a chest radiograph. CoDiXR "
            "reads grey-scale chest X-rays: upload the radiograph itself (the DICOM, or a grey-scale PNG/JPEG "
            "export)."
        )


def check_pixel_count(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float] | None,
    max_pixels: int,
    what: str = "image",
    target_mm: float = TARGET_SPACING_MM,
) -> None:
    """Refuse, from the header alone, an image that would reach ``max_pixels`` anywhere in :func:`preprocess`.

    ``shape`` is (rows, columns) as stated; checked are the image itself, its size at ``target_mm`` (when the
    spacing is known) and the square it is padded to. Raises :class:`ImageTooLargeError`.
    """
    rows, cols = shape
    if rows * cols >= max_pixels:
        raise ImageTooLargeError(
            f"This {what} declares {rows} x {cols} pixels ({rows * cols / 1e6:.0f} megapixels), at or above the "
            f"safety limit of {max_pixels / 1e6:g} megapixels. If it is a genuine radiograph, export it at a lower "
            "resolution."
        )
    at = ""
    if spacing_mm is not None:
        _check_resampled((rows, cols), spacing_mm, max_pixels, target_mm)
        rows, cols = resampled_shape((rows, cols), spacing_mm, target_mm)
        at = f" at {target_mm} mm"
    _check_square(rows, cols, max_pixels, at)


def _check_resampled(shape: tuple[int, int], spacing_mm: tuple[float, float], max_pixels: int, target_mm: float):
    rows, cols = resampled_shape(shape, spacing_mm, target_mm)
    if rows * cols >= max_pixels:
        raise ImageTooLargeError(
            f"At its stated pixel spacing ({spacing_mm[0]:g} x {spacing_mm[1]:g} mm) this image would be "
            f"{rows} x {cols} pixels at {target_mm} mm, at or above the limit of {max_pixels / 1e6:g} megapixels. "
            "Check the PixelSpacing of the exported file."
        )


def _check_square(rows: int, cols: int, max_pixels: int, at: str = "") -> None:
    side = max(rows, cols)
    if side * side >= max_pixels:
        raise ImageTooLargeError(
            f"This image is {rows} x {cols} pixels{at}; padded to a square, as the preprocessing does, it would be "
            f"{side} x {side} ({side * side / 1e6:.0f} megapixels), at or above the safety limit of "
            f"{max_pixels / 1e6:g} megapixels. Crop it to the chest, or export it at a lower resolution."
        )


def rescale(pixels: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Apply the DICOM Modality LUT's linear form: ``pixels * RescaleSlope + RescaleIntercept``."""
    out = pixels.astype(np.float32, copy=True)
    if slope != 1.0:
        out *= np.float32(slope)
    if intercept != 0.0:
        out += np.float32(intercept)
    return out


def normalise_bit_depth(pixels: np.ndarray, bits_stored: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """"Dividing every pixel by the maximum pixel value possible given by their bit depth": x / (2**bits - 1).

    ``out`` (e.g. ``pixels`` itself) receives the result instead of a new array."""
    return np.divide(pixels, np.float32(2**bits_stored - 1), out=out)


def invert_monochrome1(image: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """MONOCHROME1 (bright = low values) to MONOCHROME2 on a [0, 1] image: x -> 1 - x (into ``out`` if given)."""
    return np.subtract(np.float32(1.0), image, out=out)


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
    image as it is. Raises :class:`ImageTooLargeError` when the resampled image would reach ``max_pixels``.
    """
    if spacing_mm is None:
        return image
    if max_pixels is not None:
        _check_resampled(image.shape, spacing_mm, max_pixels, target_mm)
    rows, cols = resampled_shape(image.shape, spacing_mm, target_mm)
    return _resize(image, rows, cols)


def pad_to_square(image: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """"Added zero-padding around the images": centre the image in a zero square of side max(H, W).

    Raises :class:`ImageTooLargeError` when the square would reach ``max_pixels``."""
    rows, cols = image.shape
    side = max(rows, cols)
    if rows == cols:
        return image
    if max_pixels is not None:
        _check_square(rows, cols, max_pixels)
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
    # One float32 copy of the source, worked on in place: memory stays at about 4 bytes per source pixel.
    image = rescale(raw.pixels, raw.rescale_slope, raw.rescale_intercept)
    normalise_bit_depth(image, raw.bits_stored, out=image)
    if raw.monochrome1:
        invert_monochrome1(image, out=image)
    image = np.clip(image, 0.0, 1.0, out=image)
    image = resample_to_spacing(image, raw.spacing_mm, TARGET_SPACING_MM, max_pixels)
    image = pad_to_square(image, max_pixels)
    if size is not None:
        image = resize_square(image, size)
    # Interpolation of values in [0, 1] stays in [0, 1] up to float rounding.
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
