"""Learning-rate schedules: warm-up + poly (per iteration) and multi-step (per epoch)."""
from __future__ import annotations

from typing import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, MultiStepLR


def warmup_poly(optimizer: Optimizer, *, total_steps: int, warmup_steps: int, warmup_ratio: float = 0.1, power: float = 0.9) -> LambdaLR:
    """The CMNeXt / MemorySAM schedule (memorysam.md §3): from ``warmup_ratio·lr`` linearly to ``lr``
    over ``warmup_steps``, then ``(1 - t)^power`` down to 0 at ``total_steps``."""
    total_steps = max(1, total_steps)
    warmup_steps = min(max(0, warmup_steps), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_ratio + (1 - warmup_ratio) * step / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return max(0.0, 1 - t) ** power

    return LambdaLR(optimizer, factor)


def multistep(optimizer: Optimizer, *, milestones: Sequence[int], gamma: float = 0.1) -> MultiStepLR:
    """lr × ``gamma`` at each milestone, stepped once per epoch: ``milestones`` count completed
    epochs, so ``[24, 34, 44]`` gives MFNet's effective 1e-2 / 1e-3 / 1e-4 / 1e-5 over epochs
    1–24 / 25–34 / 35–44 / 45–50 (``mfnet.md`` §3; its code steps ``[25, 35, 45]`` at each epoch's start)."""
    return MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
