"""Class-colour palettes: colour-coded label maps and palette ("P" mode) PNGs."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image


def default_palette(n: int) -> list[list[int]]:
    """``n`` fixed pseudo-random RGB colours, for a data module without a palette."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(max(n, 1), 3)).tolist()


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``(H, W)`` class ids to ``(H, W, 3)`` uint8 colours; ids outside the palette become black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[labels]


def palette_png(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """A "P" mode image: the class ids (< 256) are the pixel values and ``palette`` is embedded, so
    viewers show colours and ``np.array(Image.open(path))`` gives the ids back. Ids outside the
    palette show black."""
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"class ids must lie in 0..255 for a palette PNG, got {labels.min()}..{labels.max()}")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = [int(v) for c in palette[:256] for v in c]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img
