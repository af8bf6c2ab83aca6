"""Writes predicted label maps as colour-coded PNGs (``mmsam predict``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from mmsam.fileio import atomic_write


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``(H, W)`` class ids to ``(H, W, 3)`` uint8 colours; ids outside the palette become black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[labels]


class ColorMaskWriter(BasePredictionWriter):
    """Saves ``<output_dir>/<sample id>.png`` (colour) and, optionally, the raw id map.

    Args:
        output_dir: where predictions go; sample ids keep their relative folders.
        palette: RGB colour per class (filled from the data module by the CLI).
        save_ids: also write ``<id>_labelIds.png`` with the raw class ids.
    """

    def __init__(self, output_dir: str = "predictions", palette: list[list[int]] | None = None, save_ids: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.palette = palette
        self.save_ids = save_ids
        self.written = 0

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        palette = self.palette or _default_palette(getattr(pl_module, "num_classes", 256))
        for pred, sample_id in zip(prediction["pred"].numpy(), prediction["id"]):
            path = self.output_dir / f"{sample_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as f:
                Image.fromarray(colorize(pred, palette)).save(f, format="PNG")
            if self.save_ids:
                with atomic_write(path.with_name(path.stem + "_labelIds.png")) as f:
                    Image.fromarray(pred).save(f, format="PNG")
            self.written += 1

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            print(f"wrote {self.written} colour-coded predictions to {self.output_dir}")


def _default_palette(n: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(max(n, 1), 3)).tolist()
