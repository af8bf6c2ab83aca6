"""A model folder: what training changed, plus everything needed to use it elsewhere.

``model/adapters.safetensors`` holds every tensor of the trained method that differs from what
its constructor builds on top of the base checkpoint: adapters, fusion and heads (parameters
*and* buffers such as BatchNorm statistics and MemorySAM's prototypes), and any part the method
re-initialises at random. ``model/mmsam.yaml`` holds the method and its arguments, the
modalities (reader, normalisation), classes, palette, ignore index, evaluation size or window,
the base checkpoint's file name and SHA-256, and the mmsam version. Loading the folder on top of
the same base file reproduces the trained model's logits exactly; another base file is refused.
A model trained on random backbone weights (the demos) differs everywhere from a fresh build, so
its folder embeds the whole backbone and needs no base file.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

import mmsam
from mmsam.errors import CheckpointError, ConfigError
from mmsam.fileio import compare_state_dicts

FORMAT = "mmsam-model/1"
WEIGHTS = "adapters.safetensors"
CONFIG = "mmsam.yaml"

__all__ = ["build_task", "export_model", "read_model_folder", "FORMAT"]


def _configure_parsing() -> None:
    from jsonargparse import set_parsing_settings

    from mmsam.adapters import AdapterConfig

    set_parsing_settings(subclasses_enabled=[AdapterConfig])


def build_task(model_config: Mapping[str, Any], *, checkpoint: str | None = None) -> Any:
    """A ``SegmentationTask`` from the ``model`` section of a config (as the CLI builds it),
    with the method's ``checkpoint`` replaced by ``checkpoint``."""
    from jsonargparse import ArgumentParser

    from mmsam.engine import SegmentationTask

    _configure_parsing()
    cfg = copy.deepcopy(dict(model_config))
    from mmsam.cli_support import legacy_hparams, rename_deprecated_keys

    for msg in rename_deprecated_keys({"model": cfg}):  # a folder written before `lora:` became `adapter:`
        warnings.warn(msg, FutureWarning, stacklevel=2)
    cfg = legacy_hparams(cfg)  # ... or before model.optimizer / lr_scheduler / evaluation
    method = cfg.get("method")
    if not isinstance(method, dict) or "class_path" not in method:
        raise ConfigError("model.method must be a class_path with init_args")
    method.setdefault("init_args", {})
    method["init_args"]["checkpoint"] = checkpoint
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SegmentationTask, "model", fail_untyped=False)
    try:
        parsed = parser.parse_object({"model": cfg})
        return parser.instantiate_classes(parsed).model
    except Exception as e:  # noqa: BLE001  (jsonargparse errors are long; keep the first line)
        if isinstance(e, (ConfigError, CheckpointError)):
            raise
        raise ConfigError(f"cannot build the model from its config: {str(e).splitlines()[0]}") from None


def sha256_of(path: str | os.PathLike) -> str:
    from mmsam.backbones.checkpoints import sha256_of as _sha

    return _sha(path)


def _changed_state(task: Any, fresh: Any) -> dict[str, torch.Tensor]:
    """Every trainable parameter, and every other tensor whose value differs from ``fresh``."""
    trainable = {n for n, p in task.method.named_parameters() if p.requires_grad}
    own, ref = task.method.state_dict(), fresh.method.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in own.items():
        other = ref.get(name)
        if name in trainable or other is None or other.shape != tensor.shape or not torch.equal(other, tensor):
            out[name] = tensor.detach().cpu().clone()  # clone: shared tensors (tied modules) are saved apart
    return out


def _modalities(data: Any) -> list[dict[str, Any]]:
    """Each modality with the registered reader (spec) its data set reads it with."""
    from mmsam.data.modalities import get_modality

    specs: dict[str, Any] = {}
    for ds in getattr(data, "datasets", {}).values():  # a built data set knows its layout's specs
        specs.update(getattr(ds, "specs", {}) or {})
    names = dict(getattr(data, "spec_names", {}) or {})
    out = []
    for name in data.modalities:
        spec = specs.get(name) or get_modality(names.get(name, name))
        out.append({"name": name, "spec": spec.name, "mean": list(spec.mean), "std": list(spec.std), "description": spec.description})
    return out


def export_model(
    task: Any,
    data: Any,
    model_config: Mapping[str, Any],
    output: str | os.PathLike,
    *,
    patterns: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``output/adapters.safetensors`` and ``output/mmsam.yaml`` for a trained task.

    ``model_config`` is the ``model`` section of the training config (``class_path`` form);
    ``data`` the data module (modalities, classes, palette, eval size). Returns a summary.
    """
    from safetensors.torch import save_file

    from mmsam.fileio import atomic_write_with

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --output must be a folder")
    cfg = copy.deepcopy(dict(model_config))
    base = cfg.get("method", {}).get("init_args", {}).get("checkpoint")
    base_info: dict[str, Any] | None = None
    if base:
        if not Path(base).is_file():
            raise CheckpointError(f"{base}: the base checkpoint of this model is not found (needed to tell what training changed)")
        base_info = {"file": Path(base).name, "path": str(Path(base).resolve()), "sha256": sha256_of(base)}
    linked = {"num_classes": int(task.num_classes), "modalities": list(task.modalities),
              "class_names": list(task.class_names), "ignore_index": int(data.ignore_index)}
    fresh = build_task({**cfg, **linked}, checkpoint=base)
    state = _changed_state(task, fresh)
    del fresh
    for k in linked:
        cfg.pop(k, None)  # stored below, from the data module
    cfg["method"]["init_args"]["checkpoint"] = None
    info = {
        "format": FORMAT,
        "mmsam_version": mmsam.__version__,
        "base_checkpoint": base_info,
        "num_classes": int(task.num_classes),
        "class_names": list(task.class_names),
        "palette": [list(map(int, c)) for c in (data.palette or [])],
        "ignore_index": int(data.ignore_index),
        "modalities": _modalities(data),
        "patterns": dict(patterns or {}),
        "eval_size": data.hparams.eval_size,
        "dataset": data.hparams.dataset,
        "model": cfg,
    }
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "keys": str(len(state))}
    atomic_write_with(out / WEIGHTS, lambda tmp: save_file(state, tmp, metadata=meta))
    atomic_write_with(out / CONFIG, lambda tmp: Path(tmp).write_text(yaml.safe_dump(json.loads(json.dumps(info, default=str)), sort_keys=False)))
    size = (out / WEIGHTS).stat().st_size
    return {"tensors": len(state), "elements": sum(t.numel() for t in state.values()), "bytes": size, "base": base_info}


def read_model_folder(folder: str | os.PathLike, *, checkpoint: str | os.PathLike | None = None) -> tuple[Any, dict[str, Any]]:
    """Build the trained task of a model folder (eval mode) and return it with the folder's info.

    ``checkpoint``: the base SAM / SAM 2 file; default: the file name the folder records, looked
    up next to the folder, inside it, then at its recorded absolute path.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise CheckpointError(f"{folder}: not a model folder (needs {CONFIG} and {WEIGHTS}; write one with `mmsam export`)")
    try:
        info = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfg_path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path}: not an mmsam model description (format {info.get('format') if isinstance(info, dict) else None!r}, expected {FORMAT!r})")
    base = info.get("base_checkpoint")
    base_path: str | None = None
    if base:
        if checkpoint is not None:
            candidates = [Path(checkpoint)]
        else:
            candidates = [folder.parent / base["file"], folder / base["file"], Path(base.get("path", base["file"]))]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            where = ", ".join(str(c) for c in candidates)
            raise CheckpointError(f"{folder}: base checkpoint {base['file']} not found (looked at {where}); pass its path")
        digest = sha256_of(found)
        if digest != base["sha256"]:
            raise CheckpointError(f"{found}: SHA-256 {digest} is not the base this model was trained on ({base['file']}, SHA-256 {base['sha256']})")
        base_path = str(found)
    elif checkpoint is not None:
        raise CheckpointError(f"{folder}: this model embeds its whole backbone (trained on random weights); it takes no base checkpoint")
    _register_modalities(info)
    model_cfg = dict(info["model"])
    model_cfg.update(num_classes=info["num_classes"], class_names=info["class_names"], ignore_index=info["ignore_index"],
                     modalities=[m["name"] for m in info["modalities"]])
    task = build_task(model_cfg, checkpoint=base_path)
    try:
        with safe_open(str(w_path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{w_path}: not a readable safetensors file ({e})") from None
    diff = compare_state_dicts(task.method.state_dict(), state, required=())  # the file holds the changed tensors only
    if diff:
        raise CheckpointError(f"{w_path}: does not fit the model {CONFIG} describes: unexpected {sorted(diff.unexpected)[:6]}, shape mismatches {sorted(diff.shapes)[:6]}")
    task.method.load_state_dict(state, strict=False)
    task.eval()
    return task, info


def _register_modalities(info: Mapping[str, Any]) -> None:
    """Register the folder data set's own modalities; check the others against the registry
    (mean / std as trained)."""
    from mmsam.data.datasets.folder import register_folder_modalities
    from mmsam.data.modalities import _REGISTRY, get_modality

    for m in info["modalities"]:
        name, spec_name = m["name"], m.get("spec", m["name"])
        if spec_name not in _REGISTRY:  # a modality of the folder data set
            stats = {name: {"mean": m["mean"], "std": m["std"]}} if not spec_name.endswith("@folder") else None
            register_folder_modalities([name], stats)
        spec = get_modality(spec_name)
        if [float(v) for v in spec.mean] != [float(v) for v in m["mean"]] or [float(v) for v in spec.std] != [float(v) for v in m["std"]]:
            raise ConfigError(
                f"modality {m['name']!r}: this installation normalises it with mean {list(spec.mean)} / std {list(spec.std)}, "
                f"the model was trained with {m['mean']} / {m['std']}"
            )
