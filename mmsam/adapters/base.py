"""The contract every adapter layer follows (after PEFT's ``BaseTunerLayer``)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch
from torch import nn

from mmsam.errors import ConfigError


@dataclass
class AdapterConfig:
    """Where to inject an adapter: PEFT-style module-name matching.

    Args:
        target_modules: a regex matched against the full module name (``re.fullmatch``),
            or a list of names matched exactly or as a dotted suffix (``"attn.qkv"``).
        exclude_modules: same forms; a module matching it is never adapted.
        blocks: only adapt modules inside these block indices (``blocks.<i>.``); ``None`` = all.
    """

    target_modules: str | list[str] = field(default_factory=lambda: ["attn.qkv"])
    exclude_modules: str | list[str] | None = None
    blocks: list[int] | None = None
    adapter_type: ClassVar[str] = ""  # the registry key of the adapter; set by each subclass
    # modality-aware adapters: the field listing one part (expert, stream) per modality, filled by the method
    modality_field: ClassVar[str | None] = None

    @property
    def modality_aware(self) -> bool:
        return self.modality_field is not None


def with_modalities(config: AdapterConfig, names: Sequence[str]) -> AdapterConfig:
    """``config`` with one part per modality of ``names`` when it is modality-aware, else ``config``.

    The one place where MoE-LoRA's ``experts`` and MMAdapter / MMLoRA's ``streams`` come from the
    method's modalities; names given in the config must be those modalities (any order).
    """
    key = config.modality_field
    if key is None:
        return config  # a shared adapter: one set for all modalities
    names = list(names)
    given = getattr(config, key)
    if given and set(given) != set(names):
        raise ConfigError(f"adapter {key} {given} differ from the model's modalities {names}; leave them empty")
    return dataclasses.replace(config, **{key: names})


class AdapterLayer(nn.Module):
    """A module wrapping a frozen ``base_layer`` and adding a trainable path.

    Subclasses list their trainable sub-module names in ``adapter_layer_names``; those that can
    fold into the base weight set ``supports_merge = True`` and implement ``get_delta_weight``.
    """

    adapter_layer_names: tuple[str, ...] = ()
    supports_merge: bool = False
    # True: ``inject_adapters`` passes the wrapped module's full name as ``name=`` (its role may depend on it)
    takes_module_name: ClassVar[bool] = False

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.merged = False
        for p in base_layer.parameters():
            p.requires_grad_(False)

    def adapter_parameters(self) -> list[nn.Parameter]:
        return [p for n in self.adapter_layer_names for p in getattr(self, n).parameters()]

    def get_delta_weight(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot be merged into its base layer")

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight (zero inference overhead)."""
        if not self.supports_merge:
            raise NotImplementedError(f"{type(self).__name__} cannot be merged into its base layer")
        if not self.merged:
            self.base_layer.weight += self.get_delta_weight().to(self.base_layer.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`, restoring the frozen base weight."""
        if self.merged:
            self.base_layer.weight -= self.get_delta_weight().to(self.base_layer.weight.dtype)
            self.merged = False
