"""``mmsam`` command line: LightningCLI for fit/validate/test/predict plus ``data`` and ``info``.

    mmsam fit --config configs/demo/sam_lora_synthetic.yaml
    mmsam test --config ... --ckpt_path runs/demo/checkpoints/last.ckpt
    mmsam info --config ...            # trainable / frozen parameters per group
    mmsam report --config ... --ckpt_path C --output DIR   # report.md + figures for one checkpoint
    mmsam export --config ... --ckpt_path C --output model/  # a model folder to share and deploy
    mmsam predict --model model/ --input DIR --output OUT    # predict a folder of new captures
    mmsam import --from convlora|memorysam|mfnet FILE --config ... --output model/   # a checkpoint of the papers' code
    mmsam data synth --dataset deliver --root data/synthetic_deliver
    mmsam data check --dataset deliver --root data/DELIVER
    mmsam data check --dataset vaihingen --root data/Vaihingen --option split_scheme=official
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

    from mmsam.adapters import AdapterConfig
    from mmsam.cli_support import install_deprecation_loader, int_batches, legacy_hparams

    # a method's `adapter:` takes plain LoRA keys, or `class_path` + `init_args` of any registered
    # adapter config — adapters compose with methods by config alone
    set_parsing_settings(subclasses_enabled=[AdapterConfig])
    parser_mode = install_deprecation_loader()  # YAML, with the deprecated `lora:` read as `adapter:`

    from mmsam.data.datamodule import MultiModalDataModule
    from mmsam.engine import ColorMaskWriter, SegmentationTask
    from mmsam.engine.checkpointing import AtomicCheckpointIO, ResumableCheckpoint, ResumeState, check_checkpoint
    from mmsam.engine.val_images import ValidationImages

    class SegmentationCLI(LightningCLI):
        """LightningCLI with the data module's facts linked into the task."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("save_config_kwargs", {"overwrite": True})
            super().__init__(SegmentationTask, MultiModalDataModule, *args, **kwargs)

        def init_parser(self, **kwargs: Any) -> Any:
            kwargs.setdefault("exit_on_error", False)  # main() prints one line instead of the usage dump
            kwargs.setdefault("parser_mode", parser_mode)
            return super().init_parser(**kwargs)

        def add_arguments_to_parser(self, parser: Any) -> None:
            int_batches(parser)
            parser.add_lightning_class_args(ColorMaskWriter, "predict_writer")
            parser.add_lightning_class_args(ValidationImages, "val_images")  # TensorBoard images + val/IoU/<class>
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

        def instantiate_classes(self) -> None:
            super().instantiate_classes()
            from mmsam.cli_support import check_linked_values

            # `data.*` values are linked into the model: a disagreeing `model.*` key would be ignored
            check_linked_values(self._get(self.config, "model", default=None), self.datamodule)

        def before_fit(self) -> None:
            keys = ("train", "val", "test") if self._get(self.config, "test_after_fit", default=True) else ("train", "val")
            self.datamodule.preflight(keys)  # every split this run reads, before the first step

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
            """Check ``--ckpt_path`` (pickle-free, not torn, a checkpoint), then apply its task
            hyper-parameters over the config as Lightning does, those of older checkpoints
            translated to today's keys (``legacy_hparams``)."""
            sub = self.config.get("subcommand")
            ckpt = self.config[sub].get("ckpt_path") if sub else None
            if not ckpt or not Path(ckpt).is_file():
                return
            check_checkpoint(ckpt)
            from mmsam.fileio import load_torch_file

            hparams = dict(load_torch_file(ckpt, mmap=True).get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)
            if "_class_path" in hparams:  # a subclass-mode model: Lightning's own handling
                super()._parse_ckpt_path()
            elif hparams:
                self.config = self.parser.parse_object({sub: {"model": legacy_hparams(hparams)}}, self.config)

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
    from mmsam.cli_support import rename_deprecated_args, warn_once

    if args is None or isinstance(args, list):
        renamed, messages = rename_deprecated_args(list(sys.argv[1:] if args is None else args))
        if messages:  # `--model.method.init_args.lora.*` -> `adapter`
            warn_once(messages)
            args = renamed
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
    backbone = method.backbone.name  # build_frozen sets it; SAM and SAM 2 backbones are named
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
    from mmsam.engine.report import EvaluationReport, load_checkpoint_weights

    # every modality subset in the test metrics (an explicit --model.evaluation.modality_subsets wins)
    cli = lightning_main(["--config", ns.config, "--model.evaluation.modality_subsets", "all", *rest], run=False)
    load_checkpoint_weights(cli.model, ckpt)
    out = Path(ns.output) if ns.output else ckpt.resolve().parent.parent / "report"
    report = EvaluationReport(out, examples=ns.examples, title=f"checkpoint `{ckpt}`, config `{ns.config}`")
    trainer = cli.trainer
    trainer.callbacks.append(report)
    trainer.loggers = []  # the report is the output; no log folder for it
    trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)  # one pass: `mmsam test` plus the report
    result = report.result
    if result is None:  # another process than rank 0 under DDP: rank 0 writes and prints
        return 0
    full = result["full"]
    print(f"mIoU {100 * full['mIoU']:.2f}   OA {100 * full['OA']:.2f}   mF1 {100 * full['mF1']:.2f}   "
          f"({result['num_samples']} test samples)")
    print(f"wrote {out / 'report.md'} and {len(result['files']) - 1} figure(s)")
    return 0


def _quiet_lightning() -> None:
    import logging

    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import; override after)

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _patterns(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, glob = item.partition("=")
        if not sep or not name or not glob:
            raise ConfigError(f"--pattern {item!r}: expected MODALITY=GLOB, e.g. rgb='*_rgb.png'")
        out[name] = glob
    return out


def _export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmsam export", description="Write a model folder (adapters.safetensors + mmsam.yaml) from a trained checkpoint.")
    p.add_argument("--config", required=True, help="the YAML config used for fit")
    p.add_argument("--ckpt_path", required=True, help="the Lightning checkpoint to export")
    p.add_argument("--output", required=True, help="the model folder to write")
    p.add_argument("--pattern", action="append", metavar="MODALITY=GLOB",
                   help="file-name pattern of a modality for `mmsam predict --model` ('*' = scene id); repeatable")
    p.add_argument("--merged", action="store_true",
                   help="also write the LoRA folded into the encoder as an official SAM / SAM 2 checkpoint (merged_<base file>)")
    ns, rest = p.parse_known_args(argv)
    ckpt = Path(ns.ckpt_path)
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")
    _quiet_lightning()
    from mmsam.deploy import export_model
    from mmsam.engine.report import load_checkpoint_weights

    cli = lightning_main(["--config", ns.config, *rest], run=False)
    load_checkpoint_weights(cli.model, ckpt)
    model_cfg = cli.config["model"].as_dict()
    unknown = sorted(set(_patterns(ns.pattern)) - set(cli.datamodule.modalities))
    if unknown:
        raise ConfigError(f"--pattern for {unknown}: not modalities of this model ({', '.join(cli.datamodule.modalities)})")
    summary = export_model(cli.model, cli.datamodule, model_cfg, ns.output, patterns=_patterns(ns.pattern))
    base = summary["base"]
    if ns.merged:
        from mmsam.deploy.merge import write_merged

        if not base:
            raise ConfigError("--merged needs the base SAM / SAM 2 file the model was trained on (model.method.init_args.checkpoint)")
        merged = write_merged(cli.model.method, base["path"], Path(ns.output) / f"merged_{base['file']}")
        print(f"wrote {merged}: the official {base['file']} with the LoRA folded into its image encoder")
    print(f"wrote {ns.output}/adapters.safetensors ({summary['tensors']} tensors, {summary['elements']:,} values, "
          f"{summary['bytes'] / 2**20:.1f} MiB) and {ns.output}/mmsam.yaml")
    print(f"base checkpoint: {base['file']} (SHA-256 {base['sha256'][:12]}…)" if base else
          "base checkpoint: none (random backbone weights: the folder embeds the whole backbone)")
    return 0


def _import(argv: list[str]) -> int:
    from mmsam.interop import IMPORTERS

    p = argparse.ArgumentParser(prog="mmsam import", description="Convert a checkpoint written by a paper's own code into a model folder.")
    p.add_argument("--from", dest="kind", required=True, choices=sorted(IMPORTERS), help="the official code that wrote the file")
    p.add_argument("file", help="the official checkpoint (a state dict)")
    p.add_argument("--config", required=True, help="the mmsam config of the same model (method, backbone, classes, modalities)")
    p.add_argument("--output", required=True, help="the model folder to write")
    ns, rest = p.parse_known_args(argv)
    _quiet_lightning()
    from mmsam.deploy import export_model
    from mmsam.interop import convert, read_official_state

    state = read_official_state(ns.file)
    cli = lightning_main(["--config", ns.config, *rest], run=False)
    method = cli.model.method
    try:
        mapped = convert(ns.kind, state, method, cli.model.modalities)
    except CheckpointError as e:
        raise CheckpointError(f"{ns.file}: {e}") from None
    names: dict[int, list[str]] = {}  # a shared module's parameters have several names
    for n, q in method.named_parameters(remove_duplicate=False):
        if q.requires_grad:
            names.setdefault(id(q), []).append(n)
    unfilled = sorted(ns[0] for ns in names.values() if not any(n in mapped for n in ns))
    if unfilled:
        raise CheckpointError(f"{ns.file}: holds no value for {len(unfilled)} trainable tensors of this model ({', '.join(unfilled[:5])}): "
                              "is the config's method the one the file was trained with?")
    method.load_state_dict(mapped, strict=False)
    summary = export_model(cli.model, cli.datamodule, cli.config["model"].as_dict(), ns.output)
    print(f"imported {len(state)} official tensors into {len(mapped)} of the model's; wrote {ns.output} "
          f"({summary['tensors']} tensors, {summary['bytes'] / 2**20:.1f} MiB)")
    return 0


def _predict_folder(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mmsam predict --model", description="Predict every scene of a folder with a model folder.")
    p.add_argument("--model", required=True, help="a model folder written by `mmsam export`")
    p.add_argument("--input", required=True, help="folder of co-registered modality files")
    p.add_argument("--output", required=True, help="where label PNGs (palette embedded) and overlays go")
    p.add_argument("--pattern", action="append", metavar="MODALITY=GLOB",
                   help="file-name pattern of a modality, '*' = scene id (default: the model's, else '*_<modality>.*'); repeatable")
    p.add_argument("--checkpoint", default=None, help="the base SAM / SAM 2 file, if not next to the model folder")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    p.add_argument("--probabilities", action="store_true", help="also write <id>_probs.npy (float16, K x H x W)")
    p.add_argument("--no-overlay", action="store_true", help="skip the colour overlays")
    ns = p.parse_args(argv)
    from mmsam.deploy import load
    from mmsam.deploy.folder_predict import predict_folder

    predictor = load(ns.model, checkpoint=ns.checkpoint, device=ns.device)
    report = predict_folder(predictor, ns.input, ns.output, patterns=_patterns(ns.pattern),
                            probabilities=ns.probabilities, overlay=not ns.no_overlay)
    print(report.format())
    print(f"wrote predictions to {ns.output}")
    return 0 if report.written else 1


#: ``mmsam data synth --kind`` -> the data set layout its scenes are written in.
_SYNTH_KINDS = {"aerial": "vaihingen"}


def _parse_options(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: yaml(v)}``; ConfigError (one line) for a malformed or repeated item."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE with KEY a dataset option name")
        if key in out:
            raise ConfigError(f"--option {key} is given twice")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


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
    s.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --root: replaces an earlier synthetic set there (removing its samples "
                        "not written again), never a file no generator wrote")
    c = sub.add_parser("check", help="verify a download: counts, unreadable or mismatched files, class histogram")
    c.add_argument("--dataset", required=True, help=f"one of {', '.join(list_datasets())}")
    c.add_argument("--root", required=True)
    c.add_argument("--splits", nargs="*", default=None)
    c.add_argument("--modalities", nargs="*", default=None)
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a dataset constructor option, as data.dataset_options (repeatable; VALUE "
                        "is read as YAML: --option split_scheme=official --option dsm_source=dsm)")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    st = sub.add_parser("stats", help="per-modality mean / std of the training split, for data.dataset_options.modality_stats")
    st.add_argument("--config", required=True, help="a YAML config whose data section names the data set")
    st.add_argument("--split", default="train")
    st.add_argument("--write", action="store_true", help="write the statistics into the config (the original is kept as .bak)")
    ns = p.parse_args(argv)
    if ns.cmd == "stats":
        return _data_stats(ns.config, ns.split, ns.write)
    if ns.cmd == "check":
        import json

        from mmsam.data.check import check_dataset

        report = check_dataset(ns.dataset, ns.root, splits=ns.splits, modalities=ns.modalities,
                               options=_parse_options(ns.option), progress=True)
        print(json.dumps(report.to_dict(), indent=2) if ns.json else report.format())
        return report.exit_code  # 0 clean, 1 problems listed, 2 no sample found
    from mmsam.data.datasets import get_dataset_entry

    if ns.kind is not None and ns.dataset not in (None, _SYNTH_KINDS[ns.kind]):
        raise ConfigError(f"--kind {ns.kind} writes the {_SYNTH_KINDS[ns.kind]} layout; it cannot be combined with --dataset {ns.dataset}")
    dataset = _SYNTH_KINDS[ns.kind] if ns.kind is not None else ns.dataset or "deliver"
    from mmsam.data.synthetic import get_generator

    get_dataset_entry(dataset)  # ConfigError naming the known data sets
    generator = get_generator(dataset)
    if generator is None:
        raise ConfigError(f"no synthetic generator for {dataset!r}")
    root = ns.root or f"data/synthetic_{dataset}"
    given = {"num_train": ns.num_train, "num_val": ns.num_val, "num_test": ns.num_test, "size": ns.size}
    summary = generator(root, seed=ns.seed, overwrite=ns.overwrite, **{k: v for k, v in given.items() if v is not None})
    print(f"wrote the synthetic {dataset} data set to {root}: {summary}")
    return 0


def _data_stats(config: str, split: str, write: bool) -> int:
    import shutil

    import yaml

    from mmsam.data.datasets import get_dataset_entry
    from mmsam.data.stats import modality_stats

    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    data = cfg.get("data") or {}
    name = data.get("dataset", "deliver")
    entry = get_dataset_entry(name)
    options = dict(data.get("dataset_options") or {})
    modalities = list(data.get("modalities") or entry.default_modalities)
    if entry.prepare is not None:
        entry.prepare(modalities, options)
    root = data.get("root") or f"data/synthetic_{name}"
    ds = entry.factory(root=root, split=split, modalities=modalities, transform=None, check=False, **options)
    stats = modality_stats(ds, modalities)
    snippet = yaml.safe_dump({"data": {"dataset_options": {"modality_stats": stats}}}, sort_keys=False, default_flow_style=None)
    print(f"statistics of {len(ds)} {split} samples of {root}:\n{snippet}")
    if write:
        shutil.copyfile(path, path.with_name(path.name + ".bak"))
        cfg.setdefault("data", {}).setdefault("dataset_options", {})["modality_stats"] = stats
        path.write_text(yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))
        print(f"wrote them into {path} (the original is {path.name}.bak; comments are not kept)")
    return 0


def main(argv: list[str] | None = None) -> int:
    import warnings

    from argparse import ArgumentError

    from mmsam.cli_support import config_error_line, quiet_third_party

    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_third_party()
    try:
        if args and args[0] == "data":
            return _data(args[1:])
        if args and args[0] == "info":
            return _info(args[1:])
        if args and args[0] == "report":
            return _report(args[1:])
        if args and args[0] == "export":
            return _export(args[1:])
        if args and args[0] == "import":
            return _import(args[1:])
        if args and args[0] == "predict" and any(a == "--model" or a.startswith("--model=") for a in args[1:]) and "--config" not in args:
            return _predict_folder(args[1:])
        lightning_main(argv)
        return 0
    except MMSamError as e:
        msg = str(e).strip()
        if "Original Traceback" in msg:  # raised in a DataLoader worker: keep the error's own line
            msg = msg.splitlines()[-1].split(": ", 1)[-1]
        print(f"mmsam: error: {msg}", file=sys.stderr)
        return 2
    except ArgumentError as e:  # jsonargparse (exit_on_error=False): the key, what it accepts, a suggestion
        print(f"mmsam: error: {config_error_line(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # jsonargparse wraps a constructor's ConfigError (e.g. lora.r 0) in its own
        line = config_error_line(e, only_ours=True)
        if line is None:
            raise
        print(f"mmsam: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
