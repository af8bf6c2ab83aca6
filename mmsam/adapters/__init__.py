"""The adapter family: every parameter-efficient module of every paper, injected by name."""
from torch import nn

from mmsam.adapters.base import AdapterConfig, AdapterLayer, with_modalities
from mmsam.adapters.conv_lora import ConvLoRAConfig, ConvLoRADelta, ConvLoRALinear, add_balance_loss, collect_balance_losses
from mmsam.adapters.inject import (
    adapter_layers,
    create_adapter_config,
    delta_class,
    inject_adapters,
    list_adapters,
    merge_adapters,
    register_adapter,
    target_module_names,
    unmerge_adapters,
)
from mmsam.adapters.layout import ModalityLayout, current_layout, layout_for, modality_layout, use_layout
from mmsam.adapters.lora import LoRAConfig, LoRADelta, LoRALinear
from mmsam.adapters.moe_lora import MoELoRAConfig, MoELoRALinear
from mmsam.adapters.mm_adapter import MMAdapterConfig, MMAdapterLayer
from mmsam.adapters.mm_lora import MMLoRAConfig, MMLoRALinear

register_adapter("lora", config_cls=LoRAConfig, layer_cls=LoRALinear, delta_cls=LoRADelta)
register_adapter("moe_lora", config_cls=MoELoRAConfig, layer_cls=MoELoRALinear)
register_adapter("conv_lora", config_cls=ConvLoRAConfig, layer_cls=ConvLoRALinear, delta_cls=ConvLoRADelta)
register_adapter("mm_adapter", config_cls=MMAdapterConfig, layer_cls=MMAdapterLayer, base_types=(nn.Module,))
register_adapter("mm_lora", config_cls=MMLoRAConfig, layer_cls=MMLoRALinear)

__all__ = [
    "AdapterConfig", "AdapterLayer", "LoRAConfig", "LoRADelta", "LoRALinear", "MoELoRAConfig", "MoELoRALinear",
    "ModalityLayout", "layout_for", "with_modalities",
    "adapter_layers", "create_adapter_config", "delta_class", "current_layout", "inject_adapters", "list_adapters",
    "merge_adapters", "modality_layout", "use_layout", "register_adapter", "target_module_names", "unmerge_adapters",
    "ConvLoRAConfig", "ConvLoRADelta", "ConvLoRALinear", "add_balance_loss", "collect_balance_losses",
    "MMAdapterConfig", "MMAdapterLayer", "MMLoRAConfig", "MMLoRALinear",
]
