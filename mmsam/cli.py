"""``mmsam`` command line: LightningCLI for fit/validate/test/predict plus ``data`` and ``info``.

    mmsam fit --config configs/demo/sam_lora_synthetic.yaml
    mmsam test --config ... --ckpt_path runs/demo/checkpoints/last.ckpt
    mmsam info --config ...            # trainable / frozen parameters per group
    mmsam report --config ... --ckpt_path C --output DIR   # report.md + figures for one checkpoint
    mmsam data synth --dataset deliver --root data/synthetic_deliver
    mmsam data check --dataset deliver --root data/DELIVER
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from mmsam.errors import CheckpointError, ConfigError, MMSamError


def _loggers(root: Path) -> list[Any]:
    """CSV always; TensorBoard too when it is installed."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = [CSVLogger(save_dir=str(root), name="logs")]
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None:
        loggers.append(TensorBoardLogger(save_dir=str(root), name="tensorboard"))
    return loggers


def _make_cli_class() -> type:
    from jsonargparse import set_parsing_settings
    from lightning.fabric.plugins import CheckpointIO
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from mmsam.adapters import LoRAConfig

    # a method's `lora:` takes plain LoRA keys, or `class_path` + `init_args` of any LoRA-family
    # config (e.g. Conv-LoRA) — adapters compose with methods by config alone
    set_parsing_settings(subclasses_enabled=[LoRAConfig])

    from mmsam.data.datamodule import MultiModalDataModule
    from mmsam.engine import ColorMaskWriter, SegmentationTask
    from mmsam.engine.checkpointing import AtomicCheckpointIO, ResumableCheckpoint, ResumeState, check_checkpoint

    class SegmentationCLI(LightningCLI):
        """LightningCLI with the data module's facts linked into the task."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(SegmentationTask, MultiModalDataModule, *args, **kwargs)

        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.add_lightning_class_args(ColorMaskWriter, "predict_writer")
            parser.add_argument("--test_after_fit", type=bool, default=True, help="run the test split with the best checkpoint after fit")
            parser.add_argument("--last_every_n_train_steps", type=int, default=0,
                                help="also rewrite last.ckpt every N optimiser steps (default checkpoint callback; "
                                     "0: only at the end of each epoch)")
            for src, dst in (
                ("data.num_classes", "model.num_classes"),
                ("data.modalities", "model.modalities"),
                ("data.class_names", "model.class_names"),
                ("data.ignore_index", "model.ignore_index"),
                ("data.palette", "predict_writer.palette"),
            ):
                parser.link_arguments(src, dst, apply_on="instantiate")

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            cfg = self._get(self.config_init, "trainer", default={})
            root = Path(cfg.get("default_root_dir") or os.getcwd())
            if cfg.get("logger") in (None, True):
                kwargs["logger"] = _loggers(root)
            callbacks = list(cfg.get("callbacks") or [])
            for c in callbacks:  # a config's own checkpoint callback without dirpath goes where the default one would
                if isinstance(c, ModelCheckpoint) and c.dirpath is None:
                    c.dirpath = str(root / "checkpoints")
            if cfg.get("enable_checkpointing", True) is not False and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                callbacks.append(
                    ResumableCheckpoint(
                        dirpath=str(root / "checkpoints"),
                        filename="epoch{epoch:03d}-miou{val/mIoU:.2f}",
                        auto_insert_metric_name=False,
                        monitor="val/mIoU",
                        mode="max",
                        save_last=True,
                        last_every_n_train_steps=int(self._get(self.config_init, "last_every_n_train_steps", default=0) or 0),
                    )
                )
            if not any(isinstance(c, ResumeState) for c in callbacks):  # RNG states of every process in each checkpoint
                callbacks.append(ResumeState())
            kwargs["callbacks"] = callbacks
            # atomic local saves, weights_only loads: unless the config brings its own checkpoint IO
            plugins = cfg.get("plugins")
            plugins = list(plugins) if isinstance(plugins, (list, tuple)) else ([] if plugins is None else [plugins])
            if not any(isinstance(p, CheckpointIO) for p in plugins):
                kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
            return super().instantiate_trainer(**kwargs)

        def _parse_ckpt_path(self) -> None:
            """Check ``--ckpt_path`` (pickle-free, not torn, a checkpoint) before Lightning reads its hparams."""
            sub = self.config.get("subcommand")
            ckpt = self.config[sub].get("ckpt_path") if sub else None
            if ckpt and Path(ckpt).is_file():
                check_checkpoint(ckpt)
            super()._parse_ckpt_path()

        def _resolve_ckpt(self, ckpt: str) -> Path | None:
            """The file ``--ckpt_path`` names (``last``: the newest ``last*.ckpt``), or None."""
            if ckpt not in ("last", "best", "hpc", "registry"):
                return Path(ckpt)
            if ckpt != "last":
                return None
            found = [Path(p) for cb in self.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)
                     for p in cb._find_last_checkpoints(self.trainer)]
            return max(found, key=lambda p: p.stat().st_mtime) if found else None

        def _run_subcommand(self, subcommand: str) -> None:
            ckpt = self._get(self.config, "ckpt_path", default=None)
            if ckpt and ckpt not in ("last", "best", "hpc", "registry") and not Path(ckpt).is_file():
                raise CheckpointError(f"{ckpt}: checkpoint file not found")
            path = self._resolve_ckpt(str(ckpt)) if ckpt else None
            if path is not None:
                check_checkpoint(path)  # before any training: a pickle-bearing or torn file is one line
            try:
                super()._run_subcommand(subcommand)
            except CheckpointError as e:
                named = ckpt and (str(ckpt) in str(e) or (path is not None and str(path) in str(e)))
                raise CheckpointError(str(e) if not ckpt or named else f"{ckpt}: {e}") from None

        def after_fit(self) -> None:
            if not self._get(self.config, "test_after_fit", default=True) or self.trainer.interrupted:
                return
            ckpt = "best" if self.trainer.checkpoint_callback and self.trainer.checkpoint_callback.best_model_path else None
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt)

    return SegmentationCLI


def lightning_main(args: list[str] | None = None, **kwargs: Any) -> Any:
    """Run the LightningCLI (``fit``/``validate``/``test``/``predict``)."""
    return _make_cli_class()(args=args, **kwargs)


def count_parameters(model: Any) -> dict[str, int]:
    """Trainable parameters per group, their total, and the frozen total (exact integers)."""
    groups = model.method.param_groups()
    seen: set[int] = set()
    counts: dict[str, int] = {}
    for name, params in groups.items():
        counts[name] = sum(p.numel() for p in params if id(p) not in seen and not seen.add(id(p)))
    counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts["frozen"] = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    grouped = sum(v for k, v in counts.items() if k not in ("trainable", "frozen"))
    if grouped != counts["trainable"]:
        raise RuntimeError(f"param_groups() covers {grouped} trainable parameters but the model has {counts['trainable']}")
    return counts


def _info(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmsam info", description="Build the model of a config and print its parameters per group.")
    p.add_argument("--config", required=True, help="the YAML config used for fit")
    ns, rest = p.parse_known_args(argv)
    import logging

    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import; override after)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no trainer chatter: only the model matters here
    cli = lightning_main(["--config", ns.config, *rest], run=False)
    counts = count_parameters(cli.model)
    method = cli.model.method
    backbone = getattr(getattr(method, "backbone", None), "name", "?")
    share = 100 * counts["trainable"] / max(1, counts["trainable"] + counts["frozen"])
    print(f"method: {type(method).__name__}   backbone: {backbone}   modalities: {', '.join(method.modalities)}   "
          f"classes: {method.num_classes}   trainable: {share:.2f}%")
    width = max(len(k) for k in counts)
    for key, value in counts.items():
        print(f"{key:<{width}}  {value:>13,d}  ({value})")
    return 0


def _report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmsam report", description="Evaluate a checkpoint on the test split and write report.md plus PNG figures.")
    p.add_argument("--config", required=True, help="the YAML config used for fit")
    p.add_argument("--ckpt_path", required=True, help="the Lightning checkpoint to evaluate")
    p.add_argument("--output", default=None, help="output folder (default: <checkpoint folder>/../report)")
    p.add_argument("--examples", type=int, default=4, help="test samples drawn beside their ground truth")
    ns, rest = p.parse_known_args(argv)
    ckpt = Path(ns.ckpt_path)
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")
    from mmsam.engine.checkpointing import check_checkpoint

    check_checkpoint(ckpt)  # pickle-free, before the model is built
    import logging

    import lightning.pytorch  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mmsam.engine.report import load_checkpoint_weights, write_report

    cli = lightning_main(["--config", ns.config, *rest], run=False)
    load_checkpoint_weights(cli.model, ckpt)
    trainer = cli.trainer
    out = Path(ns.output) if ns.output else ckpt.resolve().parent.parent / "report"
    result = write_report(
        cli.model, cli.datamodule, out, examples=ns.examples,
        device=trainer.strategy.root_device, autocast=trainer.precision_plugin.forward_context,
        title=f"checkpoint `{ckpt}`, config `{ns.config}`",
    )
    full = result["full"]
    print(f"mIoU {100 * full['mIoU']:.2f}   OA {100 * full['OA']:.2f}   mF1 {100 * full['mF1']:.2f}   "
          f"({result['num_samples']} test samples)")
    print(f"wrote {out / 'report.md'} and {len(result['files']) - 1} figure(s)")
    return 0


#: ``mmsam data synth --kind`` -> the data set layout its scenes are written in.
_SYNTH_KINDS = {"aerial": "vaihingen"}


def _data(argv: list[str]) -> int:
    from mmsam.data.datasets import list_datasets

    p = argparse.ArgumentParser(prog="mmsam data", description="Data-set utilities.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write a synthetic data set in a benchmark's own layout")
    s.add_argument("--dataset", default=None, help=f"layout to write: {', '.join(list_datasets())} (default deliver)")
    s.add_argument("--kind", choices=sorted(_SYNTH_KINDS), default=None,
                   help="kind of scenes, naming the layout: " + ", ".join(f"{k} -> {v}" for k, v in sorted(_SYNTH_KINDS.items())))
    s.add_argument("--root", default=None, help="output folder (default data/synthetic_<dataset>)")
    s.add_argument("--num-train", type=int, default=None, help="training samples (default: the generator's, 160 for deliver)")
    s.add_argument("--num-val", type=int, default=None)
    s.add_argument("--num-test", type=int, default=None)
    s.add_argument("--size", type=int, default=None, help="image side (height) in pixels (default: the generator's)")
    s.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check", help="verify a download: counts, unreadable or mismatched files, class histogram")
    c.add_argument("--dataset", required=True, help=f"one of {', '.join(list_datasets())}")
    c.add_argument("--root", required=True)
    c.add_argument("--splits", nargs="*", default=None)
    c.add_argument("--modalities", nargs="*", default=None)
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    ns = p.parse_args(argv)
    if ns.cmd == "check":
        import json

        from mmsam.data.check import check_dataset

        report = check_dataset(ns.dataset, ns.root, splits=ns.splits, modalities=ns.modalities, progress=True)
        print(json.dumps(report.to_dict(), indent=2) if ns.json else report.format())
        return report.exit_code  # 0 clean, 1 problems listed, 2 no sample found
    from mmsam.data.datasets import get_dataset_entry

    if ns.kind is not None and ns.dataset not in (None, _SYNTH_KINDS[ns.kind]):
        raise ConfigError(f"--kind {ns.kind} writes the {_SYNTH_KINDS[ns.kind]} layout; it cannot be combined with --dataset {ns.dataset}")
    dataset = _SYNTH_KINDS[ns.kind] if ns.kind is not None else ns.dataset or "deliver"
    entry = get_dataset_entry(dataset)
    if entry.generator is None:
        raise ConfigError(f"no synthetic generator for {dataset!r}")
    root = ns.root or f"data/synthetic_{dataset}"
    given = {"num_train": ns.num_train, "num_val": ns.num_val, "num_test": ns.num_test, "size": ns.size}
    summary = entry.generator(root, seed=ns.seed, **{k: v for k, v in given.items() if v is not None})
    print(f"wrote the synthetic {dataset} data set to {root}: {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "data":
            return _data(args[1:])
        if args and args[0] == "info":
            return _info(args[1:])
        if args and args[0] == "report":
            return _report(args[1:])
        lightning_main(argv)
        return 0
    except MMSamError as e:
        msg = str(e).strip()
        if "Original Traceback" in msg:  # raised in a DataLoader worker: keep the error's own line
            msg = msg.splitlines()[-1].split(": ", 1)[-1]
        print(f"mmsam: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
