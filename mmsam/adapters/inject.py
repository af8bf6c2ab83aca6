"""Inject adapters into a frozen backbone by module name, as PEFT does with ``target_modules``."""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Iterator

from torch import nn

from mmsam.adapters.base import AdapterConfig, AdapterLayer
from mmsam.errors import ConfigError


@dataclass(frozen=True)
class _AdapterType:
    config_cls: type[AdapterConfig]
    layer_cls: type[AdapterLayer]
    base_types: tuple[type[nn.Module], ...]
    delta_cls: type[nn.Module] | None


_ADAPTERS: dict[str, _AdapterType] = {}


def register_adapter(
    name: str,
    *,
    config_cls: type[AdapterConfig],
    layer_cls: type[AdapterLayer],
    base_types: tuple[type[nn.Module], ...] = (nn.Linear,),
    delta_cls: type[nn.Module] | None = None,
) -> None:
    """Make an adapter type available to configs under ``name`` (lower case, unique).

    ``delta_cls(in_features, out_features, config)`` is the adapter's update alone (no base
    layer); giving it lets the adapter serve as a per-modality expert inside MoE-LoRA.
    """
    if name != name.lower() or name in _ADAPTERS:
        raise ValueError(f"adapter name {name!r} must be lower case and not yet registered")
    if config_cls.adapter_type != name:
        raise ValueError(f"{config_cls.__name__}.adapter_type is {config_cls.adapter_type!r}, registered as {name!r}")
    _ADAPTERS[name] = _AdapterType(config_cls, layer_cls, base_types, delta_cls)


def delta_class(config: AdapterConfig) -> type[nn.Module]:
    """The update module of ``config``'s adapter type (for use as a MoE expert)."""
    kind = _ADAPTERS.get(config.adapter_type)
    if kind is None or kind.delta_cls is None:
        usable = [n for n, k in _ADAPTERS.items() if k.delta_cls is not None]
        raise ConfigError(f"adapter {config.adapter_type!r} cannot be a per-modality expert; usable: {usable}")
    return kind.delta_cls


def list_adapters() -> list[str]:
    return sorted(_ADAPTERS)


def create_adapter_config(adapter_type: str, **kwargs: Any) -> AdapterConfig:
    """Build the config dataclass of a registered adapter type from keyword arguments."""
    if adapter_type not in _ADAPTERS:
        raise ConfigError(f"unknown adapter type {adapter_type!r}; known: {', '.join(list_adapters())}")
    cls = _ADAPTERS[adapter_type].config_cls
    known = {f.name for f in fields(cls) if f.init}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for adapter {adapter_type!r}; valid: {sorted(known)}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(f"adapter {adapter_type!r}: {e}") from None


def _matches(name: str, pattern: str | list[str] | None) -> bool:
    if pattern is None:
        return False
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == p or name.endswith("." + p) for p in pattern)


_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def target_module_names(module: nn.Module, config: AdapterConfig, base_types: tuple[type, ...] = (nn.Linear,)) -> list[str]:
    """Names of the sub-modules ``config`` selects: exclusions first, then name, then block index."""
    names = []
    for name, sub in module.named_modules():
        if not name or isinstance(sub, AdapterLayer) or ".base_layer" in name:
            continue
        if _matches(name, config.exclude_modules) or not _matches(name, config.target_modules):
            continue
        if config.blocks is not None:
            m = _BLOCK_RE.search(name)
            if m is None or int(m.group(1)) not in config.blocks:
                continue
        if not isinstance(sub, base_types):
            raise ConfigError(
                f"module {name!r} matches target_modules={config.target_modules!r} but is a "
                f"{type(sub).__name__}; a {config.adapter_type!r} adapter wraps {[t.__name__ for t in base_types]}"
            )
        names.append(name)
    return names


def inject_adapters(module: nn.Module, config: AdapterConfig) -> list[str]:
    """Replace every matching sub-module of ``module`` by the adapter layer wrapping it.

    Returns the adapted module names. Raises ``ConfigError`` naming the pattern when nothing
    matches, so a typo in ``target_modules`` never trains a model without adapters.
    """
    kind = _ADAPTERS.get(config.adapter_type)
    if kind is None:
        raise ConfigError(f"unknown adapter type {config.adapter_type!r}; known: {', '.join(list_adapters())}")
    names = target_module_names(module, config, kind.base_types)
    if not names:
        raise ConfigError(
            f"{config.adapter_type} target_modules={config.target_modules!r} (blocks={config.blocks}) "
            f"matches no {[t.__name__ for t in kind.base_types]} in {type(module).__name__}"
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        named = {"name": name} if kind.layer_cls.takes_module_name else {}
        setattr(parent, child, kind.layer_cls(getattr(parent, child), config, **named))
    return names


def adapter_layers(module: nn.Module) -> Iterator[tuple[str, AdapterLayer]]:
    for name, sub in module.named_modules():
        if isinstance(sub, AdapterLayer):
            yield name, sub


def merge_adapters(module: nn.Module) -> int:
    """Fold every mergeable adapter into its base weight; returns how many were merged."""
    n = 0
    for _, layer in adapter_layers(module):
        layer.merge()
        n += 1
    return n


def unmerge_adapters(module: nn.Module) -> int:
    """Undo :func:`merge_adapters`."""
    n = 0
    for _, layer in adapter_layers(module):
        layer.unmerge()
        n += 1
    return n
