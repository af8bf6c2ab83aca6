"""Merged export: LoRA folded into an official-format checkpoint that the official builders load,
with the same encoder output as the unmerged adapted model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmsam.adapters import LoRAConfig
from mmsam.backbones import create_backbone
from mmsam.deploy.merge import write_merged
from mmsam.errors import ConfigError
from mmsam.methods import MLESAM, MemorySAM, SamLoRA


def _randomise_lora(method: torch.nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in method.named_parameters():
            if "lora" in name:
                p.normal_(0, 0.2)


@pytest.mark.parametrize("backbone,suffix", [("sam_vit_tiny", ".pth"), ("sam2_hiera_micro", ".pt")])
def test_merged_checkpoint_equals_the_adapted_encoder(backbone: str, suffix: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = tmp_path / f"base{suffix}"
    if suffix == ".pth":  # saved as Meta ships them: SAM flat, SAM 2 the whole model under "model"
        torch.save(create_backbone(backbone, img_size=64).state_dict(), base)
    else:
        torch.save({"model": create_backbone(backbone, img_size=64, with_memory=True).sam2_model.state_dict()}, base)
    method = SamLoRA(3, ["rgb"], backbone=backbone, img_size=64, checkpoint=str(base), adapter=LoRAConfig(r=2, parts=["q", "v"])).eval()
    _randomise_lora(method)
    out = write_merged(method, base, tmp_path / f"merged{suffix}")
    merged = create_backbone(backbone, img_size=64, checkpoint=str(out)).eval()  # official modules, strict load
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = [f for f in method.backbone(x)]
        got = merged(x)
        plain = create_backbone(backbone, img_size=64, checkpoint=str(base)).eval()(x)
    for w, g, p in zip(want, got, plain):
        assert torch.allclose(w, g, atol=1e-5)
        assert not torch.allclose(w, p, atol=1e-3)  # the LoRA did change the encoder


def test_official_builder_loads_the_merged_vit_b(tmp_path: Path) -> None:
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    base = tmp_path / "sam_vit_b_random.pth"
    torch.save(create_backbone("sam_vit_b", img_size=1024).state_dict(), base)
    method = SamLoRA(3, ["rgb"], backbone="sam_vit_b", img_size=256, checkpoint=str(base), adapter=LoRAConfig(r=4, parts=["q", "v"]))
    _randomise_lora(method)
    out = write_merged(method, base, tmp_path / "merged.pth")
    sam = sam_model_registry["vit_b"](checkpoint=str(out))  # unchanged official builder, strict load
    layer = method.backbone.image_encoder.blocks[3].attn.qkv
    assert torch.allclose(sam.image_encoder.blocks[3].attn.qkv.weight, layer.base_layer.weight + layer.get_delta_weight(), atol=1e-6)
    assert sam.image_encoder.pos_embed.shape[1] == 64  # the official 1024 px embedding, not our resized one


def test_unmergeable_adapters_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base = tmp_path / "base.pt"
    torch.save({"model": create_backbone("sam2_hiera_micro", img_size=64, with_memory=True).sam2_model.state_dict()}, base)
    moe = MLESAM(3, ["rgb", "depth"], backbone="sam2_hiera_micro", img_size=64, checkpoint=str(base), adapter=LoRAConfig(r=2, parts=["q", "v"]))
    with pytest.raises(ConfigError, match="MoELoRALinear cannot be merged"):
        write_merged(moe, base, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    mem = MemorySAM(3, ["rgb", "depth"], backbone="sam2_hiera_micro", img_size=64, checkpoint=str(base))
    _randomise_lora(mem)
    write_merged(mem, base, tmp_path / "memorysam.pt")  # one shared LoRA: mergeable
    assert (tmp_path / "memorysam.pt").is_file()
