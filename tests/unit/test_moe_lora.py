import pytest
import torch
from torch import nn

from mmsam.adapters import LoRAConfig, MoELoRAConfig, MoELoRALinear, inject_adapters, merge_adapters, modality_layout
from mmsam.backbones import create_backbone


def _randomise(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, MoELoRALinear):
            for expert in layer.experts.values():
                for b in expert.lora_B:
                    nn.init.normal_(b.weight, std=0.1)


@pytest.mark.parametrize("backbone", ["sam_vit_tiny", "sam2_hiera_micro"])
def test_batched_pass_equals_each_expert_alone(backbone):
    torch.manual_seed(0)
    enc = create_backbone(backbone, img_size=64).eval()
    enc.requires_grad_(False)
    names = ["rgb", "depth", "event"]
    inject_adapters(enc.image_encoder, MoELoRAConfig(expert=LoRAConfig(r=2, parts=["q", "v"]), experts=names))
    _randomise(enc)
    x = {n: torch.randn(2, 3, 64, 64) for n in names}
    with torch.no_grad(), modality_layout(names):
        batched = enc(torch.cat([x[n] for n in names]))
    for i, n in enumerate(names):
        with torch.no_grad(), modality_layout([n]):
            alone = enc(x[n])
        for lvl_b, lvl_a in zip(batched, alone):
            assert torch.allclose(lvl_b[2 * i : 2 * i + 2], lvl_a, atol=1e-5)
    # experts are distinct: the same image through another expert gives other features
    with torch.no_grad(), modality_layout(["depth"]):
        as_depth = enc(x["rgb"])
    assert not torch.allclose(as_depth[-1], batched[-1][:2], atol=1e-4)


def test_gradients_reach_only_the_experts_of_present_modalities():
    enc = create_backbone("sam_vit_tiny", img_size=64)
    enc.requires_grad_(False)
    inject_adapters(enc.image_encoder, MoELoRAConfig(expert=LoRAConfig(r=2, parts=["q", "v"]), experts=["rgb", "depth", "lidar"]))
    _randomise(enc)
    with modality_layout(["rgb", "lidar"]):
        enc(torch.randn(4, 3, 64, 64))[0].sum().backward()
    layer = enc.image_encoder.blocks[0].attn.qkv
    assert all(p.grad is not None for p in layer.experts["rgb"].parameters())
    assert all(p.grad is not None for p in layer.experts["lidar"].parameters())
    assert all(p.grad is None for p in layer.experts["depth"].parameters())
    assert layer.base_layer.weight.grad is None


def test_moe_lora_errors():
    layer = MoELoRALinear(nn.Linear(4, 12), MoELoRAConfig(expert=LoRAConfig(r=2, parts=["q", "v"]), experts=["a", "b"]))
    with pytest.raises(RuntimeError, match="modality layout"):
        layer(torch.randn(2, 4))
    with modality_layout(["a", "c"]), pytest.raises(RuntimeError, match=r"no MoE-LoRA expert for modalities \['c'\]"):
        layer(torch.randn(2, 4))
    with pytest.raises(NotImplementedError):
        merge_adapters(nn.Sequential(layer))
    with pytest.raises(ValueError):
        MoELoRAConfig(experts=["a", "a"])
    with pytest.raises(ValueError, match="expert names"):
        MoELoRALinear(nn.Linear(4, 4), MoELoRAConfig())
