"""SAM (v1) backbones: official modules, any image size, official .pth files."""
import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import get_rel_pos

from mmsam.backbones import SamBackbone, create_backbone
from mmsam.backbones.checkpoints import resize_pos_embed, resize_rel_pos
from mmsam.errors import ConfigError

# Exact counts of the official builders (segment_anything/build_sam.py, random weights)
PARAMS = {  # name: (image encoder, mask decoder, prompt encoder, total)
    "sam_vit_b": (89_670_912, 4_058_340, 6_220, 93_735_472),
    "sam_vit_l": (308_278_272, 4_058_340, 6_220, 312_342_832),
    "sam_vit_h": (637_026_048, 4_058_340, 6_220, 641_090_608),
}
GLOBAL_BLOCKS = {"sam_vit_b": [2, 5, 8, 11], "sam_vit_l": [5, 11, 17, 23], "sam_vit_h": [7, 15, 23, 31]}


def count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", list(PARAMS))
def test_official_sizes_match_the_official_architecture(name):
    with torch.device("meta"):  # shapes only: ViT-H builds in 0.05 s instead of 8 s
        b = create_backbone(name)
    enc, dec, prompt, total = PARAMS[name]
    assert (count(b.image_encoder), count(b.mask_decoder), count(b.prompt_encoder), count(b)) == (enc, dec, prompt, total)
    assert [i for i, blk in enumerate(b.image_encoder.blocks) if blk.window_size == 0] == GLOBAL_BLOCKS[name]
    assert {blk.window_size for blk in b.image_encoder.blocks} == {0, 14}
    assert (b.family, b.img_size, b.embed_dim, b.feature_strides) == ("sam", 1024, 256, (16,))
    assert b.mask_decoder.num_multimask_outputs == 3
    assert not b.training


def test_vit_b_at_512_has_a_32x32_grid_everywhere():
    with torch.device("meta"):
        b = create_backbone("sam_vit_b", img_size=512)
    enc = b.image_encoder
    assert enc.pos_embed.shape == (1, 32, 32, 768)
    assert enc.blocks[2].attn.rel_pos_h.shape == (63, 64)  # global: 2*32-1
    assert enc.blocks[0].attn.rel_pos_h.shape == (27, 64)  # window 14: unchanged
    assert b.prompt_encoder.image_embedding_size == (32, 32)
    assert b.prompt_encoder.input_image_size == (512, 512)


def test_tiny_forward_shapes_and_attributes():
    b = create_backbone("sam_vit_tiny")
    assert isinstance(b, SamBackbone)
    assert (b.family, b.img_size, b.embed_dim, b.feature_strides, b.checkpoint) == ("sam", 128, 32, (16,), None)
    out = b(torch.randn(2, 3, 128, 128))
    assert isinstance(out, list) and len(out) == 1
    assert out[0].shape == (2, 32, 8, 8)
    b256 = create_backbone("sam_vit_tiny", img_size=256)
    assert b256(torch.randn(1, 3, 256, 256))[0].shape == (1, 32, 16, 16)


def test_tiny_decoder_consumes_the_embedding_with_three_multimask_outputs():
    b = create_backbone("sam_vit_tiny")
    emb = b(torch.randn(1, 3, 128, 128))[0]
    sparse, dense = b.prompt_encoder(points=None, boxes=None, masks=None)
    masks, iou = b.mask_decoder(
        image_embeddings=emb, image_pe=b.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True,
    )
    assert masks.shape == (1, 3, 32, 32) and iou.shape == (1, 3)


def test_wrong_input_size_and_bad_img_size_are_clear_errors():
    b = create_backbone("sam_vit_tiny")
    with pytest.raises(ValueError, match="built for 128x128"):
        b(torch.randn(1, 3, 256, 256))
    with pytest.raises(ConfigError, match="multiple of 16"):
        create_backbone("sam_vit_tiny", img_size=100)
    with pytest.raises(ConfigError, match="multiple of 16"):
        create_backbone("sam_vit_h", img_size=1000)  # refused before anything is built


def test_forward_intermediates_returns_block_outputs_feeding_the_neck():
    b = create_backbone("sam_vit_tiny")
    x = torch.randn(2, 3, 128, 128)
    feats, inter = b.forward_intermediates(x, [0, -1])
    assert [t.shape for t in inter] == [(2, 32, 8, 8), (2, 32, 8, 8)]
    torch.testing.assert_close(feats[0], b(x)[0])
    torch.testing.assert_close(b.image_encoder.neck(inter[1]), feats[0])  # last block -> neck = embedding
    assert not b.image_encoder.blocks[0]._forward_hooks  # hooks removed
    with pytest.raises(ConfigError, match="out of range"):
        b.forward_intermediates(x, [2])


def test_tiny_checkpoint_round_trip(tiny_sam):
    b = create_backbone("sam_vit_tiny", checkpoint=str(tiny_sam.path))
    assert b.checkpoint == str(tiny_sam.path)
    sd = b.state_dict()
    assert sd.keys() == tiny_sam.state_dict.keys()
    assert all(torch.equal(sd[k], v) for k, v in tiny_sam.state_dict.items())


def test_tiny_checkpoint_resized_to_another_img_size(tiny_sam):
    b = create_backbone("sam_vit_tiny", img_size=256, checkpoint=tiny_sam.path)
    src = tiny_sam.state_dict
    enc = b.image_encoder
    assert enc.pos_embed.shape == (1, 16, 16, 32)
    torch.testing.assert_close(enc.pos_embed.data, resize_pos_embed(src["image_encoder.pos_embed"], (16, 16)))
    assert enc.blocks[1].attn.rel_pos_h.shape == (31, 16)  # global block: 2*16-1
    torch.testing.assert_close(enc.blocks[1].attn.rel_pos_w.data,
                               resize_rel_pos(src["image_encoder.blocks.1.attn.rel_pos_w"], 31))
    assert torch.equal(enc.blocks[0].attn.rel_pos_h, src["image_encoder.blocks.0.attn.rel_pos_h"])  # window block
    assert torch.equal(enc.blocks[0].attn.qkv.weight, src["image_encoder.blocks.0.attn.qkv.weight"])


def test_resize_helpers_are_bicubic_and_linear():
    pos = torch.randn(1, 8, 8, 5)
    expect = F.interpolate(pos.permute(0, 3, 1, 2), size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(resize_pos_embed(pos, (4, 4)), expect)
    # the same table SAM's own attention interpolates on the fly (get_rel_pos) for a 16-token grid
    table = torch.randn(27, 4)
    rh = get_rel_pos(16, 16, table)  # (16, 16, 4): rh[i, j] = resized[i - j + 15]
    official = torch.cat([rh[0].flip(0), rh[1:, 0]])
    torch.testing.assert_close(resize_rel_pos(table, 31), official)


def test_vit_b_official_layout_round_trip(vit_b):
    b = create_backbone("sam_vit_b", checkpoint=vit_b.path)
    sd = b.state_dict()
    assert len(vit_b.state_dict) == 314 and sd.keys() == vit_b.state_dict.keys()
    assert {k.split(".")[0] for k in sd} == {"image_encoder", "prompt_encoder", "mask_decoder"}
    assert all(torch.equal(sd[k], v) for k, v in vit_b.state_dict.items())


def test_vit_b_at_512_loads_a_1024_checkpoint_resized(vit_b):
    b = create_backbone("sam_vit_b", img_size=512, checkpoint=vit_b.path)
    src = vit_b.state_dict
    enc = b.image_encoder
    torch.testing.assert_close(enc.pos_embed.data, resize_pos_embed(src["image_encoder.pos_embed"], (32, 32)))
    for i in GLOBAL_BLOCKS["sam_vit_b"]:
        assert enc.blocks[i].attn.rel_pos_h.shape == (63, 64)
        torch.testing.assert_close(enc.blocks[i].attn.rel_pos_h.data,
                                   resize_rel_pos(src[f"image_encoder.blocks.{i}.attn.rel_pos_h"], 63))
    assert torch.equal(enc.blocks[0].attn.rel_pos_h, src["image_encoder.blocks.0.attn.rel_pos_h"])
    assert torch.equal(b.mask_decoder.iou_token.weight, src["mask_decoder.iou_token.weight"])
    with torch.no_grad():
        out = b(torch.randn(1, 3, 512, 512))
    assert len(out) == 1 and out[0].shape == (1, 256, 32, 32)
    assert torch.isfinite(out[0]).all()
