"""The adapter family: every parameter-efficient module of every paper, injected by name."""
from mmsam.adapters.base import AdapterConfig, AdapterLayer
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
from mmsam.adapters.layout import ModalityLayout, current_layout, modality_layout
from mmsam.adapters.lora import LoRAConfig, LoRADelta, LoRALinear
from mmsam.adapters.moe_lora import MoELoRAConfig, MoELoRALinear

register_adapter("lora", config_cls=LoRAConfig, layer_cls=LoRALinear, delta_cls=LoRADelta)
register_adapter("moe_lora", config_cls=MoELoRAConfig, layer_cls=MoELoRALinear)
register_adapter("conv_lora", config_cls=ConvLoRAConfig, layer_cls=ConvLoRALinear, delta_cls=ConvLoRADelta)

__all__ = [
    "AdapterConfig", "AdapterLayer", "LoRAConfig", "LoRADelta", "LoRALinear", "MoELoRAConfig", "MoELoRALinear",
    "ModalityLayout",
    "adapter_layers", "create_adapter_config", "delta_class", "current_layout", "inject_adapters", "list_adapters",
    "merge_adapters", "modality_layout", "register_adapter", "target_module_names", "unmerge_adapters",
    "ConvLoRAConfig", "ConvLoRADelta", "ConvLoRALinear", "add_balance_loss", "collect_balance_losses",
]
