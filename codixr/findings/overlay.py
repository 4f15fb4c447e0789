"""Keypatch overlays in the style of AdaMatch's Fig. 8, drawn with PIL (no global plotting state).

Each adaptive patch is a box in its keyword's colour, with an arrow from the centre of the fixed ViT patch
it was shifted from to the centre of the adaptive patch; a legend names the keywords. The same colours
serve the report highlights (``KeypatchResult.colors`` is a ``color_map`` for ``gr.HighlightedText``).
Overlays always have the size of the image they are drawn on.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import PIL.Image
from PIL import ImageDraw, ImageFont

from codixr.errors import InputError

# Okabe-Ito colours first (distinguishable with colour-vision deficiency), then further saturated hues.
MIN_LEGEND_SIDE = 96  # smaller images get no legend (it would hide them); the colours are returned anyway
PALETTE: tuple[str, ...] = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#D55E00", "#CC79A7", "#0072B2",
                            "#E41A1C", "#4DAF4A", "#984EA3", "#FF7F00", "#A6CEE3")


def keyword_colors(labels: Sequence[str]) -> dict[str, str]:
    """One palette colour per distinct label, in order of first appearance (cycling after 12)."""
    colors: dict[str, str] = {}
    for label in labels:
        if label not in colors:
            colors[label] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def as_rgb(image: Any) -> PIL.Image.Image:
    """A displayable RGB copy of an X-ray: PIL image (any mode), or a 2-D / (1,H,W) / (H,W,3) array in [0, 1]."""
    if isinstance(image, PIL.Image.Image):
        if image.mode in ("RGB", "L", "P", "RGBA", "LA"):
            return image.convert("RGB")
        array = np.asarray(image, dtype=np.float32)
        array = array / (65535.0 if image.mode.startswith("I") else max(float(array.max()), 1e-8))
    else:
        array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = np.moveaxis(array, 0, -1)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
    if array.ndim not in (2, 3):
        raise InputError(f"Cannot display an array of shape {array.shape} as an X-ray.")
    pixels = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return PIL.Image.fromarray(pixels).convert("RGB")


def _widen(lo: float, hi: float, least: float, limit: float) -> tuple[float, float]:
    """[lo, hi] grown symmetrically to at least ``least`` pixels, kept inside [0, limit]."""
    if hi - lo >= least:
        return lo, hi
    mid = min(max((lo + hi) / 2, least / 2), limit - least / 2)
    return max(0.0, mid - least / 2), min(limit, mid + least / 2)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _arrow(draw: ImageDraw.ImageDraw, start: Sequence[float], end: Sequence[float], color: str, width: int) -> None:
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    head = max(3.0, 3.0 * width)
    if length < 1.0:  # no shift: mark the centre
        r = max(1.5, width)
        draw.ellipse((x1 - r, y1 - r, x1 + r, y1 + r), fill=color)
        return
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    head = min(head, length)
    bx, by = x1 - ux * head, y1 - uy * head
    draw.line((x0, y0, bx, by), fill=color, width=width)
    px, py = -uy * head * 0.5, ux * head * 0.5
    draw.polygon([(x1, y1), (bx + px, by + py), (bx - px, by - py)], fill=color)


def draw_keypatches(image: Any, boxes: Sequence[Mapping[str, Any]], colors: Mapping[str, str] | None = None,
                    legend: bool = True, title: str | None = None) -> PIL.Image.Image:
    """The image with its keypatches: boxes coloured per keyword, shift arrows, and a legend.

    Args:
        image: the X-ray to draw on (see :func:`as_rgb`); the result has exactly its size.
        boxes: dicts with ``box`` (x0, y0, x1, y1) and ``centre`` (x, y) of the fixed patch, in pixels of
            ``image``, and ``keyword`` (the label); ``score`` is shown in the legend when present.
        colors: label -> colour; missing labels get palette colours (:func:`keyword_colors`).
        legend: draw the legend (keywords in order of first appearance, best score each) in the lower left
            corner, at most half the image high; images under 96 px on a side get none.
        title: a line of text above the legend (e.g. the method: adaptive or fixed patches).
    """
    canvas = as_rgb(image)
    width, height = canvas.size
    colors = dict(colors or {})
    for b in boxes:
        colors.setdefault(b["keyword"], PALETTE[len(colors) % len(PALETTE)])
    line = max(1, round(min(width, height) / 200))
    draw = ImageDraw.Draw(canvas)
    least = 3 * line  # a box that shrank to a line or a point is still drawn visibly
    for b in boxes:
        x0, y0, x1, y1 = (float(v) for v in b["box"])
        x0, x1 = _widen(x0, x1, least, width)
        y0, y1 = _widen(y0, y1, least, height)
        color = colors[b["keyword"]]
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=color, width=line)
        _arrow(draw, b["centre"], ((x0 + x1) / 2, (y0 + y1) / 2), color, line)
    if legend and (boxes or title) and min(width, height) >= MIN_LEGEND_SIDE:
        canvas = _draw_legend(canvas, boxes, colors, title)
    return canvas


def _draw_legend(canvas: PIL.Image.Image, boxes: Sequence[Mapping[str, Any]], colors: Mapping[str, str],
                 title: str | None) -> PIL.Image.Image:
    width, height = canvas.size
    size = max(8, min(width, height) // 32)
    font = _font(size)
    best: dict[str, float | None] = {}
    for b in boxes:
        score = b.get("score")
        old = best.get(b["keyword"], None)
        best[b["keyword"]] = score if old is None or (score is not None and score > old) else old
    rows = [(None, title)] if title else []
    rows += [(colors[k], k if s is None else f"{k}  {s:.2f}") for k, s in best.items()]
    pad, swatch, gap = max(2, size // 3), size, max(2, size // 4)
    max_rows = max(1, (height // 2 - 2 * pad) // (size + gap))  # the legend takes at most half the height
    if len(rows) > max_rows:
        rows = rows[:max_rows - 1] + [(None, f"+{len(rows) - max_rows + 1} more")]
    text_w = max(font.getbbox(text)[2] for _, text in rows)
    box_w = min(width, 2 * pad + swatch + gap + text_w)
    box_h = min(height, 2 * pad + len(rows) * (size + gap) - gap)
    layer = PIL.Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    top = height - box_h
    draw.rectangle((0, top, box_w - 1, height - 1), fill=(0, 0, 0, 160))
    y = top + pad
    for color, text in rows:
        if y + size > height:
            break
        x = pad
        if color is not None:
            draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=color)
            x += swatch + gap
        draw.text((x, y), text, fill=(255, 255, 255, 255), font=font)
        y += size + gap
    return PIL.Image.alpha_composite(canvas.convert("RGBA"), layer).convert("RGB")
