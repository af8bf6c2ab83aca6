"""A check that distributed training keeps every process's model identical.

``--trainer.callbacks+=mmsam.engine.RankSyncCheck`` compares, after every optimiser step, a
float64 checksum of each trainable parameter and each floating buffer across processes (BatchNorm
running statistics only under ``sync_batchnorm``: otherwise DDP replaces them by rank 0's at
each forward), and
stops with one line naming the first tensors that differ. Under DDP they must be equal: a
parameter that gets no gradient in some step (and is not frozen) leaves its gradient bucket
unreduced, and the processes silently drift apart.
"""
from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from mmsam.errors import ConfigError

__all__ = ["RankSyncCheck"]


class RankSyncCheck(pl.Callback):
    """Raise if parameters or buffers differ across processes after a training step.

    Args:
        every_n_steps: check every this many optimiser steps (1: each).
        atol: allowed difference of the per-tensor checksums (0: bit for bit on the checksums).
    """

    def __init__(self, every_n_steps: int = 1, atol: float = 0.0) -> None:
        if every_n_steps < 1:
            raise ConfigError(f"RankSyncCheck.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.atol = atol
        self.checks = 0

    @staticmethod
    def _tensors(module: torch.nn.Module, batchnorm: bool) -> list[tuple[str, torch.Tensor]]:
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        buffers = [(n, b) for n, b in module.named_buffers() if b.is_floating_point()
                   and (batchnorm or n.rsplit(".", 1)[-1] not in ("running_mean", "running_var"))]
        return params + buffers

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not (dist.is_available() and dist.is_initialized()) or trainer.global_step % self.every_n_steps:
            return
        # without SyncBatchNorm (CPU) each process keeps its own BatchNorm statistics between
        # steps; DDP copies rank 0's into every process at the next forward (broadcast_buffers)
        named = self._tensors(pl_module, batchnorm=bool(getattr(trainer._accelerator_connector, "sync_batchnorm", False)))
        local = torch.stack([t.detach().double().sum() + 1e-3 * t.detach().double().abs().sum() for _, t in named]).to(pl_module.device)
        gathered = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)
        spread = (torch.stack(gathered).max(0).values - torch.stack(gathered).min(0).values).cpu()
        bad = [named[i][0] for i in torch.nonzero(spread > self.atol).flatten().tolist()]
        self.checks += 1
        if bad:
            hint = ("BatchNorm statistics are per process: set trainer.sync_batchnorm: true"
                    if all(b.rsplit(".", 1)[-1] in ("running_mean", "running_var") for b in bad) else
                    "a trainable tensor that gets no gradient in a step leaves DDP's reduction unfinished: "
                    "freeze it, or use strategy ddp_find_unused_parameters_true")
            raise RuntimeError(
                f"after step {trainer.global_step} {len(bad)} of {len(named)} tensors differ across the "
                f"{dist.get_world_size()} processes (first: {', '.join(bad[:5])}); {hint}"
            )
