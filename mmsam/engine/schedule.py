"""Learning-rate schedules: warm-up + poly (per iteration) and multi-step (per epoch).

``WarmupPoly`` is an ``LRScheduler`` given in YAML as ``model.lr_scheduler`` (``class_path`` +
``init_args``, Lightning's ``LRSchedulerCallable``); its length in iterations comes from the
trainer (``SegmentationTask.configure_optimizers`` calls :meth:`WarmupPoly.set_training_length`).
Any other torch scheduler works the same way (MFNet: ``torch.optim.lr_scheduler.MultiStepLR``).
"""
from __future__ import annotations

from typing import Any, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR

from mmsam.errors import ConfigError


def warmup_poly_factor(step: int, *, total_steps: int, warmup_steps: int, warmup_ratio: float, power: float) -> float:
    """The lr factor at ``step``: linear from ``warmup_ratio`` to 1 over ``warmup_steps``, then
    ``(1 - t)^power`` down to 0 at ``total_steps``."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)
    if step < warmup_steps:
        return warmup_ratio + (1 - warmup_ratio) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 1 - t) ** power


class WarmupPoly(LRScheduler):
    """The CMNeXt / MemorySAM schedule (official MemorySAM train_sam2_lora.py), stepped per iteration: linear warm-up
    from ``warmup_ratio·lr`` over ``warmup_epochs``, then poly decay with ``power`` to 0.

    Args:
        warmup_epochs: warm-up length in epochs of iterations (without ``max_epochs``: 5 % of the steps).
        warmup_ratio: the warm-up's starting fraction of the lr.
        power: poly exponent.
        extra_epochs: the decay runs over ``max_epochs + extra_epochs`` epochs of iterations, so the lr
            does not reach 0 at the end. MemorySAM's official ``train_sam2_lora.py`` (line 160) decays
            over ``(epochs + 1) × iterations``: its recipes set 1.
        total_steps, steps_per_epoch: the training length; normally left out and set by the task
            from the trainer (:meth:`set_training_length`).
    """

    interval = "step"  # read by SegmentationTask.configure_optimizers

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float = 10.0,
        warmup_ratio: float = 0.1,
        power: float = 0.9,
        extra_epochs: int = 0,
        total_steps: int | None = None,
        steps_per_epoch: float | None = None,
        last_epoch: int = -1,
    ) -> None:
        if warmup_epochs < 0 or not 0 <= warmup_ratio <= 1 or extra_epochs < 0:
            raise ConfigError(
                f"lr_scheduler WarmupPoly: warmup_epochs >= 0, warmup_ratio in [0, 1] and extra_epochs >= 0 needed, "
                f"got {warmup_epochs}, {warmup_ratio}, {extra_epochs}"
            )
        self.warmup_epochs, self.warmup_ratio, self.power, self.extra_epochs = warmup_epochs, warmup_ratio, power, extra_epochs
        self.total_steps, self.warmup_steps = 1, 0
        self._length(total_steps or 1, steps_per_epoch)
        super().__init__(optimizer, last_epoch)

    def _length(self, steps: int, steps_per_epoch: float | None) -> None:
        if steps_per_epoch:
            self.total_steps = int(round(steps + self.extra_epochs * steps_per_epoch))
            self.warmup_steps = int(self.warmup_epochs * steps_per_epoch)
        else:
            self.total_steps, self.warmup_steps = steps, int(0.05 * steps)

    def set_training_length(self, total_steps: int, max_epochs: int | None) -> None:
        """``total_steps`` optimiser steps over ``max_epochs`` epochs (``None``: unknown, e.g. a
        ``max_steps`` run); the lr of the current step is recomputed."""
        self._length(total_steps, total_steps / max_epochs if max_epochs and max_epochs > 0 else None)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def factor(self, step: int) -> float:
        return warmup_poly_factor(step, total_steps=self.total_steps, warmup_steps=self.warmup_steps,
                                  warmup_ratio=self.warmup_ratio, power=self.power)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


def warmup_poly(optimizer: Optimizer, *, total_steps: int, warmup_steps: int, warmup_ratio: float = 0.1, power: float = 0.9) -> LambdaLR:
    """:class:`WarmupPoly` as a ``LambdaLR`` with the lengths in steps."""
    return LambdaLR(optimizer, lambda step: warmup_poly_factor(step, total_steps=total_steps, warmup_steps=warmup_steps,
                                                                warmup_ratio=warmup_ratio, power=power))


def multistep(optimizer: Optimizer, *, milestones: Sequence[int], gamma: float = 0.1) -> MultiStepLR:
    """lr × ``gamma`` at each milestone, stepped once per epoch: ``milestones`` count completed
    epochs, so ``[24, 34, 44]`` gives MFNet's effective 1e-2 / 1e-3 / 1e-4 / 1e-5 over epochs
    1–24 / 25–34 / 35–44 / 45–50 (official MFNet train.py / utils.py; its code steps ``[25, 35, 45]`` at each epoch's start).
    In YAML: ``lr_scheduler: {class_path: torch.optim.lr_scheduler.MultiStepLR, init_args: {milestones: [24, 34, 44]}}``."""
    return MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)


def scheduler_interval(scheduler: Any, override: str | None = None) -> str:
    """``"step"`` or ``"epoch"``: ``override``, else the scheduler's own ``interval``, else per epoch (torch's)."""
    return override or getattr(scheduler, "interval", "epoch")
