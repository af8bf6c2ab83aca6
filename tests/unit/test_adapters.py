import pytest
import torch
from torch import nn

from mmsam.adapters import (
    LoRAConfig,
    LoRALinear,
    create_adapter_config,
    current_layout,
    inject_adapters,
    merge_adapters,
    modality_layout,
    unmerge_adapters,
)
from mmsam.errors import ConfigError


class Attn(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        return self.proj(self.qkv(x)[..., :8])


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attn()
        self.mlp = nn.Linear(8, 8)

    def forward(self, x):
        return self.mlp(self.attn(x))


class Net(nn.Module):
    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block() for _ in range(n))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_inject_by_suffix_regex_and_blocks():
    net = Net()
    assert inject_adapters(net, LoRAConfig(target_modules=["attn.qkv"])) == [f"blocks.{i}.attn.qkv" for i in range(3)]
    net = Net()
    names = inject_adapters(net, LoRAConfig(target_modules=r"blocks\.\d+\.(attn\.proj|mlp)", blocks=[0, 2]))
    assert names == ["blocks.0.attn.proj", "blocks.0.mlp", "blocks.2.attn.proj", "blocks.2.mlp"]
    assert isinstance(net.blocks[0].mlp, LoRALinear) and isinstance(net.blocks[1].mlp, nn.Linear)
    net = Net()
    names = inject_adapters(net, LoRAConfig(target_modules=["qkv", "proj"], exclude_modules=["blocks.1.attn.proj"]))
    assert "blocks.1.attn.proj" not in names and "blocks.1.attn.qkv" in names and len(names) == 5


def test_no_match_is_a_clear_error():
    with pytest.raises(ConfigError, match="matches no"):
        inject_adapters(Net(), LoRAConfig(target_modules=["attn.qkvz"]))


def test_zero_init_keeps_output_and_only_lora_trains():
    torch.manual_seed(0)
    net = Net()
    x = torch.randn(2, 5, 8)
    ref = net(x)
    net.requires_grad_(False)
    inject_adapters(net, LoRAConfig(r=2, parts=["q", "v"]))
    assert torch.allclose(net(x), ref)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    # q and v slices: 2 parts * (8*2 + 2*8)
    assert sum(p.numel() for p in net.blocks[0].attn.qkv.adapter_parameters()) == 2 * (16 + 16)


def test_parts_touch_only_their_slices():
    base = nn.Linear(4, 12)
    layer = LoRALinear(base, LoRAConfig(r=2, parts=["q", "v"]))
    for b in layer.lora.lora_B:
        nn.init.normal_(b.weight)
    x = torch.randn(3, 4)
    d = layer(x) - base(x)
    assert torch.all(d[:, 4:8] == 0)
    assert d[:, :4].abs().sum() > 0 and d[:, 8:].abs().sum() > 0


@pytest.mark.parametrize("parts,alpha", [(None, None), (["q", "v"], 8.0), (["k"], 2.0)])
def test_merge_unmerge_roundtrip(parts, alpha):
    torch.manual_seed(0)
    net = Net()
    net.requires_grad_(False)
    inject_adapters(net, LoRAConfig(r=2, alpha=alpha, parts=parts))
    for m in net.modules():
        if isinstance(m, LoRALinear):
            for b in m.lora.lora_B:
                nn.init.normal_(b.weight)
    x = torch.randn(2, 5, 8)
    y = net(x)
    w0 = net.blocks[0].attn.qkv.base_layer.weight.clone()
    assert merge_adapters(net) == 3
    assert not torch.equal(net.blocks[0].attn.qkv.base_layer.weight, w0)
    assert torch.allclose(net(x), y, atol=1e-5)
    unmerge_adapters(net)
    assert torch.allclose(net.blocks[0].attn.qkv.base_layer.weight, w0, atol=1e-6)
    assert torch.allclose(net(x), y, atol=1e-5)


def test_config_validation_and_registry():
    with pytest.raises(ValueError):
        LoRAConfig(r=0)
    with pytest.raises(ValueError):
        LoRAConfig(parts=["x"])
    with pytest.raises(ConfigError, match="unknown adapter type"):
        create_adapter_config("nope")
    with pytest.raises(ConfigError, match="unknown option"):
        create_adapter_config("lora", rank=3)
    assert create_adapter_config("lora", r=3).r == 3


def test_modality_layout_is_scoped():
    assert current_layout() is None
    with modality_layout(["rgb", "depth"]) as lay:
        assert current_layout() is lay and lay.num_modalities == 2
        a, b = lay.split(torch.arange(6))
        assert a.tolist() == [0, 1, 2] and b.tolist() == [3, 4, 5]
        with pytest.raises(RuntimeError):
            lay.split(torch.arange(5))
    assert current_layout() is None


def test_adapter_file_roundtrip_and_mismatch(tmp_path):
    from mmsam.adapters.io import load_trainable, read_metadata, save_trainable
    from mmsam.errors import CheckpointError

    torch.manual_seed(0)
    net = Net()
    net.requires_grad_(False)
    inject_adapters(net, LoRAConfig(r=2))
    for m in net.modules():
        if isinstance(m, LoRALinear):
            for b in m.lora.lora_B:
                nn.init.normal_(b.weight)
    path = tmp_path / "a.safetensors"
    n = save_trainable(net, path, config={"backbone": "x", "sha256": "abc"})
    assert n == sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert read_metadata(path) == {"backbone": "x", "sha256": "abc"}
    other = Net()
    other.load_state_dict({k.replace(".base_layer", ""): v for k, v in net.state_dict().items() if "lora_" not in k})
    other.requires_grad_(False)
    inject_adapters(other, LoRAConfig(r=2))
    x = torch.randn(2, 8)
    assert not torch.allclose(other(x), net(x))
    load_trainable(other, path)
    assert torch.allclose(other(x), net(x))
    wrong = Net()
    wrong.requires_grad_(False)
    inject_adapters(wrong, LoRAConfig(r=3))
    with pytest.raises(CheckpointError, match="a.safetensors.*shape mismatches"):
        load_trainable(wrong, path)
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_trainable(other, tmp_path / "bad.safetensors")
