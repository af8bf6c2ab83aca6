"""SAM 2 / 2.1 backbones: official sam2 modules built by build_sam2, FPN levels, official .pt files."""
import pytest
import torch

from mmsam.backbones import Sam2Backbone, create_backbone
from mmsam.errors import ConfigError

# Exact counts of the official builder (sam2/build_sam.py, random weights): image encoder, trunk, neck, memory attention, memory encoder,
# mask decoder, prompt encoder, full SAM2Base (2.1); SAM 2.0 differs only outside the image path
PARAMS = {
    "t": (27_219_136, 26_849_472, 369_664, 38_962_498),
    "s": (34_316_992, 33_947_328, 369_664, 46_060_354),
    "b+": (69_106_816, 68_675_712, 431_104, 80_850_178),
    "l": (212_703_280, 212_149_296, 553_984, 224_446_642),
}
FILE_KEYS = {"t": 471, "s": 519, "b+": 615, "l": 903}


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_official_sizes_match_the_official_architecture():
    for size, (enc, trunk, neck, total) in PARAMS.items():
        for version, prefix in (("2.1", "sam2.1_hiera_"), ("2.0", "sam2_hiera_")):
            b = create_backbone(prefix + size, with_memory=True)
            m = b.sam2_model
            assert (b.family, b.version, b.img_size, b.embed_dim, b.feature_strides) == ("sam2", version, 1024, 256, (4, 8, 16))
            assert (count(b.image_encoder), count(b.image_encoder.trunk), count(b.image_encoder.neck)) == (enc, trunk, neck)
            assert (count(m.memory_attention), count(m.memory_encoder)) == (5_922_304, 1_384_608)
            assert (count(b.mask_decoder), count(b.prompt_encoder)) == (4_215_109, 6_220)
            if version == "2.1":
                assert count(b) == count(m) == total
                assert len(m.state_dict()) == FILE_KEYS[size]
            else:  # no no_obj_embed_spatial (64) nor obj_ptr_tpos_proj (256*64+64)
                assert count(m) == total - 64 - 256 * 64 - 64
            assert b.mask_decoder.num_multimask_outputs == 3 and hasattr(b.mask_decoder, "conv_s0")
            assert not b.training


def test_micro_forward_returns_three_levels_at_strides_4_8_16():
    b = create_backbone("sam2_hiera_micro")
    assert isinstance(b, Sam2Backbone)
    assert (b.family, b.img_size, b.embed_dim, b.feature_strides, b.checkpoint) == ("sam2", 128, 32, (4, 8, 16), None)
    out = b(torch.randn(2, 3, 128, 128))
    assert [t.shape for t in out] == [(2, 32, 32, 32), (2, 32, 16, 16), (2, 32, 8, 8)]
    out = b(torch.randn(1, 3, 128, 192))  # any multiple of 32 (Hiera interpolates its position embedding)
    assert [t.shape[-2:] for t in out] == [(32, 48), (16, 24), (8, 12)]
    with pytest.raises(ValueError, match="multiples of 32"):
        b(torch.randn(1, 3, 128, 100))


def test_img_size_must_be_a_multiple_of_32():
    b = create_backbone("sam2_hiera_micro", img_size=256)
    assert b.img_size == 256 and b.prompt_encoder.image_embedding_size == (16, 16)
    assert b(torch.randn(1, 3, 256, 256))[-1].shape == (1, 32, 16, 16)
    for name in ("sam2_hiera_micro", "sam2.1_hiera_l"):
        with pytest.raises(ConfigError, match="multiple of 32"):
            create_backbone(name, img_size=112)


def test_without_memory_only_the_image_path_is_kept():
    b = create_backbone("sam2_hiera_micro")
    full = create_backbone("sam2_hiera_micro", with_memory=True)
    assert b.sam2_model is None and b.memory_attention is None and b.memory_encoder is None
    assert {n.split(".")[0] for n, _ in b.named_parameters()} == {"image_encoder", "prompt_encoder", "mask_decoder", "no_mem_embed"}
    image_path = count(b.image_encoder) + count(b.prompt_encoder) + count(b.mask_decoder) + b.no_mem_embed.numel()
    assert count(b) == image_path
    assert count(full) == count(full.sam2_model) > image_path
    assert full.memory_attention is full.sam2_model.memory_attention
    assert full.mask_decoder is full.sam2_model.sam_mask_decoder and full.no_mem_embed is full.sam2_model.no_mem_embed


def test_micro_decoder_consumes_the_levels_with_high_res_features():
    b = create_backbone("sam2_hiera_micro")
    feats = b(torch.randn(1, 3, 128, 128))
    dec = b.mask_decoder
    sparse, dense = b.prompt_encoder(points=None, boxes=None, masks=None)
    masks, iou, _, obj = dec(
        image_embeddings=feats[2] + b.no_mem_embed.reshape(1, -1, 1, 1), image_pe=b.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True, repeat_image=False,
        high_res_features=[dec.conv_s0(feats[0]), dec.conv_s1(feats[1])],
    )
    assert masks.shape == (1, 3, 32, 32) and iou.shape == (1, 3) and obj.shape == (1, 1)


def test_micro_memory_modules_run_a_short_video():
    """The shrunk memory attention / encoder must fit the 32-d decoder: three frames through track_step."""
    m = create_backbone("sam2_hiera_micro", with_memory=True).sam2_model
    output = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    first_mask = torch.zeros(1, 1, 128, 128)
    first_mask[..., 20:60, 30:90] = 1
    with torch.no_grad():
        for f in range(3):
            _, feats, pos, sizes = m._prepare_backbone_features(m.forward_image(torch.randn(1, 3, 128, 128)))
            out = m.track_step(f, f == 0, feats, pos, sizes, None, first_mask if f == 0 else None, output, 3)
            output["cond_frame_outputs" if f == 0 else "non_cond_frame_outputs"][f] = out
    assert out["pred_masks"].shape == (1, 1, 32, 32)
    assert out["maskmem_features"].shape == (1, 16, 8, 8)
    assert torch.isfinite(out["pred_masks"]).all()


def test_forward_intermediates_returns_hiera_block_outputs():
    b = create_backbone("sam2_hiera_micro")
    x = torch.randn(2, 3, 128, 128)
    levels, inter = b.forward_intermediates(x, [0, 3, -1])
    assert [t.shape for t in inter] == [(2, 16, 32, 32), (2, 64, 8, 8), (2, 128, 4, 4)]
    for a, c in zip(levels, b(x)):
        torch.testing.assert_close(a, c)
    torch.testing.assert_close(b.image_encoder.neck.convs[3](inter[0]), levels[0])  # stride 4 = lateral 1x1 conv


def test_hiera_t_official_layout_round_trip(hiera_t):
    assert len(hiera_t.state_dict) == 471
    img = create_backbone("sam2.1_hiera_t", checkpoint=hiera_t.path)
    assert img.checkpoint == str(hiera_t.path)
    sd = img.state_dict()
    rename = {"sam_prompt_encoder.": "prompt_encoder.", "sam_mask_decoder.": "mask_decoder."}
    loaded = 0
    for k, v in hiera_t.state_dict.items():
        mk = next((new + k[len(old):] for old, new in rename.items() if k.startswith(old)), k)
        if mk in sd:
            assert torch.equal(sd[mk], v), k
            loaded += 1
    assert loaded == len(sd) == 162 + 148 + 1  # image encoder + decoder/prompt + no_mem_embed
    full = create_backbone("sam2.1_hiera_t", checkpoint=hiera_t.path, with_memory=True)
    fsd = full.sam2_model.state_dict()
    assert fsd.keys() == hiera_t.state_dict.keys()
    assert all(torch.equal(fsd[k], v) for k, v in hiera_t.state_dict.items())


def test_hiera_t_at_512_loads_the_1024_checkpoint_unchanged(hiera_t):
    b = create_backbone("sam2.1_hiera_t", img_size=512, checkpoint=hiera_t.path)
    assert torch.equal(b.image_encoder.trunk.pos_embed, hiera_t.state_dict["image_encoder.trunk.pos_embed"])
    with torch.no_grad():
        out = b(torch.randn(1, 3, 512, 512))
    assert [t.shape for t in out] == [(1, 256, 128, 128), (1, 256, 64, 64), (1, 256, 32, 32)]


def test_build_survives_a_cleared_global_hydra():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()  # e.g. another library's hydra app ran before
    assert create_backbone("sam2_hiera_micro")(torch.randn(1, 3, 128, 128))[0].shape == (1, 32, 32, 32)
    assert GlobalHydra.instance().is_initialized()
