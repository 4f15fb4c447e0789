"""Sample grids written during training (images) and text samples."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw


def save_image_grid(rows: Sequence, path: Path, titles: Sequence[str] | None = None) -> Path:
    """Save rows of (N, H, W) images in [0, 1] (tensors or arrays) as one grayscale PNG grid with row titles."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [np.asarray(r.detach().cpu() if hasattr(r, "detach") else r, dtype=np.float32) for r in rows]
    n = max(a.shape[0] for a in arrays)
    h, w = arrays[0].shape[1:]
    top = 14 if titles else 0
    grid = PIL.Image.new("L", (n * w, len(arrays) * (h + top)), color=0)
    draw = PIL.ImageDraw.Draw(grid)
    for r, a in enumerate(arrays):
        y = r * (h + top)
        if titles:
            draw.text((2, y + 1), titles[r], fill=255)
        for i in range(a.shape[0]):
            tile = PIL.Image.fromarray((np.clip(a[i], 0, 1) * 255).round().astype(np.uint8))
            if tile.size != (w, h):
                tile = tile.resize((w, h))
            grid.paste(tile, (i * w, y + top))
    grid.save(path)
    return path


def save_texts(lines: Sequence[str], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
