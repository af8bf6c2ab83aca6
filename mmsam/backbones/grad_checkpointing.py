"""Activation checkpointing of the frozen encoder's blocks (timm's ``set_grad_checkpointing``).

A frozen SAM ViT / SAM 2 Hiera encoder with adapters inside still keeps, for backward, the
activations of every block the adapters' gradients flow through. With checkpointing on, each
block's forward runs under ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``: only the
block's input is kept, and the block is run again during backward (about one extra encoder forward
per training step) in exchange for not storing its activations.

Blocks are switched in place by a class swap (as :func:`~mmsam.backbones.sam_attention.set_sam_attention`
does), so parameter names, state-dict keys and forward hooks on the blocks (``run_capturing``) are
unchanged. Checkpointing applies only in training mode with grad enabled: evaluation and inference
run the plain forward. The recompute happens in backward, outside the method's
``with modality_layout(...)`` block (on GPU, in another thread): the layout of the forward is
replayed around it. Dropout and noisy gates draw the same random numbers again (checkpoint's
``preserve_rng_state``). State a module records during its forward for later collection (Conv-LoRA's
``balance_loss``, listed in the module's ``recompute_restores`` attribute) is put back after the
recompute, so the recompute leaves nothing behind for the next step to collect.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmsam.adapters.layout import ModalityLayout, current_layout, use_layout

_CHECKPOINTED: dict[type[nn.Module], type[nn.Module]] = {}


def encoder_block_types() -> tuple[type[nn.Module], ...]:
    """The official block classes switched: SAM ViT ``Block`` and SAM 2 Hiera ``MultiScaleBlock``."""
    from sam2.modeling.backbones.hieradet import MultiScaleBlock
    from segment_anything.modeling.image_encoder import Block

    return (Block, MultiScaleBlock)


@contextmanager
def _restored_forward_state(block: nn.Module) -> Iterator[None]:
    """Put back, on exit, the attributes submodules list in ``recompute_restores``."""
    saved = [(m, name, getattr(m, name)) for m in block.modules() for name in getattr(m, "recompute_restores", ())]
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


@contextmanager
def _recompute_context(block: nn.Module, layout: ModalityLayout | None) -> Iterator[None]:
    with use_layout(layout), _restored_forward_state(block):
        yield


def _contexts(block: nn.Module) -> tuple[Any, Any]:
    """``context_fn`` of checkpoint, called at forward time: capture the layout for the recompute."""
    return nullcontext(), _recompute_context(block, current_layout())


class GradCheckpointed:
    """Mixin put in front of an encoder block's class: ``forward`` under activation checkpointing."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        plain = super().forward  # the official block's forward
        if not (self.training and torch.is_grad_enabled()):
            return plain(*args, **kwargs)
        return checkpoint(plain, *args, use_reentrant=False, context_fn=partial(_contexts, self), **kwargs)


def _checkpointed_class(base: type[nn.Module]) -> type[nn.Module]:
    cls = _CHECKPOINTED.get(base)
    if cls is None:
        name = f"GradCheckpointed{base.__name__}"
        cls = type(name, (GradCheckpointed, base), {"__module__": __name__, "__qualname__": name})
        _CHECKPOINTED[base] = cls
    return cls


def __getattr__(name: str) -> type[nn.Module]:
    """``GradCheckpointedBlock`` / ``GradCheckpointedMultiScaleBlock`` by name, so that pickle (a
    ``ddp_spawn`` worker, ``torch.save`` of a whole model) finds the switched classes in any process."""
    for base in encoder_block_types():
        if name == f"GradCheckpointed{base.__name__}":
            return _checkpointed_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_grad_checkpointed(module: nn.Module) -> bool:
    return isinstance(module, GradCheckpointed)


def set_grad_checkpointing(model: nn.Module, enable: bool = True) -> int:
    """Switch activation checkpointing of every SAM ViT / Hiera encoder block inside ``model`` on or off.

    Returns the number of encoder blocks found (all now in the asked state); idempotent.
    """
    if not isinstance(enable, bool):
        raise TypeError(f"set_grad_checkpointing: enable must be a bool, got {enable!r}")
    types = encoder_block_types()
    n = 0
    for m in model.modules():
        if not isinstance(m, types):
            continue
        if enable and not is_grad_checkpointed(m):
            m.__class__ = _checkpointed_class(type(m))
        elif not enable and is_grad_checkpointed(m):
            m.__class__ = type(m).__bases__[1]  # (GradCheckpointed, the class it was switched from)
        n += 1
    return n
