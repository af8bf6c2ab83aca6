"""The modality layout of the current forward pass.

Methods stack the present modalities along the batch dimension, modality outermost:
``(M·B, 3, H, W)``. Inside the frozen encoder (SAM windows and Hiera windows keep images
contiguous and in order) every tensor whose first dimension is a multiple of ``M``
splits into ``M`` equal contiguous chunks, one per modality. Modality-aware adapters
(per-modality experts, MMLoRA streams) read the layout set here for the duration of a
call instead of changing the official modules' signatures; shared adapters ignore it.

A ``ContextVar`` (rather than an attribute set on every adapter) keeps the layout
correct under nested calls and re-entrant forwards and costs nothing to set.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class ModalityLayout:
    """Names of the modalities stacked in the current batch, outermost first."""

    names: tuple[str, ...]

    @property
    def num_modalities(self) -> int:
        return len(self.names)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Split a tensor whose first dim is ``M·N`` into ``M`` chunks of ``N``."""
        m = self.num_modalities
        if x.shape[0] % m:
            raise RuntimeError(
                f"tensor with leading dim {x.shape[0]} cannot be split over {m} modalities {self.names}"
            )
        return x.chunk(m, dim=0)


_CURRENT: ContextVar[ModalityLayout | None] = ContextVar("mmsam_modality_layout", default=None)


@contextmanager
def modality_layout(names: tuple[str, ...] | list[str]) -> Iterator[ModalityLayout]:
    """Set the modality layout for the code inside the ``with`` block."""
    layout = ModalityLayout(tuple(names))
    token = _CURRENT.set(layout)
    try:
        yield layout
    finally:
        _CURRENT.reset(token)


def current_layout() -> ModalityLayout | None:
    """The layout of the forward pass in progress, or ``None`` outside one."""
    return _CURRENT.get()
