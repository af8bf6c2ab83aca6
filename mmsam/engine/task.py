"""The LightningModule: losses, optimiser, schedule and metrics around any method."""
from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torchmetrics.wrappers import ClasswiseWrapper

from mmsam.backbones.sam_attention import ATTENTION_IMPLS, set_sam_attention
from mmsam.engine.compile import compile_encoder, compile_options
from mmsam.engine.evaluation import Evaluation, all_subsets
from mmsam.engine.schedule import WarmupPoly, scheduler_interval
from mmsam.engine.sliding_window import sliding_window_logits
from mmsam.engine.tables import format_binary, format_subset_table, format_table
from mmsam.errors import CheckpointError, ConfigError
from mmsam.fileio import compare_state_dicts
from mmsam.losses import build_loss
from mmsam.metrics import SegmentationScore, binary_scores, segmentation_scores

MethodFactory = Callable[[int, Sequence[str]], nn.Module]

__all__ = ["SegmentationTask", "Evaluation", "all_subsets", "subset_key"]


def subset_key(names: Sequence[str]) -> str:
    return "+".join(names)


class SegmentationTask(pl.LightningModule):
    """Trains and evaluates a segmentation method (``mmsam.methods``).

    Args:
        method: the method, given in YAML as ``class_path`` + ``init_args``; it is called with
            ``(num_classes, modalities)`` taken from the data module.
        num_classes, modalities, class_names: filled from the data module by the CLI.
        loss: ``"ohem"`` (OHEM cross-entropy, thresh ``ohem_thresh``; the papers' loss), ``"ce"``, or
            ``"none"`` when the method returns its whole loss under ``out["losses"]`` (Conv-LoRA SAM).
        aux_weight: weight of auxiliary-head losses a method returns under ``"aux"``.
        optimizer: any torch optimiser, in YAML ``class_path`` + ``init_args`` (Lightning's
            ``OptimizerCallable``), called with one group per ``param_groups()`` entry. Default: AdamW,
            lr 6e-4, weight decay 0.01 (MemorySAM / CMNeXt recipe). MFNet: ``torch.optim.SGD`` with
            lr 0.01, momentum 0.9, weight_decay 5e-4.
        lr_scheduler: any torch LR scheduler (Lightning's ``LRSchedulerCallable``). Default:
            :class:`~mmsam.engine.schedule.WarmupPoly` (warm-up then poly decay, stepped per
            iteration; its length comes from the trainer). MFNet: ``torch.optim.lr_scheduler.MultiStepLR``
            with ``milestones`` counting completed epochs: ``[24, 34, 44]`` with lr 0.01 gives 1e-2 for
            epochs 1–24, 1e-3 for 25–34, 1e-4 for 35–44, 1e-5 after, MFNet's effective schedule (its
            code steps ``[25, 35, 45]`` at the start of each epoch, one epoch earlier; official MFNet train.py / utils.py).
        lr_interval: ``"step"`` or ``"epoch"``: when the scheduler steps. Default: the scheduler's
            own ``interval`` attribute (``WarmupPoly``: per step), else per epoch.
        no_weight_decay_1d: no weight decay on 1-D parameters (biases, norm scales, λ and fusion
            weights), as the official MemorySAM and AutoGluon Conv-LoRA optimisers do.
        evaluation: how validate / test score (:class:`~mmsam.engine.evaluation.Evaluation`, YAML
            ``model.evaluation``): modality subsets, classes in the means, absent classes, binary
            scores, sliding windows.
        modality_dropout: training only: each modality of each sample is marked absent with this
            probability (at least one stays present), so fusion learns to cope with sensor failure.
        grad_checkpointing: activation checkpointing of the frozen encoder's blocks (the method's
            ``set_grad_checkpointing``): less training memory for about one extra encoder forward per step.
        compile: ``torch.compile`` the method when the Trainer sets it up (``configure_model``):
            ``true`` compiles each frozen encoder block in place (regional compilation), a mapping
            adds ``torch.compile`` options (``mode``, ``backend``, ``dynamic`` …) and ``scope``:
            ``"blocks"`` (default) or ``"method"`` (:func:`~mmsam.engine.compile.compile_encoder`).
        sam_attention: SAM ViT attention, ``"official"`` (the hand-written module, default) or
            ``"sdpa"`` (``scaled_dot_product_attention``, same weights and outputs;
            :mod:`mmsam.backbones.sam_attention`).

    Validate / test log ``{val,test}/{mIoU,OA,mAcc,mF1}`` (percent; ``@a+b`` per modality subset) as
    torchmetrics objects that Lightning computes, synchronises over processes and resets, and
    ``val/IoU/<class>`` through a ``ClasswiseWrapper`` (by ``ValidationImages``). Every process logs
    every metric at each epoch's end, also one that saw no batch, so all enter the same
    synchronisation. ``test_step`` returns the full-modality logits for callbacks (``mmsam report``).
    """

    def __init__(
        self,
        method: MethodFactory,
        *,
        num_classes: int = 0,
        modalities: list[str] | None = None,
        class_names: list[str] | None = None,
        ignore_index: int = 255,
        loss: Literal["ohem", "ce", "none"] = "ohem",
        ohem_thresh: float = 0.7,
        aux_weight: float = 0.4,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_interval: Literal["step", "epoch"] | None = None,
        no_weight_decay_1d: bool = False,
        evaluation: Evaluation | None = None,
        modality_dropout: float = 0.0,
        grad_checkpointing: bool = False,
        compile: bool | dict[str, Any] = False,
        sam_attention: Literal["official", "sdpa"] = "official",
    ) -> None:
        super().__init__()
        # modalities / class names come from the data module, whose hparams already hold them;
        # callables and the evaluation object are not plain values (checkpoints hold plain values only)
        self.save_hyperparameters(ignore=["method", "modalities", "class_names", "optimizer", "lr_scheduler", "evaluation"])
        ev = Evaluation(**evaluation) if isinstance(evaluation, dict) else (evaluation or Evaluation())
        self.hparams["evaluation"] = ev.as_dict()
        self.optimizer, self.lr_scheduler, self.evaluation = optimizer, lr_scheduler, ev
        modalities = list(modalities or [])
        self.compile_options = compile_options(compile)  # refused before a large backbone is built
        self.method = method(num_classes, modalities) if callable(method) and not isinstance(method, nn.Module) else method
        if grad_checkpointing is not False:  # the CLI refuses a non-bool itself; Python callers get the same line here
            if grad_checkpointing is not True:
                raise ConfigError(f"model.grad_checkpointing must be true or false, got {grad_checkpointing!r}")
            if not hasattr(self.method, "set_grad_checkpointing"):
                raise ConfigError(f"model.grad_checkpointing: {type(self.method).__name__} has no encoder blocks to checkpoint")
            self.method.set_grad_checkpointing(True)
            if self.compile_options is not None:
                raise ConfigError("model.compile cannot be combined with model.grad_checkpointing (torch.compile does not "
                                  "trace the checkpoint's layout-replaying context_fn); turn one of them off")
        use_sam_attention(self.method, sam_attention)
        self.num_classes = num_classes
        self.modalities = modalities or list(getattr(self.method, "modalities", []))
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.loss_fn = None if loss == "none" else build_loss(loss, ignore_index=ignore_index, ohem_thresh=ohem_thresh)
        # auxiliary heads keep a segmentation loss even when the method supplies its own main loss
        self.aux_loss_fn = self.loss_fn or build_loss("ce", ignore_index=ignore_index)
        if ev.binary_metrics and num_classes != 2:
            raise ConfigError(f"model.evaluation.binary_metrics needs a binary task (num_classes=2: background, foreground), got num_classes={num_classes}")
        check_optimisation(optimizer, lr_scheduler)
        if not 0.0 <= modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.mean_over = ev.class_ids(self.class_names)
        self.subsets = ev.subsets(self.modalities)
        opts = {"ignore_index": ignore_index, "absent_classes": ev.absent_classes, "mean_over": self.mean_over,
                "ignore_in_union": ev.ignore_in_union}
        self.metrics = nn.ModuleDict({
            f"{stage}_{i}": segmentation_scores(num_classes, prefix=f"{stage}/", postfix="" if i == 0 else f"@{subset_key(s)}", **opts)
            for stage in ("val", "test") for i, s in enumerate(self.subsets)
        })
        self.per_class_iou = ClasswiseWrapper(SegmentationScore(num_classes, score="IoU", **opts), labels=list(self.class_names), prefix="val/IoU/")
        # binary scores of the full-modality subset (validate / test); absent unless asked for
        self.binary_scores = None
        if ev.binary_metrics:
            chosen = None if ev.binary_metrics is True else ev.binary_metrics
            try:
                self.binary_scores = nn.ModuleDict({st: binary_scores(prefix=f"{st}/", ignore_index=ignore_index, scores=chosen) for st in ("val", "test")})
            except ValueError as e:
                raise ConfigError(f"model.evaluation.binary_metrics: {e}") from None

    def configure_model(self) -> None:
        """Compile here, not in ``__init__``: only a Trainer calls this hook, so a task built to export
        or predict outside one (``mmsam.deploy``) stays eager, and the device is the strategy's."""
        if self.compile_options is not None:
            device = self.trainer.strategy.root_device if self._trainer is not None else self.device
            compile_encoder(self.method, device=device, **self.compile_options)

    # ---- forward -----------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.method(batch)

    def eval_logits(self, batch: dict[str, Any], *, stride: int | None = None) -> torch.Tensor:
        """Evaluation logits: whole images, or sliding windows when ``evaluation.window`` is set
        (at ``stride``, default ``evaluation.stride``)."""
        ev = self.evaluation
        if ev.window is None:
            return self.method(batch)["logits"]
        return sliding_window_logits(
            self.method, batch, window=ev.window, stride=stride or ev.test_stride, num_classes=self.num_classes,
            window_batch=ev.window_batch, ignore_index=self.hparams.ignore_index, edges=ev.window_edges,
        )

    # ---- steps -------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.hparams.modality_dropout > 0:
            batch = drop_modalities(batch, self.hparams.modality_dropout)
        out = self.method(batch)
        label = batch["label"]
        loss = out["logits"].new_zeros(())
        if self.loss_fn is not None:
            loss = self.loss_fn(out["logits"], label)
            self.log("train/loss_main", loss, batch_size=label.shape[0])
        for name, aux in (out.get("aux") or {}).items():
            aux_loss = self.aux_loss_fn(aux, label)
            self.log(f"train/loss_aux_{name}", aux_loss, batch_size=label.shape[0])
            loss = loss + self.hparams.aux_weight * aux_loss
        for name, extra in (out.get("losses") or {}).items():
            self.log(f"train/loss_{name}", extra, batch_size=label.shape[0])
            loss = loss + extra
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {self.global_step}; lower the lr or check the inputs")
        self.log("train/loss", loss, prog_bar=True, batch_size=label.shape[0])
        return loss

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        label = batch["label"]
        full: torch.Tensor | None = None
        for i, subset in enumerate(self._active_subsets()):
            logits = self.eval_logits(_restrict(batch, subset), stride=self.evaluation.stride_for(stage))
            pred = logits.argmax(1)
            self.metrics[f"{stage}_{i}"].update(pred, label)
            if i == 0:
                full = logits
                if stage == "val":
                    self.per_class_iou.update(pred, label)
                if self.binary_scores is not None:
                    self.binary_scores[stage].update(logits, label)
        return {"logits": full}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step("test", batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        logits = self.eval_logits(batch)
        return {"pred": logits.argmax(1).to(torch.uint8).cpu(), "id": batch["meta"]["id"]}

    def on_validation_epoch_start(self) -> None:
        self.per_class_iou.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    # ---- optimisation ------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        groups = param_groups_with_decay(self.method.param_groups(), no_decay_1d=hp.no_weight_decay_1d)
        opt = self.optimizer(groups) if self.optimizer is not None else torch.optim.AdamW(groups, lr=6e-4, weight_decay=0.01)
        sched = self.lr_scheduler(opt) if self.lr_scheduler is not None else WarmupPoly(opt)
        if isinstance(sched, WarmupPoly):
            epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else None
            sched.set_training_length(int(self.trainer.estimated_stepping_batches), epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": scheduler_interval(sched, hp.lr_interval)}}

    # ---- checkpoints -------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another model with one message instead of torch's key dump."""
        state = checkpoint.get("state_dict")
        if state is None:
            raise CheckpointError("the checkpoint has no 'state_dict': it is not a Lightning checkpoint of mmsam")
        diff = compare_state_dicts(self.state_dict(), state)
        if diff:
            raise CheckpointError(
                "the checkpoint does not fit this model (was it trained with another method, backbone, "
                f"class count or modalities?): {_few(sorted(diff.missing), 'missing')}{_few(sorted(diff.unexpected), 'unexpected')}{_few(sorted(diff.shapes), 'shape mismatches')}".rstrip("; ")
            )

    # ---- helpers -----------------------------------------------------------------------
    def _active_subsets(self) -> list[list[str]]:
        """All subsets in validate/test; the full set only while fitting (model selection)."""
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        return self.subsets[:1] if fitting else self.subsets

    def _log_epoch(self, stage: str) -> None:
        """Log this stage's metric objects (every process, so all enter their synchronisation;
        Lightning computes and resets them); print the tables in validate / test."""
        printing = not self.trainer.sanity_checking and self.trainer.state.fn != "fit"
        rows = []
        for i, subset in enumerate(self._active_subsets()):
            scores = self.metrics[f"{stage}_{i}"]
            for name, metric in scores.items(keep_base=False, copy_state=False):
                self.log(name, metric, prog_bar=(i == 0 and name == f"{stage}/mIoU"))
            if printing:
                rows.append((subset, self.epoch_scores(stage, i)))
        binary = self.binary_scores[stage] if self.binary_scores is not None else None
        if binary is not None:
            for name, metric in binary.items(keep_base=False, copy_state=False):
                self.log(name, metric)
        if printing:
            _print(format_table(stage, rows[0][0], rows[0][1], self.class_names, mean_over=self.mean_over))
            if binary is not None:
                _print(format_binary(next(iter(binary.values(copy_state=False))).synced_scores()))
            if len(rows) > 1:
                _print(format_subset_table(stage, rows, self.modalities))

    def epoch_scores(self, stage: str, index: int = 0) -> dict[str, torch.Tensor]:
        """Every score of subset ``index`` of ``stage`` so far (fractions, per class too, plus the
        ``confmat``), over all processes: a collective, every process must call it."""
        return next(iter(self.metrics[f"{stage}_{index}"].values(copy_state=False))).synced_scores()


@rank_zero_only
def _print(text: str) -> None:
    print(text, flush=True)


def use_sam_attention(method: nn.Module, impl: str) -> int:
    """Switch the method's SAM ViT attention to ``impl`` (``model.sam_attention``); returns the modules switched."""
    if impl not in ATTENTION_IMPLS:
        raise ConfigError(f"model.sam_attention must be one of official, sdpa, got {impl!r}")
    n = set_sam_attention(method, impl)  # type: ignore[arg-type]
    if impl == "sdpa" and n == 0:
        raise ConfigError("model.sam_attention: sdpa replaces SAM ViT attention and this method has none (SAM 2's Hiera uses SDPA already)")
    return n


def check_optimisation(optimizer: OptimizerCallable | None, lr_scheduler: LRSchedulerCallable | None) -> None:
    """Build the optimiser and the scheduler once on a stand-in parameter, so that a bad value
    (``lr: -1``, a scheduler argument the class does not take) is one line naming the key, before training."""
    probe = [nn.Parameter(torch.zeros(1))]
    try:
        opt = optimizer(probe) if optimizer is not None else torch.optim.AdamW(probe)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.optimizer: {e}") from None
    try:
        if lr_scheduler is not None:
            lr_scheduler(opt)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.lr_scheduler: {e}") from None


def param_groups_with_decay(groups: dict[str, list[nn.Parameter]], *, no_decay_1d: bool = False) -> list[dict[str, Any]]:
    """Optimiser groups from a method's ``param_groups()``; with ``no_decay_1d`` each group is split
    into its matrices (the optimiser's weight decay) and its 1-D tensors (``weight_decay=0``)."""
    out: list[dict[str, Any]] = []
    for name, ps in groups.items():
        if not no_decay_1d:
            if ps:
                out.append({"params": ps, "name": name})
            continue
        decay = [p for p in ps if p.dim() > 1]
        flat = [p for p in ps if p.dim() <= 1]
        if decay:
            out.append({"params": decay, "name": name})
        if flat:
            out.append({"params": flat, "name": f"{name}_no_decay", "weight_decay": 0.0})
    return out


def _few(items: list[str], what: str, n: int = 8) -> str:
    if not items:
        return ""
    more = f" … and {len(items) - n} more" if len(items) > n else ""
    return f"{len(items)} {what} key(s) [{', '.join(items[:n])}{more}]; "


def drop_modalities(batch: dict[str, Any], p: float) -> dict[str, Any]:
    """Mark each present modality of each sample absent with probability ``p``; one always stays."""
    names = list(batch["modalities"])
    b = batch["label"].shape[0]
    device = batch["label"].device
    present = torch.stack([batch.get("present", {}).get(n, torch.ones(b, dtype=torch.bool, device=device)).to(device).bool() for n in names])
    keep = present & (torch.rand(present.shape, device=device) >= p)
    empty = ~keep.any(0)
    if bool(empty.any()):  # re-admit one random originally-present modality where all were dropped
        choice = torch.multinomial(present[:, empty].T.float() + 1e-6, 1).squeeze(1)
        keep[choice, empty.nonzero().squeeze(1)] = True
    return {**batch, "present": {n: keep[i] for i, n in enumerate(names)}}


def _restrict(batch: dict[str, Any], subset: Sequence[str]) -> dict[str, Any]:
    """The batch as if only ``subset`` of its modalities had been captured."""
    if set(subset) >= set(batch["modalities"]):
        return batch
    keep = [m for m in batch["modalities"] if m in subset]
    return {
        **batch,
        "modalities": {m: batch["modalities"][m] for m in keep},
        "present": {m: batch["present"][m] for m in keep if m in batch.get("present", {})},
    }


