"""Learning-rate schedule: linear warm-up, then polynomial decay, stepped per iteration."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


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
