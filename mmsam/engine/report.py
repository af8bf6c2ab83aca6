"""One evaluation report for a checkpoint (``mmsam report``): ``report.md`` plus PNG figures.

:class:`EvaluationReport` is a callback of ``trainer.test``: its scores are the task's own test
metrics (the objects ``mmsam test`` logs, so the numbers are those of ``mmsam test``): per-class
IoU / F1, mIoU per modality subset of the task's ``evaluation.modality_subsets`` (``mmsam report``
asks for ``all``), and, from the full-modality logits ``test_step`` returns, mIoU per condition and
per case (sensor failure) when the data set's samples carry them (whole images, or sliding windows
with the task's ``evaluation.window``; means over its ``evaluation.classes``), a row-normalised
confusion-matrix heat map and a few colour-coded predictions beside the ground truth. Figures are
drawn with PIL only (no matplotlib needed). Under DDP every process scores its samples and rank 0
writes the files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image, ImageDraw

from mmsam.palette import colorize, default_palette
from mmsam.engine.task import subset_key
from mmsam.errors import CheckpointError
from mmsam.fileio import atomic_write, load_torch_file
from mmsam.metrics import SegmentationMetrics


def load_checkpoint_weights(task: Any, path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint's ``state_dict`` into ``task``; a missing or unfitting file is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    ckpt = load_torch_file(path)  # weights_only=True: never unpickles; torn / foreign file: one line naming it
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint of mmsam")
    try:
        task.on_load_checkpoint(ckpt)  # the task's own fit check: missing / unexpected keys named
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    task.load_state_dict(ckpt["state_dict"])
    return ckpt


def _pct(v: Any) -> str:
    v = float(v)
    return "n/a" if v != v else f"{100 * v:.2f}"


def _thumb(image: np.ndarray, side: int = 320) -> np.ndarray:
    """Nearest-neighbour downscale so that the longer side is at most ``side`` (whole large tiles)."""
    h, w = image.shape[:2]
    step = -(-max(h, w) // side)
    return image[::step, ::step] if step > 1 else image


def _meta_list(meta: dict[str, Any], key: str, n: int) -> list[str] | None:
    values = meta.get(key) if isinstance(meta, dict) else None
    if values is None:
        return None
    if isinstance(values, str):
        values = [values] * n
    return [str(v) for v in values]


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    """A ``(C, H, W)`` normalised input as a viewable ``(H, W, 3)`` uint8 image (per-image min-max)."""
    x = image.detach().float().cpu()
    x = x[:3] if x.shape[0] >= 3 else x[:1].expand(3, -1, -1)
    lo, hi = x.amin(), x.amax()
    x = (x - lo) / (hi - lo).clamp(min=1e-6)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _heat(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to a white → dark-blue ramp, ``(..., 3)`` uint8."""
    lo, hi = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
    v = np.clip(np.nan_to_num(v), 0.0, 1.0)[..., None]
    return (lo + (hi - lo) * v).round().astype(np.uint8)


def draw_confusion(confmat: np.ndarray, path: Path, class_names: Sequence[str] | None = None) -> Path:
    """Row-normalised ``K×K`` confusion matrix (rows truth, columns prediction) as a PNG heat map."""
    k = confmat.shape[0]
    rows = confmat.sum(1, keepdims=True).astype(np.float64)
    norm = np.where(rows > 0, confmat / np.maximum(rows, 1), 0.0)
    cell = max(6, min(32, 640 // max(k, 1)))
    margin = 28 if cell >= 14 else 4
    grid = np.kron(_heat(norm), np.ones((cell, cell, 1), dtype=np.uint8))
    canvas = Image.new("RGB", (margin + k * cell + 1, margin + k * cell + 1), (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (margin, margin))
    draw = ImageDraw.Draw(canvas)
    for i in range(k + 1):  # thin grid lines
        draw.line([(margin + i * cell, margin), (margin + i * cell, margin + k * cell)], fill=(200, 200, 200))
        draw.line([(margin, margin + i * cell), (margin + k * cell, margin + i * cell)], fill=(200, 200, 200))
    if margin > 4:  # class indices along both axes
        for i in range(k):
            draw.text((margin + i * cell + 2, 2 + (i % 2) * 12), str(i), fill=(0, 0, 0))
            draw.text((2, margin + i * cell + (cell - 10) // 2), str(i), fill=(0, 0, 0))
    with atomic_write(path) as f:
        canvas.save(f, format="PNG")
    return path


def draw_examples(examples: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]], palette: Sequence[Sequence[int]], path: Path) -> Path:
    """One row per example: input | ground truth | prediction (ignored pixels black)."""
    h, w = examples[0][1].shape
    scale = max(1, 160 // max(h, w))
    gap = 4
    cols = 3
    canvas = Image.new("RGB", (cols * w * scale + (cols + 1) * gap, len(examples) * (h * scale + gap) + gap + 14), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(("input", "ground truth", "prediction")):
        draw.text((gap + c * (w * scale + gap), 2), title, fill=(0, 0, 0))
    for r, (rgb, gt, pred, _sid) in enumerate(examples):
        tiles = [rgb, colorize(gt.astype(np.uint8), palette), colorize(pred.astype(np.uint8), palette)]
        for c, tile in enumerate(tiles):
            img = Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(img, (gap + c * (w * scale + gap), 14 + gap + r * (h * scale + gap)))
    with atomic_write(path) as f:
        canvas.save(f, format="PNG")
    return path


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _protocol_lines(task: Any, class_names: Sequence[str]) -> list[str]:
    """How the scores were taken: classes in the means, sliding windows."""
    lines = []
    mean_over = task.mean_over
    if mean_over is not None:
        left = [n for i, n in enumerate(class_names) if i not in mean_over]
        lines.append(f"- mIoU / mAcc / mF1 over {len(mean_over)} of {len(class_names)} classes (left out: {', '.join(left)}); OA over all")
    ev = task.evaluation
    if ev.window:
        lines.append(f"- sliding windows: {ev.window} px, stride {ev.test_stride} px, logits averaged over overlaps")
    return lines


def _plain(scores: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {k: (v.tolist() if v.ndim else float(v)) for k, v in scores.items() if k != "confmat"}


def _names_everywhere(names: list[str]) -> list[str]:
    """The union of ``names`` over all processes, sorted (each process's own under DDP)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, sorted(names))
        names = [n for part in gathered for n in part]
    return sorted(set(names))


class EvaluationReport(pl.Callback):
    """Write ``report.md``, ``confusion.png`` and ``examples.png`` to ``output_dir`` at the end of
    ``trainer.test`` of a :class:`~mmsam.engine.SegmentationTask` (no second evaluation loop).

    Args:
        output_dir: the report folder.
        examples: test samples drawn beside their ground truth (0: none; rank 0's first ones).
        title: a line naming what was evaluated (checkpoint, config).

    After the test, :attr:`result` holds the scores (fractions in [0, 1]): ``full``, ``subsets`` (by
    ``"a+b"`` key), ``conditions``, ``cases``, ``num_samples`` and the ``files`` written.
    """

    def __init__(self, output_dir: str | Path, *, examples: int = 4, title: str | None = None) -> None:
        super().__init__()
        self.output_dir, self.examples, self.title = Path(output_dir), max(0, int(examples)), title
        self.result: dict[str, Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self._groups: dict[str, dict[str, SegmentationMetrics]] = {"condition": {}, "case": {}}
        self._counts: dict[tuple[str, str], int] = {}
        self._shown: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]] = []
        self._samples = 0

    def _metric(self, task: Any, device: torch.device) -> SegmentationMetrics:
        ev = task.evaluation
        return SegmentationMetrics(task.num_classes, ignore_index=task.hparams.ignore_index, absent_classes=ev.absent_classes,
                                   mean_over=task.mean_over, ignore_in_union=ev.ignore_in_union).to(device)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._reset()

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int,
                          dataloader_idx: int = 0) -> None:
        pred = outputs["logits"].argmax(1)
        label = batch["label"]
        b = label.shape[0]
        meta = batch.get("meta") or {}
        for key, store in self._groups.items():
            for i, name in enumerate(_meta_list(meta, key, b) or []):
                if name not in store:
                    store[name] = self._metric(pl_module, label.device)
                store[name].update(pred[i : i + 1], label[i : i + 1])
                self._counts[(key, name)] = self._counts.get((key, name), 0) + 1
        ids = _meta_list(meta, "id", b) or [str(self._samples + i) for i in range(b)]
        first = batch["modalities"][pl_module.modalities[0]]
        for i in range(min(b, self.examples - len(self._shown))):
            self._shown.append((_thumb(_to_rgb(first[i])), _thumb(label[i].cpu().numpy().astype(np.uint8)),
                                _thumb(pred[i].cpu().numpy().astype(np.uint8)), ids[i]))
        self._samples += b

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Runs before the task's own hook, while its test metrics still hold the epoch's counts."""
        task = pl_module
        device = task.device
        # collectives, entered by every process in the same order
        subsets = [_plain_with(task.epoch_scores("test", i)) for i in range(len(task.subsets))]
        n_samples = int(trainer.strategy.reduce(torch.tensor(float(self._samples), device=device), reduce_op="sum"))
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        counts: dict[tuple[str, str], int] = {}
        for key, store in self._groups.items():
            groups[key] = {}
            for name in _names_everywhere(list(store)):
                metric = store.get(name) or self._metric(task, device)
                groups[key][name] = _plain(metric.synced_scores())
                n = self._counts.get((key, name), 0)
                counts[(key, name)] = int(trainer.strategy.reduce(torch.tensor(float(n), device=device), reduce_op="sum"))
        if trainer.is_global_zero:
            self.result = self._write(task, trainer, subsets, groups, counts, n_samples)

    def _write(self, task: Any, trainer: pl.Trainer, subset_scores: list[tuple[dict[str, Any], np.ndarray]],
               groups: dict[str, dict[str, dict[str, Any]]], counts: dict[tuple[str, str], int], n_samples: int) -> dict[str, Any]:
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        modalities = list(task.modalities)
        subsets = task.subsets
        full, confmat = subset_scores[0]
        result: dict[str, Any] = {
            "full": full,
            "subsets": {subset_key(s): sc for s, (sc, _) in zip(subsets, subset_scores)},
            "conditions": groups["condition"],
            "cases": groups["case"],
            "num_samples": n_samples,
            "files": [],
        }
        shown = self._shown
        title = self.title
        palette = list(getattr(getattr(trainer, "datamodule", None), "palette", None) or default_palette(task.num_classes))
        class_names = list(task.class_names)
        files = [draw_confusion(confmat, out / "confusion.png", class_names)]
        if shown:
            files.append(draw_examples(shown, palette, out / "examples.png"))

        lines = ["# Evaluation report", ""]
        if title:
            lines += [title, ""]
        method = type(task.method).__name__
        lines += [
            f"- method: `{method}`; modalities: {', '.join(modalities)}; classes: {task.num_classes}",
            f"- test samples: {n_samples}; absent classes: `{task.evaluation.absent_classes}`; scores in percent",
            *_protocol_lines(task, class_names),
            "",
            "## Summary (all modalities)",
            "",
            *_table(["mIoU", "OA", "mAcc", "mF1"], [[_pct(full["mIoU"]), _pct(full["OA"]), _pct(full["mAcc"]), _pct(full["mF1"])]]),
            "",
            "## Per class",
            "",
        ]
        gt_pixels = confmat.sum(1)
        mean_over = task.mean_over
        lines += _table(
            ["#", "class", "IoU", "F1", "Acc", "pixels", "in means"],
            [[str(i), name, _pct(full["IoU"][i]), _pct(full["F1"][i]), _pct(full["Acc"][i]), str(int(gt_pixels[i])),
              "no" if mean_over is not None and i not in mean_over else "yes"]
             for i, name in enumerate(class_names)],
        )
        lines += ["", "## Modality subsets (x present, - removed)", ""]
        lines += _table(
            [*modalities, "mIoU", "OA", "mF1"],
            [[*("x" if m in s else "-" for m in modalities), *(_pct(result["subsets"][subset_key(s)][k]) for k in ("mIoU", "OA", "mF1"))]
             for s in subsets],
        )
        for key, title_ in (("conditions", "Per condition"), ("cases", "Per case (condition or sensor failure)")):
            if result[key]:
                lines += ["", f"## {title_} (all modalities)", ""]
                lines += _table(
                    [key[:-1], "samples", "mIoU", "OA", "mF1"],
                    [[name, str(counts[(key[:-1], name)]), *(_pct(s[k]) for k in ("mIoU", "OA", "mF1"))] for name, s in result[key].items()],
                )
        lines += ["", "## Figures", "", "Confusion matrix (rows: ground truth, columns: prediction; row-normalised, white 0 → blue 1):", "",
                  "![confusion matrix](confusion.png)", ""]
        if shown:
            lines += ["Examples (input | ground truth | prediction; ignored pixels black): "
                      + ", ".join(f"`{sid}`" for *_, sid in shown), "", "![examples](examples.png)", ""]
        lines += ["Legend: " + ", ".join(f"{i} {n}" for i, n in enumerate(class_names)), ""]
        report = out / "report.md"
        with atomic_write(report, "w") as f:
            f.write("\n".join(lines))
        result["files"] = [report, *files]
        return result


def _plain_with(scores: dict[str, torch.Tensor]) -> tuple[dict[str, Any], np.ndarray]:
    """Plain scores and the confusion matrix as a NumPy array."""
    return _plain(scores), scores["confmat"].detach().cpu().numpy()
