"""MFNet: SE unit, Deep Fusion Module, UNetFormer decoder, the method (tiny SAM)."""
from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import nn

from mmsam.adapters import LoRAConfig, MMAdapterLayer, MMLoRAConfig, MMLoRALinear, MoELoRAConfig, MoELoRALinear
from mmsam.backbones import create_backbone
from mmsam.errors import ConfigError
from mmsam.fusion import DeepFusionModule, SEUnit
from mmsam.heads import UNetFormerDecoder
from mmsam.methods import MFNet

MODS = ["rgb", "depth"]


def _batch(b: int = 2, size: int = 64, mods=MODS, present=None) -> dict:
    torch.manual_seed(0)
    out = {"modalities": {m: torch.randn(b, 3, size, size) for m in mods}, "label": torch.zeros(b, size, size, dtype=torch.long)}
    if present is not None:
        out["present"] = present
    return out


def test_se_unit_reweights_channels_only():
    se = SEUnit(64)
    assert se.fc1.out_channels == 4  # reduction 16
    x = torch.rand(2, 64, 8, 8) + 0.1
    ratio = se(x) / x
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-6)  # one weight per channel
    assert bool((ratio > 0).all() and (ratio < 1).all())


def test_dfm_pyramid_shapes_norms_and_presence():
    dfm = DeepFusionModule(["irrg", "dsm"], 256).eval()
    assert isinstance(dfm.pyramids["irrg"].up4[1], LayerNorm2d) and isinstance(dfm.pyramids["dsm"].up4[1], nn.BatchNorm2d)
    assert isinstance(dfm.pyramids["irrg"].down32, nn.MaxPool2d)
    levels = torch.randn(2, 2, 256, 16, 16)
    fused = dfm(levels, ["irrg", "dsm"], torch.ones(2, 2))
    assert [tuple(f.shape) for f in fused] == [(2, 256, s, s) for s in (64, 32, 16, 8)]
    # the sum of each modality's SE-weighted pyramid; an absent modality adds nothing for that sample
    only_irrg = dfm(levels[:1], ["irrg"], torch.ones(1, 2))
    only_dsm = dfm(levels[1:], ["dsm"], torch.ones(1, 2))
    masked = dfm(levels, ["irrg", "dsm"], torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    for f, a, b, m in zip(fused, only_irrg, only_dsm, masked):
        assert torch.allclose(f, a + b, atol=1e-5)
        assert torch.allclose(m[0], f[0], atol=1e-5) and torch.allclose(m[1], a[1], atol=1e-5)
    for norm, kind in (("layer", LayerNorm2d), ("batch", nn.BatchNorm2d)):
        assert isinstance(DeepFusionModule(["irrg", "dsm"], 32, norm=norm).pyramids["dsm"].up4[1], kind)
    with pytest.raises(ConfigError, match="dfm_norm"):
        DeepFusionModule(["irrg"], 32, norm="group")  # type: ignore[arg-type]


@pytest.mark.parametrize("grid", [16, 4])  # the paper's 1/16 grid, and a tiny one padded to the window
def test_unetformer_decoder_shapes(grid):
    dec = UNetFormerDecoder(6, (32,) * 4, decode_channels=16, window_size=8, num_heads=8)
    feats = [torch.randn(2, 32, grid * 4 // s, grid * 4 // s) for s in (1, 2, 4, 8)]
    assert dec(feats, (grid * 16, grid * 16)).shape == (2, 6, grid * 16, grid * 16)
    flat = UNetFormerDecoder(6, (32,) * 4, decode_channels=16, skips=False)
    assert flat([torch.randn(2, 32, grid, grid)], (grid * 16, grid * 16)).shape == (2, 6, grid * 16, grid * 16)
    out = flat([torch.randn(1, 32, grid, grid)], (grid * 16, grid * 16))
    out.sum().backward()
    assert all(p.grad is not None for p in flat.parameters())


def test_window_attention_is_local_to_its_window():
    from mmsam.heads.unetformer import GlobalLocalAttention

    gla = GlobalLocalAttention(16, 2, 4).eval()
    x = torch.randn(1, 16, 8, 8)
    y = x.clone()
    y[..., 4:, 4:] += 1  # change only the bottom-right window
    with torch.no_grad():
        a, b = gla._windows(x), gla._windows(y)
    assert torch.equal(a[..., :4, :4], b[..., :4, :4]) and not torch.allclose(a[..., 4:, 4:], b[..., 4:, 4:])


def test_dfm_and_decoder_with_sams_unused_parts_make_table_vi_6_22_m():
    """Table VI's "+6.22 M": DFM + decoder + SAM's prompt encoder and mask decoder (MFNet paper Sec. III, official UNetFormer_MMSAM.py)."""
    dfm = DeepFusionModule(["irrg", "dsm"], 256)
    dec = UNetFormerDecoder(6)
    with torch.device("meta"):
        sam = create_backbone("sam_vit_b", img_size=256)
    n = sum(p.numel() for m in (dfm, dec, sam.prompt_encoder, sam.mask_decoder) for p in m.parameters())
    assert n == 6_222_798  # the official decoder has no bias in the FRH channel attention and the classifier


@pytest.mark.parametrize("adapter", [None, MMLoRAConfig()], ids=["mm_adapter", "mm_lora"])
def test_mfnet_forward_any_subset_and_gradients(adapter):
    model = MFNet(num_classes=5, modalities=MODS, backbone="sam_vit_tiny", img_size=64, adapter=adapter)
    layer_cls = MMAdapterLayer if adapter is None else MMLoRALinear
    layers = [m for m in model.backbone.image_encoder.modules() if isinstance(m, layer_cls)]
    assert layers and all(set(getattr(m, "adapters", getattr(m, "lora", {}))) == set(MODS) for m in layers)
    assert not hasattr(model.backbone, "mask_decoder") and not hasattr(model.backbone, "prompt_encoder")
    out = model(_batch())
    assert out["logits"].shape == (2, 5, 64, 64)
    out["logits"].logsumexp(1).mean().backward()
    groups = model.param_groups()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups.values() for p in g} == trainable
    assert all(p.grad is not None for g in groups.values() for p in g)
    assert all(p.grad is None for p in model.backbone.parameters() if not p.requires_grad)
    model.eval()
    with torch.no_grad():
        for mods in (["rgb"], ["depth"]):
            assert model(_batch(mods=mods))["logits"].shape == (2, 5, 64, 64)
        # a modality absent for one sample: that sample equals the one-modality forward
        masked = model(_batch(present={"rgb": torch.tensor([True, True]), "depth": torch.tensor([True, False])}))
        alone = model(_batch(mods=["rgb"]))
        full = model(_batch())
        assert torch.allclose(masked["logits"][1], alone["logits"][1], atol=1e-4)
        assert torch.allclose(masked["logits"][0], full["logits"][0], atol=1e-4)


def test_mfnet_without_dfm_and_other_adapters():
    model = MFNet(4, MODS, backbone="sam_vit_tiny", img_size=64, dfm=False)
    assert model.dfm is None and model.param_groups()["fusion"] == []
    assert model(_batch())["logits"].shape == (2, 4, 64, 64)
    shared = MFNet(4, MODS, backbone="sam_vit_tiny", img_size=64, adapter=LoRAConfig(r=2, parts=["q", "v"]))
    assert shared(_batch())["logits"].shape == (2, 4, 64, 64)
    moe = MFNet(4, MODS, backbone="sam_vit_tiny", img_size=64, adapter=MoELoRAConfig(expert=LoRAConfig(r=2, parts=["q", "v"])))
    assert all(set(m.experts) == set(MODS) for m in moe.modules() if isinstance(m, MoELoRALinear))


def test_mfnet_config_errors():
    with pytest.raises(ConfigError, match="SAM ViT"):
        MFNet(4, MODS, backbone="sam2_hiera_micro", img_size=64)
    with pytest.raises(ConfigError, match="streams"):
        MFNet(4, MODS, backbone="sam_vit_tiny", img_size=64, adapter=MMLoRAConfig(streams=["rgb", "thermal"]))
    model = MFNet(4, MODS, backbone="sam_vit_tiny", img_size=64)
    with pytest.raises(ConfigError, match="img_size"):
        model(_batch(size=32))
