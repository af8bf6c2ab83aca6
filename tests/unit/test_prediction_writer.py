"""Palette ("P" mode) PNGs of ``mmsam predict``: class ids as pixels, the palette embedded."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.engine import ColorMaskWriter
from mmsam.palette import colorize, palette_png


def test_writer_saves_ids_with_embedded_palette(tmp_path):
    pred = torch.tensor([[[0, 1, 2], [2, 7, 0]]], dtype=torch.uint8)
    palette = [[10, 20, 30], [40, 50, 60], [70, 80, 90]]
    writer = ColorMaskWriter(str(tmp_path), palette=palette, save_ids=True)
    writer.write_on_batch_end(None, SimpleNamespace(num_classes=3), {"pred": pred, "id": ["scene/a"]}, None, None, 0)
    img = Image.open(tmp_path / "scene" / "a.png")
    assert img.mode == "P"
    assert np.array(img).tolist() == [[0, 1, 2], [2, 7, 0]]
    assert img.getpalette()[:9] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    # what a viewer shows: the palette's colours; id 7 lies outside it and is black
    assert np.array(img.convert("RGB"))[1].tolist() == [[70, 80, 90], [0, 0, 0], [10, 20, 30]]
    assert np.array_equal(np.array(img.convert("RGB")), colorize(pred[0].numpy(), palette))
    assert np.array(Image.open(tmp_path / "scene" / "a_labelIds.png")).tolist() == [[0, 1, 2], [2, 7, 0]]


def test_palette_png_refuses_ids_beyond_a_byte():
    with pytest.raises(ValueError, match="0..255"):
        palette_png(np.array([[0, 300]]), [[0, 0, 0]])
