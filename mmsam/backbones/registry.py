"""Registry of backbones (timm style): ``@register_backbone`` on entry points, ``create_backbone(name, ...)``.

An entry point is a function taking keyword arguments only (``img_size``, ``checkpoint``, …)
and returning a ready backbone. Names that are not Python identifiers (``sam2.1_hiera_b+``)
are given explicitly: ``@register_backbone("sam2.1_hiera_b+")``.
"""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, TypeVar, overload

from torch import nn

from mmsam.errors import ConfigError

EntryPoint = Callable[..., nn.Module]
F = TypeVar("F", bound=EntryPoint)

_BACKBONES: dict[str, EntryPoint] = {}


@overload
def register_backbone(fn_or_name: F) -> F: ...
@overload
def register_backbone(fn_or_name: str) -> Callable[[F], F]: ...
def register_backbone(fn_or_name):
    """Register an entry point under its ``__name__``, or under an explicit name.

    ``@register_backbone`` and ``@register_backbone("sam2.1_hiera_t")`` both work.
    Registering a taken name is an error (two modules would silently shadow each other).
    """

    def deco(fn: F, name: str) -> F:
        if name in _BACKBONES and _BACKBONES[name] is not fn:
            raise ValueError(f"backbone {name!r} is already registered")
        _BACKBONES[name] = fn
        return fn

    if isinstance(fn_or_name, str):
        return lambda fn: deco(fn, fn_or_name)
    return deco(fn_or_name, fn_or_name.__name__)


def list_backbones(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style pattern (``"sam2.1_*"``)."""
    names = sorted(_BACKBONES)
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone registered as ``name``; an unknown name raises ``ConfigError`` listing the known ones."""
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}")
    return _BACKBONES[name](**kwargs)
