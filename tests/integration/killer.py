"""A callback that SIGKILLs its own process at a chosen point (``MMSAM_KILL_AT``), for resume tests.

``MMSAM_KILL_AT="<hook>:<global_step>"``, e.g. ``before_optimizer_step:3`` kills in the middle of the
training step that would make global step 4 (after its backward pass, before the weights change).
Unset, it does nothing, so the same config serves the uninterrupted reference run.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as pl


class KillAt(pl.Callback):
    """SIGKILL this process when ``hook`` runs at ``global_step`` (from ``MMSAM_KILL_AT``)."""

    def __init__(self) -> None:
        spec = os.environ.get("MMSAM_KILL_AT")
        self.hook, self.step = (spec.split(":")[0], int(spec.split(":")[1])) if spec else (None, -1)

    def _maybe(self, hook: str, trainer: pl.Trainer) -> None:
        if hook == self.hook and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        self._maybe("before_optimizer_step", trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._maybe("train_batch_start", trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._maybe("validation_start", trainer)

