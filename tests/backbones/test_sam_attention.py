"""SDPA attention in SAM's ViT equals the official hand-written ``Attention`` (relative positions included)."""
from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

from mmsam.backbones import create_backbone
from mmsam.backbones.sam_attention import SdpaAttention, set_sam_attention
from mmsam.errors import ConfigError


@pytest.mark.parametrize(
    ("dim", "heads", "size", "table", "rel_pos"),
    [
        (32, 2, (4, 4), 7, True),  # a window block: table 2·4 − 1
        (48, 3, (6, 5), 11, True),  # non-square grid
        (32, 2, (8, 8), 9, True),  # table shorter than 2·8 − 1: get_rel_pos interpolates it
        (32, 4, (5, 5), None, False),
    ],
)
def test_sdpa_equals_official(dim: int, heads: int, size: tuple[int, int], table: int | None, rel_pos: bool) -> None:
    torch.manual_seed(0)
    official = Attention(dim, heads, use_rel_pos=rel_pos, input_size=(table, table) if rel_pos else None)
    if rel_pos:  # the constructor sizes the tables (2·n − 1) for n = table; shrink them to `table` rows
        official.rel_pos_h = torch.nn.Parameter(torch.randn(table, dim // heads))
        official.rel_pos_w = torch.nn.Parameter(torch.randn(table, dim // heads))
    ours = copy.deepcopy(official)
    assert set_sam_attention(ours, "sdpa") == 1 and type(ours) is SdpaAttention
    x = torch.randn(2, *size, dim)
    xo, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    yo, ys = official(xo), ours(xs)
    torch.testing.assert_close(ys, yo, atol=1e-5, rtol=0)
    w = torch.randn_like(yo)
    (yo * w).sum().backward()
    (ys * w).sum().backward()
    torch.testing.assert_close(xs.grad, xo.grad, atol=1e-5, rtol=1e-5)
    for (name, po), ps in zip(official.named_parameters(), ours.parameters()):
        torch.testing.assert_close(ps.grad, po.grad, atol=1e-4, rtol=1e-5, msg=name)


def test_backbone_uses_sdpa_and_switches_back() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("sam_vit_tiny", img_size=64)
    blocks = backbone.image_encoder.blocks
    assert all(type(b.attn) is Attention for b in blocks)  # the official module by default (faster on CPU)
    keys = list(backbone.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for b in blocks:  # non-zero relative positions (SAM initialises them to zero)
            b.attn.rel_pos_h.normal_()
            b.attn.rel_pos_w.normal_()
        y_official = backbone(x)[0]
        assert set_sam_attention(backbone, "sdpa") == len(blocks)
        assert all(type(b.attn) is SdpaAttention for b in blocks)
        y_sdpa = backbone(x)[0]
    assert list(backbone.state_dict()) == keys
    torch.testing.assert_close(y_sdpa, y_official, atol=1e-5, rtol=0)


def test_unknown_impl() -> None:
    with pytest.raises(ConfigError, match="SAM attention must be one of sdpa, official, got 'flash'"):
        set_sam_attention(torch.nn.Linear(2, 2), "flash")  # type: ignore[arg-type]
