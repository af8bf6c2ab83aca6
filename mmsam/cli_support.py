"""Helpers of the ``mmsam`` command line: quiet third-party notices, one-line config errors.

Installed by ``mmsam.cli.main`` only; library users keep Lightning's and jsonargparse's defaults.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import logging
import re
import warnings
from typing import Any, Iterable

#: Lightning notices that need no action from a user of the CLI (message prefixes).
NOISE = (
    "💡 Tip: For seamless cloud logging",
    "GPU available:",
    "TPU available:",
    "HPU available:",
)
_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero",
            "lightning.fabric.utilities.rank_zero", "lightning_utilities.core.rank_zero")


class NoiseFilter(logging.Filter):
    """Drops log records whose message starts with one of ``NOISE``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not msg.startswith(NOISE)


def quiet_third_party() -> None:
    """Silence Lightning's advertisement and accelerator lines and library-internal deprecations."""
    import lightning.pytorch  # noqa: F401  (configures its loggers on import; add filters after)

    flt = NoiseFilter()
    for name in (*_LOGGERS, ""):
        log = logging.getLogger(name)
        if not any(isinstance(f, NoiseFilter) for f in log.filters):
            log.addFilter(flt)
        for handler in log.handlers:
            if not any(isinstance(f, NoiseFilter) for f in handler.filters):
                handler.addFilter(flt)
    # raised from inside Lightning / torch (pytree registrations, internal APIs): nothing to do for a user
    for module in (r"lightning(\..*)?", r"lightning_fabric(\..*)?", r"torch\.utils\._pytree", r"torch(\..*)?"):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    warnings.filterwarnings("ignore", message=r".*pytree.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*pytree.*", category=FutureWarning)


# ---- one-line config errors -------------------------------------------------------------------

_SECTIONS = {
    "model": "mmsam.engine.task.SegmentationTask",
    "data": "mmsam.data.datamodule.MultiModalDataModule",
    "trainer": "lightning.pytorch.Trainer",
}


def _keys_of(path: str) -> list[str]:
    """Accepted keyword names of the class at dotted ``path`` (dataclass fields or ``__init__`` params)."""
    try:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _suggest(key: str, accepted: Iterable[str]) -> str:
    """`` (accepted: …); did you mean 'x'?``: all accepted keys when few, else the nearest ones."""
    accepted = sorted(set(accepted))
    if not accepted:
        return ""
    close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.5)
    # single letters ('r' for 'rank') score low with difflib: a key that starts the typed one counts too
    close = close or [a for a in accepted if len(a) < len(key) and key.startswith(a)][:1]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    if len(accepted) > 10:
        near = difflib.get_close_matches(key, accepted, n=6, cutoff=0.3) or accepted[:6]
        return f" (accepted keys nearby: {', '.join(sorted(set(near) | set(close)))}, …){hint}"
    return f" (accepted: {', '.join(accepted)}){hint}"


def _type_error(message: str) -> str | None:
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    given = re.findall(r"Given value: (.*)", message)
    expected = re.findall(r"Expected an? <class '([\w.]+)'>", message)
    if not keys or not given:
        return None
    types = [t for t in dict.fromkeys(expected) if t != "NoneType"]
    want = f"expected {' or '.join(types)}" if types else "invalid value"
    return f"{'.'.join(keys)}: {want}, got {given[-1].strip()!r}"


def config_error_line(exc: BaseException, *, only_ours: bool = False) -> str | None:
    """One line for an ``ArgumentError``: an ``MMSamError`` raised by a constructor while parsing
    (e.g. ``LoRAConfig`` range checks) speaks for itself; otherwise ``format_config_error``."""
    from mmsam.errors import MMSamError

    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, MMSamError):
            return str(cause).strip().splitlines()[0]
        cause = cause.__cause__ or cause.__context__
    return None if only_ours else format_config_error(str(exc))


_WARMUP_POLY = "(class_path: mmsam.engine.schedule.WarmupPoly)"
_MULTISTEP = "(class_path: torch.optim.lr_scheduler.MultiStepLR)"
#: keys of ``SegmentationTask`` that were replaced, and where their values go now
RENAMED = {
    "lr": "model.optimizer.init_args.lr (optimizer: {class_path: torch.optim.AdamW, init_args: {lr: ..., weight_decay: ...}})",
    "weight_decay": "model.optimizer.init_args.weight_decay",
    "momentum": "model.optimizer.init_args.momentum (class_path: torch.optim.SGD)",
    "lr_schedule": f"model.lr_scheduler: {{class_path: ...}} {_WARMUP_POLY} or {_MULTISTEP}",
    "milestones": f"model.lr_scheduler.init_args.milestones {_MULTISTEP}",
    "gamma": f"model.lr_scheduler.init_args.gamma {_MULTISTEP}",
    "warmup_epochs": f"model.lr_scheduler.init_args.warmup_epochs {_WARMUP_POLY}",
    "warmup_ratio": f"model.lr_scheduler.init_args.warmup_ratio {_WARMUP_POLY}",
    "poly_power": f"model.lr_scheduler.init_args.power {_WARMUP_POLY}",
    "poly_extra_epochs": f"model.lr_scheduler.init_args.extra_epochs {_WARMUP_POLY}",
    **{old: f"model.evaluation.{new}" for old, new in (
        ("eval_modality_subsets", "modality_subsets"), ("eval_classes", "classes"), ("absent_classes", "absent_classes"),
        ("ignore_in_union", "ignore_in_union"), ("binary_metrics", "binary_metrics"), ("eval_window", "window"),
        ("eval_stride", "stride"), ("eval_window_batch", "window_batch"), ("eval_window_edges", "window_edges"),
        ("val_stride", "val_stride"))},
}
_OPTIMIZER_NAMES = {"adamw": "torch.optim.AdamW", "sgd": "torch.optim.SGD"}


def renamed_key_line(text: str) -> str | None:
    """One line for a replaced ``model`` key (``model.lr``, ``optimizer: sgd``, ...): where it goes now."""
    keys = re.findall(r"(?:option|Key|key|unknown option) '-{0,2}model\.(\w+)'", text)
    keys += re.findall(r"Group 'model' does not accept option '(\w+)'", text)
    keys += re.findall(r"unrecognized arguments: --model\.(\w+)", text)
    keys += re.findall(r"ambiguous option: --model\.(\w+)(?:=\S*)? could match", text)
    for key in keys:
        if key in RENAMED:
            return f"config key 'model.{key}' was replaced: use {RENAMED[key]}"
    m = re.search(r'Parser key "model\.optimizer".*?Given value: (\w+)', text, re.S) or re.search(r"model\.optimizer: .*got '(\w+)'", text)
    if m:
        target = _OPTIMIZER_NAMES.get(m.group(1).lower(), "torch.optim.<Name>")
        return f"model.optimizer: {m.group(1)!r} is no longer a name: use model.optimizer: {{class_path: {target}, init_args: {{lr: ...}}}}"
    return None


def format_config_error(message: str) -> str:
    """A jsonargparse error message -> one line naming the key, nearby accepted keys and a suggestion."""
    text = str(message)
    renamed = renamed_key_line(text)
    if renamed:
        return renamed
    m = re.search(r"Option '([\w.]+)' is not accepted", text) or re.search(r"Key '([\w.]+)' is not expected", text)
    if m:
        key = m.group(1).rsplit(".", 1)[-1]
        cls = re.findall(r"class_path '([\w.]+)'", text)
        parents = [k for k in re.findall(r'Parser key "([\w.]+)"', text)]
        where = ".".join(parents + [key]) if parents else m.group(1)
        if len(parents) > 1 and "." in parents[0]:  # a class_path argument: its keys sit under init_args
            where = f"{parents[0]}.init_args.{'.'.join(parents[1:] + [key])}"
        # a union (a method's `adapter: LoRAConfig | AdapterConfig`) names each class it tried
        accepted = [k for c in dict.fromkeys(cls) for k in _keys_of(c)]
        return f"unknown config key '{where}'{_suggest(key, accepted)}"
    m = re.search(r"unrecognized arguments: (\S+)", text)
    if m:
        full = m.group(1).lstrip("-").split("=", 1)[0]
        section, _, rest = full.partition(".")
        if section in _SECTIONS and rest and "." not in rest:
            return f"unknown option '--{full}'{_suggest(rest, _keys_of(_SECTIONS[section]))}"
        return f"unknown option '--{full}'"
    m = re.search(r"\b(ConfigError|ValueError): (.+)", text)
    if m:
        return m.group(2).strip().splitlines()[0]
    typed = _type_error(text)
    if typed:
        return typed
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines)[:300] if lines else "invalid configuration"


#: ``model.*`` keys the CLI fills from the data module, with the value meaning "not given".
LINKED = {"num_classes": 0, "modalities": None, "class_names": None, "ignore_index": 255}


def check_linked_values(model_cfg: Any, datamodule: Any) -> None:
    """ConfigError when a config sets a linked ``model.*`` key to another value than the data's.

    The CLI links ``data.num_classes`` (and modalities, class names, ignore index) into the
    task, so a ``model.num_classes: 10`` would be silently overridden.
    """
    from mmsam.errors import ConfigError

    if model_cfg is None:
        return
    for key, unset in LINKED.items():
        given = model_cfg.get(key) if hasattr(model_cfg, "get") else getattr(model_cfg, key, unset)
        if given is None or given == unset:
            continue
        data = getattr(datamodule, key, None)
        data = list(data) if isinstance(data, tuple) else data
        given = list(given) if isinstance(given, tuple) else given
        if data is not None and given != data:
            shown = data if key != "class_names" or len(data) <= 6 else f"{len(data)} names"
            raise ConfigError(
                f"model.{key}: {given!r} disagrees with data set {datamodule.hparams.dataset!r}, "
                f"whose {key} is {shown!r}; the CLI takes model.{key} from the data: remove it "
                f"from the config (or change data)")


def int_batches(parser: Any) -> None:
    """``limit_*_batches`` / ``val_check_interval`` / ``overfit_batches`` given as ``1`` mean one batch.

    Lightning types them ``int | float`` and reads an ``int`` as a batch count and a ``float`` as a
    fraction; jsonargparse tries the union's types in order but Lightning's signature lists
    ``Union[int, float, None]`` as ``float | int`` after ``from __future__`` annotations resolve, so
    ``1`` became ``1.0`` (= all batches). Here the integer-looking command-line / YAML value is kept
    an ``int``.
    """
    from typing import Union

    for action in getattr(parser, "_actions", []):
        dest = getattr(action, "dest", "")
        if dest.rsplit(".", 1)[-1] in {"limit_train_batches", "limit_val_batches", "limit_test_batches",
                                        "limit_predict_batches", "overfit_batches", "val_check_interval"}:
            if hasattr(action, "_typehint"):
                action._typehint = Union[int, float, None]  # built here: typing caches equal unions


# ---- deprecated config keys -------------------------------------------------------------------

#: old key of a method's ``init_args`` -> its new name
RENAMED_METHOD_KEYS = {"lora": "adapter"}
_METHOD_PATH = "model.method.init_args"
_warned: set[str] = set()


def deprecation_line(old: str, new: str) -> str:
    return f"config key '{_METHOD_PATH}.{old}' is deprecated: renamed to '{new}' (it takes the same values); read as '{new}'"


def rename_deprecated_keys(config: Any) -> list[str]:
    """Rename, in place, the deprecated keys of ``config['model']['method']['init_args']`` (a whole
    config, as a YAML file holds it) to their new names; returns one message per renamed key.

    Giving both the old and the new key is a ``ConfigError``.
    """
    from mmsam.errors import ConfigError

    if not isinstance(config, dict):
        return []
    method = (config.get("model") or {}).get("method") if isinstance(config.get("model"), dict) else None
    init = method.get("init_args") if isinstance(method, dict) else None
    if not isinstance(init, dict):
        return []
    messages = []
    for old, new in RENAMED_METHOD_KEYS.items():
        if old not in init:
            continue
        if new in init:
            raise ConfigError(f"config has both '{_METHOD_PATH}.{old}' (deprecated) and '{_METHOD_PATH}.{new}': keep '{new}' only")
        config["model"]["method"]["init_args"] = init = {(new if k == old else k): v for k, v in init.items()}
        messages.append(deprecation_line(old, new))
    return messages


def rename_deprecated_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Command-line options under a deprecated key (``--model.method.init_args.lora.r 8``) renamed;
    returns the new list and one message per renamed key."""
    out, messages = [], []
    for arg in args:
        for old, new in RENAMED_METHOD_KEYS.items():
            prefix = f"--{_METHOD_PATH}.{old}"
            if arg == prefix or arg.startswith((prefix + ".", prefix + "=")):
                arg = f"--{_METHOD_PATH}.{new}" + arg[len(prefix):]
                line = deprecation_line(old, new)
                if line not in messages:
                    messages.append(line)
        out.append(arg)
    return out, messages


def warn_once(messages: Iterable[str]) -> None:
    """Print each deprecation message once per process, as one ``mmsam: warning:`` line on stderr."""
    import sys

    for msg in messages:
        if msg not in _warned:
            _warned.add(msg)
            print(f"mmsam: warning: {msg}", file=sys.stderr)


def install_deprecation_loader(mode: str = "mmsam_yaml") -> str:
    """Register a jsonargparse parser mode that reads YAML as ``yaml`` does and renames deprecated
    method keys of every whole config it loads (``--config`` files); returns the mode's name."""
    from jsonargparse import get_loader, set_loader
    from jsonargparse._loaders_dumpers import get_loader_exceptions

    base = get_loader("yaml")

    def load(text: str) -> Any:
        value = base(text)
        warn_once(rename_deprecated_keys(value))
        return value

    set_loader(mode, load, exceptions=get_loader_exceptions("yaml"))
    return mode


_LEGACY_EVAL = {"eval_modality_subsets": "modality_subsets", "eval_classes": "classes", "absent_classes": "absent_classes",
                "ignore_in_union": "ignore_in_union", "binary_metrics": "binary_metrics", "eval_window": "window",
                "eval_stride": "stride", "eval_window_batch": "window_batch", "eval_window_edges": "window_edges",
                "val_stride": "val_stride"}
_LEGACY_OPTIM = ("lr", "weight_decay", "momentum", "lr_schedule", "milestones", "gamma", "warmup_epochs", "warmup_ratio",
                 "poly_power", "poly_extra_epochs")


def legacy_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's task hyper-parameters written before ``model.optimizer`` / ``lr_scheduler`` /
    ``evaluation``: evaluation keys moved under ``evaluation``, optimiser and schedule keys dropped
    (the config's apply; they matter only to ``fit``). Newer hyper-parameters come back unchanged."""
    if not any(k in hparams for k in (*_LEGACY_EVAL, *_LEGACY_OPTIM)) and not isinstance(hparams.get("optimizer"), str):
        return hparams
    out = {k: v for k, v in hparams.items() if k not in _LEGACY_EVAL and k not in _LEGACY_OPTIM}
    if isinstance(out.get("optimizer"), str):
        out.pop("optimizer")
    evaluation = {new: hparams[old] for old, new in _LEGACY_EVAL.items() if old in hparams}
    if evaluation:
        out["evaluation"] = {**(out.get("evaluation") or {}), **evaluation}
    return out
