"""Per-modality normalisation statistics of a training split (``mmsam data stats``).

Mean and standard deviation per channel of each modality as the data set reads it (after its
reader and channel conversion, before normalisation: the [0, 1] range for 8/16-bit images),
accumulated in float64 over every pixel of every training sample.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from mmsam.errors import DataError

__all__ = ["modality_stats"]


def modality_stats(dataset: Any, modalities: Sequence[str] | None = None, *, progress: bool = True) -> dict[str, dict[str, list[float]]]:
    """``{modality: {"mean": [3 floats], "std": [3 floats]}}`` over ``dataset.samples``."""
    from tqdm.auto import tqdm

    from mmsam.data.modalities import get_modality

    names = list(modalities or dataset.modalities)
    total = {m: torch.zeros(3, dtype=torch.float64) for m in names}
    square = {m: torch.zeros(3, dtype=torch.float64) for m in names}
    count = {m: 0 for m in names}
    for s in tqdm(dataset.samples, desc="stats", unit="sample", disable=not progress):
        for m in names:
            path = s.files.get(m)
            if path is None:
                continue
            x = dataset.specs[m].load(path).double() if m in dataset.specs else get_modality(m).load(path).double()
            total[m] += x.sum((1, 2))
            square[m] += (x * x).sum((1, 2))
            count[m] += x.shape[1] * x.shape[2]
    out = {}
    for m in names:
        if not count[m]:
            raise DataError(f"no file of modality {m!r} in the split")
        mean = total[m] / count[m]
        std = (square[m] / count[m] - mean * mean).clamp(min=0).sqrt()
        std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant channel: divide by 1
        out[m] = {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}
    return out
