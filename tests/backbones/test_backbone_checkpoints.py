"""Official files are read unchanged; every misfit is one CheckpointError naming the file and the keys."""
import argparse
import hashlib

import pytest
import torch
from safetensors.torch import save_file

from mmsam.backbones import create_backbone, read_checkpoint, sha256_of
from mmsam.errors import CheckpointError


def fail(name, path, **kw) -> str:
    with pytest.raises(CheckpointError) as e:
        create_backbone(name, checkpoint=str(path), **kw)
    msg = str(e.value)
    assert str(path) in msg
    return msg


# --- reading ---------------------------------------------------------------------------

def test_read_unwraps_sam2_and_keeps_sam_flat(tiny_sam, micro_sam2):
    sd = read_checkpoint(tiny_sam.path)
    assert sd.keys() == tiny_sam.state_dict.keys()
    sd2 = read_checkpoint(micro_sam2.path)
    assert sd2.keys() == micro_sam2.state_dict.keys() and "no_mem_embed" in sd2


def test_safetensors_files_load(tiny_sam, micro_sam2, tmp_path):
    p = tmp_path / "sam.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sam.state_dict.items()}, str(p))
    b = create_backbone("sam_vit_tiny", checkpoint=p)
    assert torch.equal(b.image_encoder.pos_embed, tiny_sam.state_dict["image_encoder.pos_embed"])
    p2 = tmp_path / "sam2.safetensors"
    save_file({k: v.contiguous() for k, v in micro_sam2.state_dict.items()}, str(p2))
    b2 = create_backbone("sam2_hiera_micro", checkpoint=p2, with_memory=True)
    assert torch.equal(b2.sam2_model.maskmem_tpos_enc, micro_sam2.state_dict["maskmem_tpos_enc"])


def test_missing_file_and_directory(tmp_path):
    assert "not found" in fail("sam_vit_tiny", tmp_path / "nope.pth")
    assert "directory" in fail("sam_vit_tiny", tmp_path)


def test_truncated_file(tiny_sam, tmp_path):
    p = tmp_path / "truncated.pth"
    data = tiny_sam.path.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    assert "truncated" in fail("sam_vit_tiny", p)
    p2 = tmp_path / "truncated.safetensors"
    save_file({"a": torch.zeros(100)}, str(p2))
    p2.write_bytes(p2.read_bytes()[:-200])
    assert "safetensors" in fail("sam_vit_tiny", p2)


def test_not_a_torch_file(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("these are not weights\n")
    assert "PyTorch" in fail("sam_vit_tiny", p)


def test_pickled_objects_are_not_unpickled(tiny_sam, tmp_path):
    p = tmp_path / "with_args.pth"
    torch.save({"model": tiny_sam.state_dict, "args": argparse.Namespace(lr=1)}, p)
    assert "weights_only" in fail("sam_vit_tiny", p)


def test_training_checkpoint_is_refused(tiny_sam, tmp_path):
    p = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"method." + k: v for k, v in tiny_sam.state_dict.items()}, "epoch": 3}, p)
    assert "training checkpoint" in fail("sam_vit_tiny", p)


# --- wrong model -----------------------------------------------------------------------

def test_sam2_file_into_sam_backbone(micro_sam2):
    msg = fail("sam_vit_tiny", micro_sam2.path)
    assert "is a SAM 2 checkpoint" in msg and "sam2_* / sam2.1_*" in msg


def test_sam_file_into_sam2_backbone(tiny_sam):
    msg = fail("sam2_hiera_micro", tiny_sam.path)
    assert "is a SAM (v1) checkpoint" in msg and "sam_vit_*" in msg


def test_neither_layout(tmp_path):
    p = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, p)
    assert "neither a SAM nor a SAM 2" in fail("sam_vit_tiny", p)


def test_vit_l_file_into_vit_b_names_sizes_keys_and_shapes(tmp_path):
    # a file with every key and shape of an official ViT-L, each tensor a zero-stride view (KBs on disk)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in create_backbone("sam_vit_l").state_dict().items()}
    p = tmp_path / "sam_vit_l_0b3195.pth"
    torch.save({k: torch.zeros(()).expand(s) for k, s in shapes.items()}, p)
    assert p.stat().st_size < 1_000_000
    msg = fail("sam_vit_b", p)
    assert "SAM ViT-L (width 1024, 24 blocks)" in msg and "SAM ViT-B (width 768, 12 blocks)" in msg
    assert "168 unexpected key(s)" in msg and "image_encoder.blocks.12.norm1.weight" in msg and "(+158 more)" in msg
    assert "image_encoder.pos_embed: file (1, 64, 64, 1024) vs model (1, 64, 64, 768)" in msg
    assert "missing key" not in msg
    unexpected_line = next(line for line in msg.splitlines() if "unexpected" in line)
    assert unexpected_line.count("image_encoder.blocks.") == 10  # listing truncated to 10


def test_missing_and_unexpected_keys_are_named(tiny_sam, tmp_path):
    sd = dict(tiny_sam.state_dict)
    del sd["mask_decoder.iou_token.weight"]
    sd["mask_decoder.extra.weight"] = torch.zeros(1)
    p = tmp_path / "edited.pth"
    torch.save(sd, p)
    msg = fail("sam_vit_tiny", p)
    assert "1 missing key(s), in the model but not in the file: mask_decoder.iou_token.weight" in msg
    assert "1 unexpected key(s), in the file but not in the model: mask_decoder.extra.weight" in msg


def test_shape_mismatch_names_key_and_both_shapes(tiny_sam, tmp_path):
    sd = dict(tiny_sam.state_dict)
    sd["mask_decoder.iou_token.weight"] = torch.zeros(1, 33)
    p = tmp_path / "shape.pth"
    torch.save(sd, p)
    msg = fail("sam_vit_tiny", p)
    assert "1 shape mismatch(es): mask_decoder.iou_token.weight: file (1, 33) vs model (1, 32)" in msg


def test_nothing_is_loaded_when_the_check_fails(tiny_sam, tmp_path):
    b = create_backbone("sam_vit_tiny")
    before = b.image_encoder.patch_embed.proj.weight.clone()
    sd = dict(tiny_sam.state_dict)
    del sd["mask_decoder.iou_token.weight"]
    p = tmp_path / "partial.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError):
        b.load_checkpoint(p)
    assert torch.equal(b.image_encoder.patch_embed.proj.weight, before) and b.checkpoint is None


# --- SAM 2 specifics -------------------------------------------------------------------

def test_image_only_sam2_skips_memory_keys_but_not_unknown_ones(micro_sam2, tmp_path):
    b = create_backbone("sam2_hiera_micro", checkpoint=micro_sam2.path)  # memory keys in the file: fine
    assert torch.equal(b.no_mem_embed, micro_sam2.state_dict["no_mem_embed"])
    assert torch.equal(b.mask_decoder.conv_s0.weight, micro_sam2.state_dict["sam_mask_decoder.conv_s0.weight"])
    sd = dict(micro_sam2.state_dict)
    sd["memory_attention.bogus"] = torch.zeros(1)
    p = tmp_path / "extra.pt"
    torch.save({"model": sd}, p)
    assert "unexpected key(s), in the file but not in the model: memory_attention.bogus" in fail("sam2_hiera_micro", p)


def test_image_only_file_fits_image_only_backbone_but_not_the_full_model(micro_sam2, tmp_path):
    keep = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
    p = tmp_path / "image_only.pt"
    torch.save({"model": {k: v for k, v in micro_sam2.state_dict.items() if k.startswith(keep)}}, p)
    create_backbone("sam2_hiera_micro", checkpoint=p)
    msg = fail("sam2_hiera_micro", p, with_memory=True)
    assert "missing key(s)" in msg and "memory_attention." in msg


def test_sam2_decoder_key_missing_is_named_in_file_naming(micro_sam2, tmp_path):
    sd = dict(micro_sam2.state_dict)
    del sd["sam_mask_decoder.conv_s1.bias"]
    p = tmp_path / "no_conv_s1.pt"
    torch.save({"model": sd}, p)
    assert "not in the file: sam_mask_decoder.conv_s1.bias" in fail("sam2_hiera_micro", p)


def test_sam2_version_mismatch(hiera_t):
    msg = fail("sam2_hiera_t", hiera_t.path)
    assert "SAM 2.1 checkpoint" in msg and "SAM 2.0 model" in msg and "sam2.1_hiera_*" in msg


def test_sam2_size_mismatch_names_both_sizes(micro_sam2):
    msg = fail("sam2.1_hiera_t", micro_sam2.path)
    assert "SAM 2.1 Hiera (width 16, 5 blocks)" in msg and "SAM 2.1 Hiera-T (width 96, 12 blocks)" in msg
    assert "image_encoder.trunk.blocks.5.attn.qkv.weight" in msg  # in Hiera-T, not in the file
    assert "shape mismatch" in msg


# --- hashing ---------------------------------------------------------------------------

def test_sha256_streams_the_file(tiny_sam):
    expect = hashlib.sha256(tiny_sam.path.read_bytes()).hexdigest()
    assert sha256_of(tiny_sam.path) == expect
    assert sha256_of(str(tiny_sam.path), chunk_size=1000) == expect


def test_sha256_of_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        sha256_of(tmp_path / "nope.pt")
