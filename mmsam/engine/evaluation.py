"""How validate / test score a model: ``model.evaluation`` of a config (one object, ``Evaluation``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal, Sequence

from mmsam.engine.sliding_window import check_window
from mmsam.errors import ConfigError


@dataclass
class Evaluation:
    """Evaluation options of ``SegmentationTask`` (YAML: ``model.evaluation``).

    Args:
        modality_subsets: validate / test also with only these modalities present (the others
            removed from the batch, as when sensors fail): a list of lists, or ``all`` (every
            non-empty subset). The full set always comes first. Fit validates the full set only.
        classes: class names averaged in mIoU / mF1 / mAcc (default all); OA stays over all
            classes. ISPRS protocol: the five classes without ``clutter`` (official MFNet train.py). The
            printed table marks the classes left out.
        absent_classes: ``"zero"`` (reference protocol) or ``"skip"``; see ``SegmentationMetrics``.
        ignore_in_union: predictions on ignored pixels count in the IoU union of the predicted class
            (AutoGluon ``Multiclass_IoU`` protocol; see ``SegmentationMetrics``). Default off.
        binary_metrics: binary tasks only (``num_classes`` 2: background 0, foreground 1): validate
            and test also score the full-modality subset with ``BinarySegmentationMetrics``
            (S-measure, mean E-measure, weighted F-measure, MAE, BER; per image averaged, on the
            foreground probability of the same evaluation logits, sliding windows included) and log
            ``{val,test}/Smeasure``, ``/Emeasure``, ``/wFmeasure``, ``/MAE`` (fractions) and ``/BER``
            (percent), printed under the per-class table. Monitor ``val/Smeasure`` (max) or
            ``val/BER`` (min) for the official Conv-LoRA model selection on polyp / camouflage /
            SBU shadow (official run_semantic_segmentation.py). Costs CPU time per image (pysodmetrics). Default off.
            It also logs ``{val,test}/Binary_IoU`` (foreground IoU per image, averaged over images:
            the official ``Binary_IoU`` of leaf / road / ISIC). A list of score names (e.g.
            ``[Binary_IoU]``) computes and logs only those.
        window: sliding-window evaluation of whole tiles of any size (validate, test with every
            modality subset, predict): square windows of this many pixels, logits summed over
            overlaps and divided by their count. Set it to the model's input size with the data's
            ``eval_size: null`` (native tiles). MFNet: 256 (official MFNet train.py). Default: whole images.
        stride: pixels between windows (default ``window // 2``; at most the window); the last
            window of each row / column is aligned to the tile's edge. MFNet: 32.
        window_batch: window crops per forward pass, the memory bound whatever the tile size.
        window_edges: ``"unique"`` (default): each distinct window once, logits averaged over
            overlaps. ``"repeat"``: MFNet's official test loop (``train.py`` / ``utils.sliding_window``
            of sstary/SSRS): starts every ``stride`` up to the tile size, overflowing ones snapped to
            the edge, so edge windows count once per snapped start; logits summed. The MFNet
            recipes use it. Both give the same argmax where no edge window repeats.
        val_stride: stride of the validation loop (per-epoch validation in fit, ``mmsam validate``),
            default ``stride``; test and predict keep ``stride``. MFNet validates Potsdam with 128
            and tests with 32 (official MFNet train.py).
    """

    modality_subsets: list[list[str]] | Literal["all"] | None = None
    classes: list[str] | None = None
    absent_classes: Literal["zero", "skip"] = "zero"
    ignore_in_union: bool = False
    binary_metrics: bool | list[str] = False
    window: int | None = None
    stride: int | None = None
    window_batch: int = 4
    window_edges: Literal["unique", "repeat"] = "unique"
    val_stride: int | None = None

    def __post_init__(self) -> None:
        where = "model.evaluation."
        if self.absent_classes not in ("zero", "skip"):
            raise ConfigError(f"{where}absent_classes must be 'zero' or 'skip', got {self.absent_classes!r}")
        if self.window_edges not in ("unique", "repeat"):
            raise ConfigError(f"{where}window_edges must be 'unique' or 'repeat', got {self.window_edges!r}")
        if self.window is None:
            for key in ("stride", "val_stride"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"{where}{key}={getattr(self, key)} is set but {where}window is not: set the window too")
            return
        check_window(self.window, self.stride, self.window_batch, prefix=where)
        if self.val_stride is not None and not 1 <= self.val_stride <= self.window:
            raise ConfigError(f"{where}val_stride must be in [1, {where}window={self.window}], got {self.val_stride}")

    @property
    def test_stride(self) -> int | None:
        """Stride of test and predict (``None`` without windows)."""
        return None if self.window is None else check_window(self.window, self.stride, self.window_batch)

    def stride_for(self, stage: str) -> int | None:
        """Window stride of ``stage`` (``val``: ``val_stride`` when set)."""
        if stage == "val" and self.val_stride is not None:
            return self.val_stride
        return self.test_stride

    def class_ids(self, class_names: Sequence[str]) -> list[int] | None:
        """Ids of ``classes`` among ``class_names`` (``None``: all)."""
        if self.classes is None:
            return None
        unknown = [c for c in self.classes if c not in class_names]
        if unknown or not self.classes:
            raise ConfigError(f"model.evaluation.classes {unknown or self.classes} are not among the data's class names {list(class_names)}")
        return sorted(list(class_names).index(c) for c in set(self.classes))

    def subsets(self, modalities: Sequence[str]) -> list[list[str]]:
        """The full set, then each requested subset once."""
        extra = all_subsets(modalities) if self.modality_subsets == "all" else [list(s) for s in (self.modality_subsets or [])]
        for s in extra:
            bad = sorted(set(s) - set(modalities))
            if bad or not s:
                raise ConfigError(f"model.evaluation.modality_subsets entry {s} must be a non-empty subset of {list(modalities)}")
        subsets = [list(modalities), *extra]
        return [s for i, s in enumerate(subsets) if s not in subsets[:i]]

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for the checkpoint's hyper-parameters)."""
        return dataclasses.asdict(self)


def all_subsets(modalities: Sequence[str]) -> list[list[str]]:
    """Every non-empty subset, largest first, each in the trained order."""
    return [list(c) for k in range(len(modalities), 0, -1) for c in combinations(modalities, k)]
