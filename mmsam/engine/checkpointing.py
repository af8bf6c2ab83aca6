"""Checkpoints that resume bit for bit, written atomically and read without pickle.

* :class:`AtomicCheckpointIO` — Lightning's checkpoint IO: ``<target>.tmp-<pid>`` in the target's
  folder, fsync, ``os.replace``, fsync of the folder; reads with ``torch.load(weights_only=True)``.
* :class:`ResumableCheckpoint` — ``ModelCheckpoint`` whose ``last.ckpt`` is rewritten at the end of
  every training epoch (and every ``last_every_n_train_steps`` optimiser steps), whatever the
  monitored metric does; best-k files follow the monitor as before.
* :class:`ResumeState` — stores the RNG states (``random``, NumPy, torch CPU, CUDA) of every process in
  each checkpoint and puts them back (and the loader at its position) when training resumes.

With the data module's :class:`~mmsam.data.sampling.ResumableDataLoader` (shuffle order seeded per
epoch, augmentations seeded per sample, position in the epoch saved) a run killed at any moment and
resumed with ``--ckpt_path last`` ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from mmsam.errors import CheckpointError
from mmsam.fileio import atomic_write, clean_orphans, load_torch_file


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local checkpoint files written atomically and read with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        with atomic_write(Path(path)) as f:
            torch.save(checkpoint, f)

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None, weights_only: Optional[bool] = None) -> dict[str, Any]:
        ckpt = load_torch_file(path, map_location=map_location if map_location is not None else "cpu")
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise CheckpointError(f"{path}: not a Lightning checkpoint of mmsam (no 'state_dict')")
        return ckpt


def check_checkpoint(path: str | Path) -> None:
    """Cheap pre-flight check of a user's checkpoint (memory-mapped ``weights_only`` load):
    one ``CheckpointError`` naming the file when it needs pickle, is torn or is not a checkpoint."""
    try:
        ckpt = load_torch_file(path, mmap=True)
    except CheckpointError:
        raise
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint of mmsam (no 'state_dict')")


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is a true resume point.

    Args:
        last_every_n_train_steps: also rewrite ``last.ckpt`` every this many optimiser steps
            (0: only at the end of each training epoch). Mid-epoch saves resume mid-epoch.
        *args, **kwargs: those of ``ModelCheckpoint``; ``save_last`` defaults to ``True``.

    ``last.ckpt`` is written at the end of every training epoch (after that epoch's validation,
    if any) whatever the monitor says, replacing Lightning's rule that writes it only when a
    best-k file was written. Temporary files left by a killed save are removed at setup.
    """

    def __init__(self, *args: Any, last_every_n_train_steps: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("save_last", True)
        super().__init__(*args, **kwargs)
        if last_every_n_train_steps < 0:
            raise ValueError(f"last_every_n_train_steps must be >= 0, got {last_every_n_train_steps}")
        self.last_every_n_train_steps = last_every_n_train_steps
        self._last_step_of_last = -1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath:
            clean_orphans(self.dirpath)

    def _write_last(self, trainer: pl.Trainer) -> None:
        if not self.save_last or self._should_skip_state(trainer) or self._last_step_of_last == trainer.global_step:
            return
        before = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        # a last-only save must not stop a best-k save at this step (Lightning skips a step already saved)
        self._last_global_step_saved = before

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        if self._last_step_of_last == trainer.global_step and self.last_model_path and Path(self.last_model_path).exists():
            return  # already written at this step (e.g. by the best-k rule)
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_step_of_last = trainer.global_step

    @staticmethod
    def _should_skip_state(trainer: pl.Trainer) -> bool:
        from lightning.pytorch.trainer.states import TrainerFn

        return bool(trainer.fast_dev_run) or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_train_steps
        if n and trainer.global_step % n == 0 and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._write_last(trainer)  # the last batch of an epoch: the epoch-end save follows

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._write_last(trainer)


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"name": str(name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def collect_rng_states() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Inverse of :func:`collect_rng_states`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(Callback):
    """Saves the RNG states of every process with each checkpoint and, when training resumes,
    puts this process's back and the training loader at its saved position.

    Both happen at ``on_train_start``, after model, optimiser and loaders are built. The loader
    position is applied there too because Lightning builds the training loader before it restores
    the loop state when ``configure_optimizers`` asks for ``estimated_stepping_batches`` (as the
    task's warm-up schedule does), and then never hands the saved position to the loader.
    """

    def __init__(self) -> None:
        self._pending: Optional[dict[str, Any]] = None
        self._resumed = False

    @property
    def state_key(self) -> str:
        return "ResumeState"

    def state_dict(self) -> dict[str, Any]:
        local = collect_rng_states()
        states: list[Any] = [local]
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            states = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(states, local)
        return {"rng": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        ranks = state_dict.get("rng") or []
        rank = torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
        self._pending = ranks[rank] if rank < len(ranks) else None
        self._resumed = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None
        if not getattr(self, "_resumed", False):
            return
        self._resumed = False
        from lightning.fabric.utilities.data import _set_sampler_epoch

        loop = trainer.fit_loop
        loader = getattr(loop, "_combined_loader", None)
        if loader is None or getattr(loop, "_data_fetcher", None) is None:
            return
        if getattr(loop, "_combined_loader_states_to_load", None):
            loop._load_combined_loader_states()  # no-op unless resuming mid-epoch
        # the iterator Lightning made before the restore may already hold epoch 0's indices (worker
        # prefetch): start a fresh one at the resumed epoch / position (a loaded position wins)
        for dl in loader.flattened:
            _set_sampler_epoch(dl, loop.epoch_progress.current.processed)
        iter(loop._data_fetcher)
