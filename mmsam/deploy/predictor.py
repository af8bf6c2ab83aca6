"""Use a model folder from Python: ``mmsam.load("model/").predict({"rgb": ..., "depth": ...})``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch
import torch.nn.functional as F

from mmsam.data.transforms import resize_image
from mmsam.errors import ConfigError, DataError

Input = Union[str, os.PathLike, np.ndarray, torch.Tensor]

__all__ = ["Prediction", "Predictor", "load"]


@dataclass
class Prediction:
    """``labels``: ``(H, W)`` uint8 class ids; ``probabilities``: ``(K, H, W)`` float32, or None."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None


class Predictor:
    """A trained model ready for new inputs (any subset of its modalities, any image size).

    Images are read and normalised as in training (each modality's registered reader and
    mean / std); whole images are resized to the training evaluation size, or cut into sliding
    windows when the model was evaluated that way; logits come back at the input's size.
    """

    def __init__(self, task: Any, info: Mapping[str, Any], *, device: str | torch.device = "cpu") -> None:
        from mmsam.data.modalities import get_modality

        self.task = task.to(device).eval()
        self.info = dict(info)
        self.device = torch.device(device)
        self.modalities = [m["name"] for m in info["modalities"]]
        self.specs = {m["name"]: get_modality(m.get("spec", m["name"])) for m in info["modalities"]}
        self.class_names = list(info["class_names"])
        self.palette = [tuple(c) for c in info.get("palette") or []]
        self.eval_size = info.get("eval_size")

    def to(self, device: str | torch.device) -> "Predictor":
        self.task.to(device)
        self.device = torch.device(device)
        return self

    def read(self, name: str, value: Input) -> torch.Tensor:
        """One modality as a ``(3, H, W)`` float tensor in the model's value range (not normalised)."""
        spec = self.specs[name]
        if isinstance(value, (str, os.PathLike)):
            return spec.load(value)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            raise DataError(f"modality {name!r}: expected a file path, numpy array or tensor, got {type(value).__name__}")
        arr = spec.to_three(value)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    @torch.no_grad()
    def predict(self, inputs: Mapping[str, Input], *, probabilities: bool = False) -> Prediction:
        """Predict one scene from ``{modality: path | HxW[xC] array | tensor}``; missing modalities
        are treated as absent (a failed sensor)."""
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            raise ConfigError(f"inputs {unknown} are not modalities of this model ({', '.join(self.modalities)})")
        if not inputs:
            raise ConfigError(f"give at least one of the model's modalities: {', '.join(self.modalities)}")
        raw = {n: self.read(n, inputs[n]) for n in self.modalities if n in inputs}
        sizes = {tuple(x.shape[-2:]) for x in raw.values()}
        if len(sizes) != 1:
            raise DataError(f"the modalities are not co-registered: sizes {sorted(sizes)} differ")
        (h, w), = sizes
        if self.task.evaluation.window is None and self.eval_size is not None:  # as the evaluation transform
            raw = {n: resize_image(x, (int(self.eval_size), int(self.eval_size))) for n, x in raw.items()}
        logits = self.logits({n: self.specs[n].normalize(x) for n, x in raw.items()})
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        labels = logits.argmax(1)[0].to(torch.uint8).cpu().numpy()
        probs = logits.softmax(1)[0].float().cpu().numpy() if probabilities else None
        return Prediction(labels, probs)

    def logits(self, images: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(1, K, h, w)`` for normalised ``(3, H, W)`` images of one scene (at the model's
        input size, or any size when it evaluates with sliding windows)."""
        batch = {
            "modalities": {n: x[None].to(self.device) for n, x in images.items()},
            "present": {n: torch.ones(1, dtype=torch.bool, device=self.device) for n in images},
            "meta": {"id": ["input"]},
        }
        return self.task.eval_logits(batch)


def load(
    folder: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None, device: str | torch.device = "cpu", merge: bool = False
) -> Predictor:
    """Load a model folder (``mmsam export``) on ``device``; ``checkpoint``: the base SAM / SAM 2
    file if it is not at the path the folder records. ``merge``: fold LoRA into the encoder
    weights for faster inference (LoRA only; the same predictions within float tolerance)."""
    from mmsam.adapters.inject import adapter_layers, merge_adapters
    from mmsam.deploy.model_folder import read_model_folder

    task, info = read_model_folder(Path(folder), checkpoint=checkpoint)
    if merge:
        blocked = sorted({type(m).__name__ for _, m in adapter_layers(task.method) if not m.supports_merge})
        if blocked:
            raise ConfigError(f"merge=True: {', '.join(blocked)} cannot be merged into the encoder weights")
        merge_adapters(task.method)
    return Predictor(task, info, device=device)
