"""Registry of methods (timm style): ``@register_method`` and ``create_method(name, ...)``."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from mmsam.errors import ConfigError

_METHODS: dict[str, Callable[..., nn.Module]] = {}


def register_method(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a method class (or factory) under ``name``."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        _METHODS[name] = fn
        return fn

    return deco


def list_methods() -> list[str]:
    return sorted(_METHODS)


def create_method(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered method; an unknown name raises ``ConfigError`` listing the known ones."""
    if name not in _METHODS:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(list_methods())}")
    return _METHODS[name](**kwargs)
