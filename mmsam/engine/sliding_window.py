"""Sliding-window inference over whole tiles of any size, for any method.

A method only ever sees ``window × window`` crops (what SAM's fixed position embedding, and
the training crops, expect); the crops' logits are put back where they came from, summed over
overlaps and divided by how many windows covered each pixel. MFNet (official MFNet train.py) sums and
takes the argmax; dividing by the positive per-pixel count keeps that argmax and gives logits on
the scale of a single window.

Windows (``edges="unique"``, the default): at ``0, stride, 2·stride, …`` along each axis, plus one
window aligned to the far edge, so every pixel is covered and no window leaves the image (no
padding when the image is at least the window); logits are averaged over the windows covering a
pixel. ``edges="repeat"`` is the test loop of MFNet's official ``train.py`` (``sliding_window`` in
its ``utils.py``): starts at ``0, stride, …`` up to the image size, each start that would overflow
snapped to ``size - window``, so the edge window counts once per snapped start (8× per axis at
stride 32 on a 2557 px side, 64× in a corner), and the logits are summed, not averaged. Each
distinct window still runs once: its logits are added with their multiplicity. An axis shorter than the window is zero-padded at its end to the window (the
normalised images' mean value; ``present`` unchanged, padded label pixels ignored) and the result
cropped back. Memory: at most ``window_batch`` crops (windows × images) go through the method
at once, whatever the tile size; the running sum ``(B, K, H, W)`` is float32 on the logits' device.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from mmsam.errors import ConfigError

Forward = Callable[[dict[str, Any]], dict[str, Any]]


def window_starts(size: int, window: int, stride: int, *, edges: str = "unique") -> list[int]:
    """Start offsets of the windows along one axis of length ``size``; the last ends at the edge.
    ``edges="repeat"``: MFNet's official starts, the overflowing ones snapped to the edge (repeats kept)."""
    if size <= window:
        return [0]
    if edges == "repeat":
        return [min(s, size - window) for s in range(0, size, stride)]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def check_window(window: int, stride: int | None, window_batch: int = 1, *, prefix: str = "") -> int:
    """Validate window / stride / batch; returns the stride (``window // 2`` when not given)."""
    if window < 1:
        raise ConfigError(f"{prefix}window must be a positive number of pixels, got {window}")
    stride = max(1, window // 2) if stride is None else stride
    if not 1 <= stride <= window:
        raise ConfigError(f"{prefix}stride must be in [1, {prefix}window={window}] (windows must overlap or touch), got {stride}")
    if window_batch < 1:
        raise ConfigError(f"{prefix}window_batch must be >= 1, got {window_batch}")
    return stride


def _per_sample(value: Any, index: list[int], b: int) -> Any:
    """``value`` restricted to samples ``index`` when it is per-sample (a length-B list or tensor)."""
    if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == b:
        return value[torch.as_tensor(index, device=value.device)]
    if isinstance(value, (list, tuple)) and len(value) == b:
        return [value[i] for i in index]
    if isinstance(value, dict):
        return {k: _per_sample(v, index, b) for k, v in value.items()}
    return value


def sliding_window_logits(
    forward: Forward,
    batch: dict[str, Any],
    *,
    window: int,
    stride: int | None = None,
    num_classes: int | None = None,
    window_batch: int = 4,
    ignore_index: int = 255,
    edges: str = "unique",
) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` of ``forward(batch)["logits"]`` computed window by window.

    Args:
        forward: a method (or any callable) taking a batch (``docs/contracts.md``) of
            ``window × window`` images and returning ``{"logits": (N, K, window, window), ...}``.
        batch: ``B ≥ 1`` images of one size ``H × W`` (any size) per modality; every modality,
            and the label when there is one, is cropped identically; ``present`` and per-sample
            ``meta`` entries follow their crop's sample; everything else is passed unchanged.
        window: side of the square window, in pixels.
        stride: step between windows (default ``window // 2``); at most ``window``.
        num_classes: K, checked against the method's output when given.
        window_batch: crops per ``forward`` call (windows × images), the memory bound.
        ignore_index: label value of padded pixels (images smaller than the window).
        edges: ``"unique"`` (distinct windows, logits averaged) or ``"repeat"`` (MFNet's official
            snapped starts, logits summed with each window's multiplicity).
    """
    if edges not in ("unique", "repeat"):
        raise ConfigError(f"eval_window_edges must be 'unique' or 'repeat', got {edges!r}")
    stride = check_window(window, stride, window_batch)
    images: dict[str, torch.Tensor] = batch["modalities"]
    first = next(iter(images.values()))
    b, (h, w) = first.shape[0], first.shape[-2:]
    for name, x in images.items():
        if x.shape[0] != b or x.shape[-2:] != (h, w):
            raise ValueError(f"modality {name!r} is {tuple(x.shape)}, the others {tuple(first.shape)}: sliding windows need one size")
    pad_h, pad_w = max(0, window - h), max(0, window - w)
    label = batch.get("label")
    if pad_h or pad_w:
        images = {n: F.pad(x, (0, pad_w, 0, pad_h)) for n, x in images.items()}
        if label is not None:
            label = F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)
    ph, pw = h + pad_h, w + pad_w
    from collections import Counter

    rows, cols = Counter(window_starts(ph, window, stride, edges=edges)), Counter(window_starts(pw, window, stride, edges=edges))
    crops = [(i, y, x) for i in range(b) for y in rows for x in cols]

    total: torch.Tensor | None = None
    count = first.new_zeros((ph, pw), dtype=torch.float32)
    for start in range(0, len(crops), window_batch):
        chunk = crops[start : start + window_batch]
        index = [i for i, _, _ in chunk]
        sub = {k: _per_sample(v, index, b) for k, v in batch.items() if k not in ("modalities", "label")}
        sub["modalities"] = {n: torch.stack([x[i, :, y : y + window, x0 : x0 + window] for i, y, x0 in chunk]) for n, x in images.items()}
        if label is not None:
            sub["label"] = torch.stack([label[i, y : y + window, x0 : x0 + window] for i, y, x0 in chunk])
        logits = forward(sub)["logits"]
        if logits.shape[0] != len(chunk) or logits.shape[-2:] != (window, window):
            raise ValueError(f"the method returned logits {tuple(logits.shape)} for {len(chunk)} crops of {window}x{window}")
        if total is None:
            k = logits.shape[1]
            if num_classes is not None and k != num_classes:
                raise ValueError(f"the method returned {k} classes, expected {num_classes}")
            total = logits.new_zeros((b, k, ph, pw), dtype=torch.float32)
        for (i, y, x0), crop in zip(chunk, logits.float()):
            times = rows[y] * cols[x0]
            total[i, :, y : y + window, x0 : x0 + window] += crop if times == 1 else times * crop
            if i == 0:  # every image has the same windows
                count[y : y + window, x0 : x0 + window] += 1
    assert total is not None
    if edges == "repeat":
        return total[..., :h, :w]
    return (total / count.to(total.device))[..., :h, :w]
