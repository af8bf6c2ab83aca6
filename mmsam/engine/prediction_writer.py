"""Writes predicted label maps as palette PNGs (``mmsam predict``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from mmsam.fileio import atomic_write
from mmsam.palette import colorize, default_palette, palette_png

__all__ = ["ColorMaskWriter", "colorize"]


class ColorMaskWriter(BasePredictionWriter):
    """Saves ``<output_dir>/<sample id>.png``: a "P" mode PNG whose pixel values are the class ids,
    with the palette embedded (viewers show colours). Optionally also the id map as plain "L" PNG.

    Args:
        output_dir: where predictions go; sample ids keep their relative folders.
        palette: RGB colour per class (filled from the data module by the CLI).
        save_ids: also write ``<id>_labelIds.png`` (greyscale class ids, for tools that expand palettes).
    """

    def __init__(self, output_dir: str = "predictions", palette: list[list[int]] | None = None, save_ids: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.palette = palette
        self.save_ids = save_ids
        self.written = 0

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        palette = self.palette or default_palette(pl_module.num_classes)
        for pred, sample_id in zip(prediction["pred"].numpy(), prediction["id"]):
            path = self.output_dir / f"{sample_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path) as f:
                palette_png(pred, palette).save(f, format="PNG")
            if self.save_ids:
                with atomic_write(path.with_name(path.stem + "_labelIds.png")) as f:
                    Image.fromarray(pred).save(f, format="PNG")
            self.written += 1

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            print(f"wrote {self.written} palette PNG predictions to {self.output_dir}")

