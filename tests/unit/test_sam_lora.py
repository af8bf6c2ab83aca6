import pytest
import torch

from mmsam.adapters import LoRAConfig, LoRALinear, current_layout
from mmsam.errors import ConfigError
from mmsam.methods import MLESAM, SamLoRA

MODS = ["rgb", "depth", "event", "lidar"]


def _batch(b=2, size=128, mods=MODS, present=None):
    g = torch.Generator().manual_seed(0)
    return {
        "modalities": {m: torch.randn(b, 3, size, size, generator=g) for m in mods},
        "present": present or {m: torch.ones(b, dtype=torch.bool) for m in mods},
        "label": torch.randint(0, 5, (b, size, size), generator=g),
    }


@pytest.mark.parametrize("backbone", ["sam_vit_tiny", "sam2_hiera_micro"])
def test_forward_shapes_and_trainable_groups(backbone):
    torch.manual_seed(0)
    m = SamLoRA(5, MODS, backbone=backbone, img_size=128)
    out = m(_batch())
    assert out["logits"].shape == (2, 5, 128, 128)
    groups = m.param_groups()
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == {id(p) for ps in groups.values() for p in ps}
    assert groups["adapters"] and groups["heads"]
    assert all(isinstance(mod, LoRALinear) for n, mod in m.backbone.image_encoder.named_modules() if n.endswith("attn.qkv"))
    # every backbone weight other than LoRA is frozen
    assert all(not p.requires_grad for n, p in m.backbone.named_parameters() if "lora_" not in n)
    out["logits"].logsumexp(1).mean().backward()
    assert all(p.grad is not None for ps in groups.values() for p in ps)


def test_mean_fusion_respects_presence():
    torch.manual_seed(0)
    m = SamLoRA(5, MODS, backbone="sam_vit_tiny", img_size=128).eval()
    batch = _batch()
    batch["present"]["lidar"] = torch.tensor([True, False])
    with torch.no_grad():
        feats = m.forward_features(batch)[0]
        # sample 1 without LiDAR equals a batch that never had LiDAR
        no_lidar = {k: v for k, v in batch["modalities"].items() if k != "lidar"}
        ref = m.forward_features({"modalities": no_lidar, "present": {k: torch.ones(2, dtype=torch.bool) for k in no_lidar}})[0]
    assert torch.allclose(feats[1], ref[1], atol=1e-5)
    assert not torch.allclose(feats[0], ref[0], atol=1e-3)


def test_one_batched_encoder_pass_with_layout():
    m = SamLoRA(5, ["rgb", "depth"], backbone="sam_vit_tiny", img_size=128)
    seen = []
    m.backbone.image_encoder.register_forward_pre_hook(lambda mod, args: seen.append((args[0].shape[0], current_layout())))
    m(_batch(mods=["rgb", "depth"]))
    assert len(seen) == 1 and seen[0][0] == 4 and seen[0][1].names == ("rgb", "depth")


def test_errors_are_clear():
    with pytest.raises(ConfigError, match="unknown modality 'thermal'|thermal"):
        SamLoRA(5, ["rgb", "thermal"], backbone="sam_vit_tiny", img_size=128)
    with pytest.raises(ConfigError, match="unknown backbone"):
        SamLoRA(5, ["rgb"], backbone="sam_vit_q", img_size=128)
    with pytest.raises(ConfigError, match="matches no"):
        SamLoRA(5, ["rgb"], backbone="sam_vit_tiny", img_size=128, adapter=LoRAConfig(target_modules=["attn.qkvx"]))
    m = SamLoRA(5, ["rgb"], backbone="sam_vit_tiny", img_size=128)
    with pytest.raises(ConfigError, match="96x96.*img_size=128"):
        m(_batch(size=96, mods=["rgb"]))
    with pytest.raises(ConfigError, match="not built for"):
        m(_batch(mods=["rgb", "depth"]))


def test_sam_vit_b_lora_parameter_count():
    m = SamLoRA(25, MODS, backbone="sam_vit_b", img_size=256)
    groups = {k: sum(p.numel() for p in v) for k, v in m.param_groups().items()}
    # rank 4 on the q and v slices of 12 fused qkv (768 -> 3*768): 12 * 2 * (768*4 + 4*768)
    assert groups["adapters"] == 12 * 2 * (768 * 4 + 4 * 768)
    assert groups["fusion"] == 0


@pytest.mark.parametrize("method", [SamLoRA, MLESAM], ids=["sam_lora", "mlesam"])
def test_conv_lora_balance_loss_reaches_every_method(method):
    from mmsam.adapters import ConvLoRAConfig

    m = method(num_classes=5, modalities=["rgb", "depth"], backbone="sam_vit_tiny", img_size=128,
                      adapter=ConvLoRAConfig(r=2, target_modules=["attn.qkv"]))
    out = m(_batch(mods=["rgb", "depth"]))
    assert out["losses"]["balance"].ndim == 0 and torch.isfinite(out["losses"]["balance"])
    gate = [p for n, p in m.named_parameters() if "gate" in n and p.requires_grad]
    assert gate
    out["losses"]["balance"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in gate)
