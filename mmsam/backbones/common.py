"""What both backbone families share: image-size checks and capturing chosen block outputs."""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

from mmsam.errors import ConfigError

T = TypeVar("T")


def check_img_size(img_size: int, multiple: int, *, model: str) -> int:
    """``img_size`` as an int, or ConfigError if it is not a positive multiple of ``multiple``."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0 or img_size % multiple:
        raise ConfigError(f"backbone {model!r}: img_size must be a positive multiple of {multiple}, got {img_size!r}")
    return img_size


def normalize_indices(indices: Sequence[int], depth: int, *, model: str) -> list[int]:
    """Block indices, negative ones counted from the end, checked against ``depth``."""
    out = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ConfigError(f"backbone {model!r} has {depth} blocks; block index {i} is out of range")
        out.append(j)
    return out


def run_capturing(
    run: Callable[[], T], blocks: Sequence[nn.Module], indices: Sequence[int]
) -> tuple[T, list[torch.Tensor]]:
    """Call ``run()`` and return its result with the outputs of ``blocks[i]`` for ``i`` in ``indices``.

    Block outputs are channels-last ``(N, H, W, C)`` in both SAM and Hiera; they are returned
    as ``(N, C, H, W)``. Forward hooks leave the official ``forward`` (and any adapters
    injected into the blocks) untouched.
    """
    captured: dict[int, torch.Tensor] = {}
    handles = [
        blocks[i].register_forward_hook(lambda _m, _args, out, i=i: captured.__setitem__(i, out))
        for i in sorted(set(indices))
    ]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return result, [captured[i].permute(0, 3, 1, 2) for i in indices]
