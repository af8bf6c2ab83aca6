"""The LightningModule: losses, optimiser, schedule and metrics around any method."""
from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import lightning.pytorch as pl
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from mmsam.engine.schedule import WarmupPoly, scheduler_interval
from mmsam.engine.sliding_window import check_window, sliding_window_logits
from mmsam.errors import CheckpointError, ConfigError
from mmsam.losses import build_loss
from mmsam.metrics import BinarySegmentationMetrics, SegmentationMetrics

MethodFactory = Callable[[int, Sequence[str]], nn.Module]


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
            code steps ``[25, 35, 45]`` at the start of each epoch, one epoch earlier; mfnet.md §3).
        lr_interval: ``"step"`` or ``"epoch"``: when the scheduler steps. Default: the scheduler's
            own ``interval`` attribute (``WarmupPoly``: per step), else per epoch.
        no_weight_decay_1d: no weight decay on 1-D parameters (biases, norm scales, λ and fusion
            weights), as the official MemorySAM and AutoGluon Conv-LoRA optimisers do.
        absent_classes: ``"zero"`` (reference protocol) or ``"skip"``; see ``SegmentationMetrics``.
        eval_classes: class names averaged in mIoU / mF1 / mAcc (default all); OA stays over all
            classes. ISPRS protocol: the five classes without ``clutter`` (``mfnet.md`` §4). The
            printed table marks the classes left out.
        eval_window: sliding-window evaluation of whole tiles of any size (validate, test with every
            modality subset, predict): square windows of this many pixels, logits summed over
            overlaps and divided by their count. Set it to the model's input size with the data's
            ``eval_size: null`` (native tiles). MFNet: 256 (mfnet.md §4). Default: whole images.
        eval_stride: pixels between windows (default ``eval_window // 2``; at most the window); the
            last window of each row / column is aligned to the tile's edge. MFNet: 32.
        eval_window_batch: window crops per forward pass, the memory bound whatever the tile size.
        eval_window_edges: ``"unique"`` (default): each distinct window once, logits averaged over
            overlaps. ``"repeat"``: MFNet's official test loop (``train.py`` / ``utils.sliding_window``
            of sstary/SSRS): starts every ``stride`` up to the tile size, overflowing ones snapped to
            the edge, so edge windows count once per snapped start; logits summed. The MFNet
            recipes use it. Both give the same argmax where no edge window repeats.
        val_stride: stride of the validation loop (per-epoch validation in fit, ``mmsam validate``),
            default ``eval_stride``; test and predict keep ``eval_stride``. MFNet validates Potsdam
            with 128 and tests with 32 (mfnet.md §4).
        modality_dropout: training only: each modality of each sample is marked absent with this
            probability (at least one stays present), so fusion learns to cope with sensor failure.
        binary_metrics: binary tasks only (``num_classes`` 2: background 0, foreground 1): validate
            and test also score the full-modality subset with ``BinarySegmentationMetrics``
            (S-measure, mean E-measure, weighted F-measure, MAE, BER; per image averaged, on the
            foreground probability of the same evaluation logits, sliding windows included) and log
            ``{val,test}/Smeasure``, ``/Emeasure``, ``/wFmeasure``, ``/MAE`` (fractions) and ``/BER``
            (percent), printed under the per-class table. Monitor ``val/Smeasure`` (max) or
            ``val/BER`` (min) for the official Conv-LoRA model selection on polyp / camouflage /
            SBU shadow (convlora.md §3). Costs CPU time per image (pysodmetrics). Default off.
            It also logs ``{val,test}/Binary_IoU`` (foreground IoU per image, averaged over images:
            the official ``Binary_IoU`` of leaf / road / ISIC). A list of score names (e.g.
            ``[Binary_IoU]``) computes and logs only those.
        ignore_in_union: predictions on ignored pixels count in the IoU union of the predicted class
            (AutoGluon ``Multiclass_IoU`` protocol; see ``SegmentationMetrics``). Default off.
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
        absent_classes: Literal["zero", "skip"] = "zero",
        eval_classes: list[str] | None = None,
        eval_modality_subsets: list[list[str]] | Literal["all"] | None = None,
        eval_window: int | None = None,
        eval_stride: int | None = None,
        eval_window_batch: int = 4,
        eval_window_edges: Literal["unique", "repeat"] = "unique",
        val_stride: int | None = None,
        modality_dropout: float = 0.0,
        binary_metrics: bool | list[str] = False,
        ignore_in_union: bool = False,
    ) -> None:
        super().__init__()
        # modalities / class names come from the data module, whose hparams already hold them
        self.save_hyperparameters(ignore=["method", "modalities", "class_names", "optimizer", "lr_scheduler"])
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        modalities = list(modalities or [])
        self.method = method(num_classes, modalities) if callable(method) and not isinstance(method, nn.Module) else method
        self.num_classes = num_classes
        self.modalities = modalities or list(getattr(self.method, "modalities", []))
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        self.loss_fn = None if loss == "none" else build_loss(loss, ignore_index=ignore_index, ohem_thresh=ohem_thresh)
        # auxiliary heads keep a segmentation loss even when the method supplies its own main loss
        self.aux_loss_fn = self.loss_fn or build_loss("ce", ignore_index=ignore_index)
        if binary_metrics and num_classes != 2:
            raise ConfigError(f"binary_metrics needs a binary task (num_classes=2: background, foreground), got num_classes={num_classes}")
        check_optimisation(optimizer, lr_scheduler)
        if not 0.0 <= modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        if eval_window is None and eval_stride is not None:
            raise ConfigError(f"eval_stride={eval_stride} is set but eval_window is not: set the window too")
        if eval_window is None and val_stride is not None:
            raise ConfigError(f"val_stride={val_stride} is set but eval_window is not: set the window too")
        if eval_window_edges not in ("unique", "repeat"):
            raise ConfigError(f"eval_window_edges must be 'unique' or 'repeat', got {eval_window_edges!r}")
        self.eval_stride = None if eval_window is None else check_window(eval_window, eval_stride, eval_window_batch, prefix="eval_")
        self.val_stride = self.eval_stride
        if val_stride is not None:
            if not 1 <= val_stride <= eval_window:
                raise ConfigError(f"val_stride must be in [1, eval_window={eval_window}], got {val_stride}")
            self.val_stride = val_stride
        self.mean_over = None
        if eval_classes is not None:
            unknown = [c for c in eval_classes if c not in self.class_names]
            if unknown or not eval_classes:
                raise ConfigError(f"eval_classes {unknown or eval_classes} are not among the data's class names {list(self.class_names)}")
            self.mean_over = sorted(self.class_names.index(c) for c in set(eval_classes))
        if eval_modality_subsets == "all":
            eval_modality_subsets = all_subsets(self.modalities)
        subsets = [list(self.modalities)] + [list(s) for s in (eval_modality_subsets or [])]
        for s in subsets[1:]:
            bad = sorted(set(s) - set(self.modalities))
            if bad or not s:
                raise ConfigError(f"eval_modality_subsets entry {s} must be a non-empty subset of {self.modalities}")
        self.subsets = [s for i, s in enumerate(subsets) if s not in subsets[:i]]
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{i}": SegmentationMetrics(
                    num_classes, ignore_index=ignore_index, absent_classes=absent_classes, mean_over=self.mean_over, ignore_in_union=ignore_in_union
                )
                for stage in ("val", "test")
                for i in range(len(self.subsets))
            }
        )
        # binary scores of the full-modality subset (validate / test); absent unless asked for
        self.binary_scores = (
            nn.ModuleDict(
                {
                    stage: BinarySegmentationMetrics(ignore_index=ignore_index, scores=None if binary_metrics is True else binary_metrics)
                    for stage in ("val", "test")
                }
            )
            if binary_metrics
            else None
        )

    # ---- forward -----------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self.method(batch)

    def eval_logits(self, batch: dict[str, Any], *, stride: int | None = None) -> torch.Tensor:
        """Evaluation logits: whole images, or sliding windows when ``eval_window`` is set
        (at ``stride``, default ``eval_stride``)."""
        if self.hparams.eval_window is None:
            return self.method(batch)["logits"]
        return sliding_window_logits(
            self.method, batch, window=self.hparams.eval_window, stride=stride or self.eval_stride, num_classes=self.num_classes,
            window_batch=self.hparams.eval_window_batch, ignore_index=self.hparams.ignore_index,
            edges=self.hparams.eval_window_edges,
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

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        for i, subset in enumerate(self._active_subsets()):
            logits = self.eval_logits(_restrict(batch, subset), stride=self.val_stride if stage == "val" else None)
            self.metrics[f"{stage}_{i}"].update(logits, batch["label"])
            if i == 0 and self.binary_scores is not None:
                self.binary_scores[stage].update(logits, batch["label"])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        logits = self.eval_logits(batch)
        return {"pred": logits.argmax(1).to(torch.uint8).cpu(), "id": batch["meta"]["id"]}

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
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own.keys() & state.keys() if state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise CheckpointError(
                "the checkpoint does not fit this model (was it trained with another method, backbone, "
                f"class count or modalities?): {_few(missing, 'missing')}{_few(unexpected, 'unexpected')}{_few(sorted(shapes), 'shape mismatches')}".rstrip("; ")
            )

    # ---- helpers -----------------------------------------------------------------------
    def _active_subsets(self) -> list[list[str]]:
        """All subsets in validate/test; the full set only while fitting (model selection)."""
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        return self.subsets[:1] if fitting else self.subsets

    def _log_epoch(self, stage: str) -> None:
        rows = []
        for i, subset in enumerate(self._active_subsets()):
            metric = self.metrics[f"{stage}_{i}"]
            # decided on the total over processes: a process that saw no batch (fewer samples
            # than processes) must still enter compute's all-reduce with the others
            seen = self.trainer.strategy.reduce(metric.confmat.sum().float(), reduce_op="sum")
            if float(seen) == 0 and not self.trainer.sanity_checking:
                metric.reset()
                continue
            scores = metric.compute()
            metric.reset()
            suffix = "" if i == 0 else f"@{subset_key(subset)}"
            for key in ("mIoU", "OA", "mAcc", "mF1"):
                self.log(f"{stage}/{key}{suffix}", scores[key] * 100, prog_bar=(key == "mIoU" and i == 0), sync_dist=False)
            rows.append((subset, scores))
            binary = self._log_binary(stage) if i == 0 else None
            if i == 0 and not self.trainer.sanity_checking and self.trainer.state.fn != "fit":  # validate/test only
                _print(format_table(stage, subset, scores, self.class_names, mean_over=self.mean_over))
                if binary is not None:
                    _print(format_binary(binary))
        if len(rows) > 1 and not self.trainer.sanity_checking and self.trainer.state.fn != "fit":
            _print(format_subset_table(stage, rows, self.modalities))

    def _log_binary(self, stage: str) -> dict[str, torch.Tensor] | None:
        """Log (and reset) the binary scores of ``stage``; ``None`` when off or nothing was scored."""
        if self.binary_scores is None:
            return None
        metric = self.binary_scores[stage]
        seen = self.trainer.strategy.reduce(metric.count.float().sum(), reduce_op="sum")
        if float(seen) == 0 and not self.trainer.sanity_checking:
            metric.reset()
            return None
        scores = metric.compute()
        metric.reset()
        for key, value in scores.items():
            self.log(f"{stage}/{key}", value, sync_dist=False)
        return scores


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


@rank_zero_only
def _print(text: str) -> None:
    print(text, flush=True)


def _few(items: list[str], what: str, n: int = 8) -> str:
    if not items:
        return ""
    more = f" … and {len(items) - n} more" if len(items) > n else ""
    return f"{len(items)} {what} key(s) [{', '.join(items[:n])}{more}]; "


def all_subsets(modalities: Sequence[str]) -> list[list[str]]:
    """Every non-empty subset, largest first, each in the trained order."""
    from itertools import combinations

    return [list(c) for k in range(len(modalities), 0, -1) for c in combinations(modalities, k)]


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


def format_subset_table(stage: str, rows: list[tuple[Sequence[str], dict[str, torch.Tensor]]], modalities: Sequence[str]) -> str:
    """The missing-modality table: one row per subset of modalities present, mIoU and OA."""
    width = max(len(m) for m in modalities)
    head = "  ".join(f"{m:^{width}}" for m in modalities)
    lines = [f"\n[{stage}] modalities present (x) -> scores", f"{head}  {'mIoU':>6}  {'OA':>6}  {'mF1':>6}"]
    for subset, scores in rows:
        marks = "  ".join(f"{'x' if m in subset else '-':^{width}}" for m in modalities)
        lines.append(f"{marks}  {100 * float(scores['mIoU']):6.2f}  {100 * float(scores['OA']):6.2f}  {100 * float(scores['mF1']):6.2f}")
    return "\n".join(lines)


def format_binary(scores: dict[str, torch.Tensor]) -> str:
    """One line of binary scores (``BinarySegmentationMetrics``): S, E, wF, MAE and Binary_IoU as fractions,
    BER in percent; the scores computed only."""
    names = {"Smeasure": "S-measure", "Emeasure": "mean E-measure", "wFmeasure": "wF-measure", "MAE": "MAE", "BER": "BER", "Binary_IoU": "Binary_IoU"}
    return "   ".join(f"{names[k]} {float(v):.2f}" if k == "BER" else f"{names[k]} {float(v):.4f}" for k, v in scores.items() if k in names)


def format_table(
    stage: str, subset: Sequence[str], scores: dict[str, torch.Tensor], class_names: Sequence[str], *, mean_over: Sequence[int] | None = None
) -> str:
    """A per-class IoU / F1 / Acc table followed by the summary scores, in percent.

    Classes outside ``mean_over`` (``eval_classes``) are marked: they count in OA, not in the means.
    """
    width = max(12, *(len(n) for n in class_names))
    lines = [f"\n[{stage}] modalities: {', '.join(subset)}", f"{'class':<{width}}  {'IoU':>6}  {'F1':>6}  {'Acc':>6}"]
    for i, (name, iou, f1, acc) in enumerate(zip(class_names, scores["IoU"], scores["F1"], scores["Acc"])):
        fmt = lambda v: "   n/a" if torch.isnan(v) else f"{100 * float(v):6.2f}"  # noqa: E731
        mark = "  (not in means)" if mean_over is not None and i not in mean_over else ""
        lines.append(f"{name:<{width}}  {fmt(iou)}  {fmt(f1)}  {fmt(acc)}{mark}")
    lines.append(
        f"{'mIoU':<{width}}  {100 * float(scores['mIoU']):6.2f}   OA {100 * float(scores['OA']):.2f}"
        f"   mAcc {100 * float(scores['mAcc']):.2f}   mF1 {100 * float(scores['mF1']):.2f}"
    )
    if mean_over is not None:
        lines.append(f"(mIoU / mAcc / mF1 over {len(mean_over)} of {len(class_names)} classes; OA over all)")
    return "\n".join(lines)
