"""MoE-LoRA: one LoRA expert per modality on a frozen Linear (MLE-SAM, arXiv 2412.04220).

The modalities of a batch go through the frozen encoder together, stacked modality-outermost;
each expert updates only its modality's contiguous chunk of the input, read from the current
:class:`~mmsam.adapters.layout.ModalityLayout`. Each expert is the update of any registered
LoRA-family adapter (plain LoRA on the q and v slices of the fused qkv as in MLE-SAM Eq. 5,
MLE-SAM Eq. 5, or e.g. Conv-LoRA), so a modality's features equal a
forward with its own adapter alone, while the encoder still runs once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from mmsam.adapters.base import AdapterConfig, AdapterLayer
from mmsam.adapters.layout import layout_for
from mmsam.adapters.lora import LoRAConfig


@dataclass
class MoELoRAConfig(AdapterConfig):
    """Per-modality experts: ``expert`` is each expert's adapter config, ``experts`` their names.

    Where to inject (``target_modules``, ``exclude_modules``, ``blocks``) is this config's own.
    """

    adapter_type: ClassVar[str] = "moe_lora"
    modality_field: ClassVar[str] = "experts"
    expert: LoRAConfig = field(default_factory=lambda: LoRAConfig(r=32, parts=["q", "v"]))
    experts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(set(self.experts)) != len(self.experts):
            raise ValueError(f"expert names must be unique, got {self.experts}")


class MoELoRALinear(AdapterLayer):
    """``y_m = W x_m + b + s · B_m A_m x_m`` for the chunk ``x_m`` of each modality ``m``."""

    adapter_layer_names = ("experts",)
    supports_merge = False  # one weight per modality cannot fold into the single shared W

    def __init__(self, base_layer: nn.Linear, config: MoELoRAConfig) -> None:
        super().__init__(base_layer)
        if not config.experts:
            raise ValueError("MoE-LoRA needs expert names (the modalities); none were given")
        from mmsam.adapters.inject import delta_class

        delta = delta_class(config.expert)
        self.experts = nn.ModuleDict(
            {name: delta(base_layer.in_features, base_layer.out_features, config.expert) for name in config.experts}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        layout = layout_for(self.experts, "MoE-LoRA", "expert")
        deltas = [self.experts[name](chunk) for name, chunk in zip(layout.names, layout.split(x))]
        return y + torch.cat(deltas, dim=0)
