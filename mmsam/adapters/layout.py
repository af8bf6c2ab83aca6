"""The modality layout of the current forward pass: which modalities are stacked, and who has them.

Methods stack the present modalities along the batch dimension, modality outermost:
``(M·B, 3, H, W)``. Inside the frozen encoder (SAM windows and Hiera windows keep images
contiguous and in order) every tensor whose first dimension is a multiple of ``M``
splits into ``M`` equal contiguous chunks, one per modality. Modality-aware adapters
(per-modality experts, MMAdapter / MMLoRA streams) read the layout set here for the duration of
a call instead of changing the official modules' signatures; shared adapters ignore it.

The layout also carries the per-sample presence ``(M, B)``: a modality stacked for the batch may
be absent for some samples (its pixels are zeros), and adapters that mix streams must not count
it there. The shared encode step of every method (``SegmentationMethod.encode``) sets both.

A ``ContextVar`` (rather than an attribute set on every adapter) keeps the layout
correct under nested calls and re-entrant forwards and costs nothing to set.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator, Mapping

import torch

Known = Mapping[str, object] | list[str] | tuple[str, ...]


@dataclass(frozen=True, eq=False)
class ModalityLayout:
    """Names of the modalities stacked in the current batch, outermost first, and their presence.

    ``present``: ``(M, B)``, 1 where sample ``b`` has modality ``m``; ``None`` means every stacked
    modality is present in every sample.
    """

    names: tuple[str, ...]
    present: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.present is not None and self.present.shape[0] != len(self.names):
            raise ValueError(f"presence {tuple(self.present.shape)} does not fit {len(self.names)} modalities {self.names}")

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

    def row_presence(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        """Presence ``(M, rows)`` as ``like``'s dtype: a chunk of ``rows = B·k`` repeats each sample's flag ``k`` times."""
        m = self.num_modalities
        if self.present is None:
            return like.new_ones(m, rows)
        b = self.present.shape[1]
        if rows % b:
            raise RuntimeError(f"modality presence {tuple(self.present.shape)} does not fit {m} chunks of {rows} rows")
        return self.present.to(device=like.device, dtype=like.dtype).repeat_interleave(rows // b, dim=1)

    def for_adapter(self, known: Known, kind: str, part: str) -> ModalityLayout:
        """Check that an adapter with one ``part`` per name of ``known`` can serve this layout."""
        unknown = [n for n in self.names if n not in known]
        if unknown:
            raise RuntimeError(f"no {kind} {part} for modalities {unknown}; {part}s: {list(known)}")
        return self


_CURRENT: ContextVar[ModalityLayout | None] = ContextVar("mmsam_modality_layout", default=None)


@contextmanager
def modality_layout(names: tuple[str, ...] | list[str], present: torch.Tensor | None = None) -> Iterator[ModalityLayout]:
    """Set the modality layout (and optionally the per-sample presence ``(M, B)``) inside the ``with`` block."""
    with use_layout(ModalityLayout(tuple(names), present)) as layout:
        yield layout


@contextmanager
def use_layout(layout: ModalityLayout | None) -> Iterator[ModalityLayout | None]:
    """Set an existing layout (or none) inside the ``with`` block: to replay a forward pass's layout
    later, e.g. when activation checkpointing recomputes a block during backward."""
    token = _CURRENT.set(layout)
    try:
        yield layout
    finally:
        _CURRENT.reset(token)


def current_layout() -> ModalityLayout | None:
    """The layout of the forward pass in progress, or ``None`` outside one."""
    return _CURRENT.get()


def layout_for(known: Known, kind: str, part: str) -> ModalityLayout:
    """The current layout, checked against the modalities a modality-aware adapter has parts for.

    Outside any layout, an adapter with a single part serves it (every row is that modality);
    with several parts it is an error, since rows cannot be told apart.
    """
    layout = current_layout()
    if layout is None:
        if len(known) != 1:
            raise RuntimeError(
                f"{kind} needs the batch's modality layout: run the encoder inside "
                "`with modality_layout(names):` (methods do this for you)"
            )
        return ModalityLayout(tuple(known))
    return layout.for_adapter(known, kind, part)
