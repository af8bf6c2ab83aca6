"""MemorySAM: modalities as SAM 2 frames, the K-class decoder, the LoRA slice option, shapes, groups."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsam.adapters import ConvLoRAConfig, LoRAConfig, LoRALinear, inject_adapters, merge_adapters, unmerge_adapters
from mmsam.backbones import create_backbone
from mmsam.errors import ConfigError
from mmsam.heads import upsample_logits
from mmsam.methods import MemorySAM

MODS = ["rgb", "depth", "event"]


def _batch(b=2, size=64, mods=MODS, seed=0, present=None):
    g = torch.Generator().manual_seed(seed)
    return {
        "modalities": {m: torch.randn(b, 3, size, size, generator=g) for m in mods},
        "present": present or {m: torch.ones(b, dtype=torch.bool) for m in mods},
        "label": torch.randint(0, 4, (b, size, size), generator=g),
    }


def _model(size=64, seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("object_score_gate", False)  # random weights: the gate would blank most frames
    return MemorySAM(4, MODS, backbone="sam2_hiera_micro", img_size=size, **kw).eval()


# ---- LoRA slice option -----------------------------------------------------------------
def _randomise_b(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, LoRALinear):
            for b in m.lora.lora_B:
                nn.init.normal_(b.weight)


def test_slice_width_in_adapts_the_first_d_in_of_q_and_the_last_d_in_of_v():
    torch.manual_seed(0)
    base = nn.Linear(4, 24)  # a widening qkv: d_in = 4, d_out = 8 per part
    layer = LoRALinear(base, LoRAConfig(r=2, parts=["q", "v"], slice_width="in"))
    _randomise_b(layer)
    x = torch.randn(3, 4)
    d = layer(x) - base(x)
    touched = (d.abs() > 0).any(0)
    expected = torch.zeros(24, dtype=torch.bool)
    expected[0:4] = True  # q[:d_in]
    expected[20:24] = True  # v[-d_in:], i.e. qkv[..., -d_in:] as in the official wrapper
    assert torch.equal(touched, expected)
    assert sum(p.numel() for p in layer.adapter_parameters()) == 2 * (4 * 2 + 2 * 4)
    wide = LoRALinear(nn.Linear(4, 24), LoRAConfig(r=2, parts=["q", "v"]))  # default "out": whole parts
    assert sum(p.numel() for p in wide.adapter_parameters()) == 2 * (4 * 2 + 2 * 8)
    square = LoRALinear(nn.Linear(8, 24), LoRAConfig(r=2, parts=["q", "v"], slice_width="in"))
    assert [(s.start, s.stop) for s in square.lora.slices] == [(0, 8), (16, 24)]  # same as "out" when d_in = d_out


def test_slice_width_in_merges_and_unmerges():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 24))
    net.requires_grad_(False)
    inject_adapters(net, LoRAConfig(r=2, parts=["q", "v"], slice_width="in", target_modules=["0"]))
    _randomise_b(net)
    x = torch.randn(5, 4)
    y = net(x)
    w0 = net[0].base_layer.weight.clone()
    assert merge_adapters(net) == 1
    assert not torch.equal(net[0].base_layer.weight, w0)
    assert torch.allclose(net(x), y, atol=1e-5)
    unmerge_adapters(net)
    assert torch.allclose(net[0].base_layer.weight, w0, atol=1e-6)
    assert torch.allclose(net(x), y, atol=1e-5)


def test_slice_width_bad_values_are_refused():
    with pytest.raises(ValueError, match="give parts"):
        LoRAConfig(slice_width="in")
    with pytest.raises(ValueError, match="'out' or 'in'"):
        LoRAConfig(parts=["q"], slice_width="mid")
    with pytest.raises(ValueError, match="plain 'lora' adapter"):
        ConvLoRAConfig(parts=["q", "v"], slice_width="in")


def test_hiera_b_plus_lora_count_with_slice_width_in():
    from sam2.modeling.backbones.hieradet import Hiera

    enc = Hiera(embed_dim=112, num_heads=2)  # the trunk of sam2_hiera_b+.yaml: stages 2/3/16/3
    inject_adapters(enc, LoRAConfig(r=4, parts=["q", "v"], slice_width="in"))
    qkvs = [m for m in enc.modules() if isinstance(m, LoRALinear)]
    assert len(qkvs) == 24
    # rank 4 on q and v, each A: d_in -> 4 and B: 4 -> d_in (official MemorySAM LoRA_Sam)
    assert sum(p.numel() for m in qkvs for p in m.adapter_parameters()) == sum(2 * 2 * 4 * m.base_layer.in_features for m in qkvs)
    assert sum(p.numel() for m in qkvs for p in m.adapter_parameters()) == 159_488


# ---- architecture ------------------------------------------------------------------------
def test_decoder_has_k_plus_one_tokens_and_a_frozen_reset_iou_head():
    m = _model()
    dec = m.decoder
    assert dec is m.sam2.sam_mask_decoder  # the official SAM2Base steps use the adapted decoder
    assert dec.num_multimask_outputs == 4 and dec.mask_tokens.num_embeddings == 5
    assert len(dec.output_hypernetworks_mlps) == 5
    assert dec.iou_prediction_head.layers[-1].out_features == 5
    # the official train_sam2_lora.py zeroes the re-initialised IoU head's biases
    assert all(torch.count_nonzero(l.bias) == 0 for l in dec.iou_prediction_head.layers)
    assert not any(p.requires_grad for p in dec.iou_prediction_head.parameters())
    assert not any(p.requires_grad for p in dec.pred_obj_score_head.parameters())
    assert all(p.requires_grad for p in dec.transformer.parameters())


def test_param_groups_cover_exactly_the_trainable_parameters():
    m = _model()
    groups = m.param_groups()
    ids = {k: {id(p) for p in v} for k, v in groups.items()}
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == ids["adapters"] | ids["fusion"] | ids["heads"]
    assert not (ids["adapters"] & ids["fusion"]) and not (ids["fusion"] & ids["heads"])
    sam2 = m.sam2
    assert {id(p) for p in sam2.memory_attention.parameters()} <= ids["fusion"]
    assert {id(p) for p in sam2.memory_encoder.parameters()} <= ids["fusion"]
    assert {id(sam2.no_mem_embed), id(sam2.maskmem_tpos_enc)} <= ids["fusion"]
    assert all(".lora." in n for n, p in m.backbone.image_encoder.named_parameters() if p.requires_grad)
    frozen = [sam2.obj_ptr_proj, sam2.sam_prompt_encoder]
    assert not any(p.requires_grad for mod in frozen for p in mod.parameters())
    still = _model(train_memory=False)
    assert not any(p.requires_grad for p in still.sam2.memory_attention.parameters())
    assert not any(p.requires_grad for p in still.sam2.memory_encoder.parameters())


def test_official_file_loads_unchanged(tmp_path):
    torch.manual_seed(1)
    sd = create_backbone("sam2_hiera_micro", img_size=64, with_memory=True).sam2_model.state_dict()
    torch.save({"model": sd}, tmp_path / "sam2.1_hiera_micro.pt")
    m = MemorySAM(4, MODS, backbone="sam2_hiera_micro", img_size=64, checkpoint=str(tmp_path / "sam2.1_hiera_micro.pt"))
    own = m.sam2.state_dict()
    for key in ("memory_attention.layers.0.cross_attn_image.q_proj.weight", "memory_encoder.fuser.layers.0.dwconv.weight",
                "maskmem_tpos_enc", "sam_mask_decoder.transformer.layers.0.self_attn.q_proj.weight"):
        assert torch.equal(own[key], sd[key]), key
    assert torch.equal(own["image_encoder.trunk.blocks.0.attn.qkv.base_layer.weight"], sd["image_encoder.trunk.blocks.0.attn.qkv.weight"])


def test_needs_a_sam2_backbone_and_the_built_size():
    with pytest.raises(ConfigError, match="SAM 2 backbone"):
        MemorySAM(4, MODS, backbone="sam_vit_tiny", img_size=64)
    m = _model(size=64)
    with pytest.raises(ConfigError, match="img_size=64"):
        m(_batch(size=96))


@pytest.mark.parametrize("size", [64, 96, 128])
def test_shapes_at_several_sizes(size):
    m = _model(size=size).train()
    out = m(_batch(b=2, size=size))
    assert out["logits"].shape == (2, 4, size, size)
    assert list(out["per_modality"]) == MODS
    assert all(v.shape == (2, 4, size // 4, size // 4) for v in out["per_modality"].values())
    assert out["losses"]["proto"].ndim == 0 and torch.isfinite(out["losses"]["proto"])
    out["logits"].mean().backward()
    assert m.sam2.memory_attention.layers[0].cross_attn_image.q_proj.weight.grad is not None


def test_registered_by_name():
    m = MemorySAM(num_classes=3, modalities=["rgb"], backbone="sam2_hiera_micro", img_size=64)
    assert isinstance(m, MemorySAM)


# ---- modalities as frames -----------------------------------------------------------------
def _perturbed(batch, name):
    b = {**batch, "modalities": dict(batch["modalities"])}
    b["modalities"][name] = b["modalities"][name] + 1.0
    return b


@torch.no_grad()
def test_each_modality_depends_on_earlier_ones_only():
    m = _model()
    batch = _batch()
    ref = m(batch)["per_modality"]
    for k, name in enumerate(MODS):
        out = m(_perturbed(batch, name))["per_modality"]
        for j, other in enumerate(MODS):
            same = torch.equal(out[other], ref[other])
            assert same == (j < k), f"changing {name} {'changed' if not same else 'left'} {other}"


@torch.no_grad()
def test_first_frame_skips_memory_and_later_frames_use_it():
    m = _model()
    batch = _batch()
    ref = m(batch)["per_modality"]
    for p in m.sam2.memory_attention.parameters():
        p.add_(0.1)
    out = m(batch)["per_modality"]
    assert torch.equal(out["rgb"], ref["rgb"])
    assert not torch.allclose(out["depth"], ref["depth"]) and not torch.allclose(out["event"], ref["event"])
    # the memory encoder feeds frames 1.. through the memory of frame 0
    m2 = _model()
    for p in m2.sam2.memory_encoder.parameters():
        p.add_(0.1)
    out2 = m2(batch)["per_modality"]
    assert torch.equal(out2["rgb"], ref["rgb"]) and not torch.allclose(out2["depth"], ref["depth"])
    # frame 0 = the decoder on its own features + no_mem_embed
    m3 = _model()
    with torch.no_grad():
        m3.sam2.no_mem_embed.add_(0.5)
    assert not torch.allclose(m3(batch)["per_modality"]["rgb"], ref["rgb"])


@torch.no_grad()
def test_prediction_is_the_mean_of_the_modality_logits():
    m = _model()
    out = m(_batch())
    mean = torch.stack(list(out["per_modality"].values())).mean(0)
    assert torch.allclose(out["logits"], upsample_logits(mean, (64, 64)), atol=1e-5)


@torch.no_grad()
def test_missing_modalities_equal_running_each_sample_alone():
    m = _model()
    present = {"rgb": torch.tensor([True, True, False, True]),
               "depth": torch.tensor([True, False, True, False]),
               "event": torch.tensor([True, True, True, False])}
    batch = _batch(b=4, present=present)
    out = m(batch)
    assert list(out["per_modality"]) == MODS  # frame order, whatever order the groups ran in
    for i in range(4):
        have = [n for n in MODS if present[n][i]]
        alone = {"modalities": {n: batch["modalities"][n][i:i + 1] for n in have},
                 "present": {n: torch.ones(1, dtype=torch.bool) for n in have}}
        solo = m(alone)
        assert torch.allclose(out["logits"][i:i + 1], solo["logits"], atol=1e-5), i
        for n in MODS:
            if n in have:
                assert torch.allclose(out["per_modality"][n][i:i + 1], solo["per_modality"][n], atol=1e-5)
            else:
                assert out["per_modality"][n][i].isnan().all()


@torch.no_grad()
def test_object_score_gate_blanks_the_logits_of_a_frame():
    m = _model(object_score_gate=True)
    head = m.decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    last.weight.zero_()
    last.bias.fill_(-10.0)  # the object is "absent" on every frame
    out = m(_batch())
    assert all((v == -1024).all() for v in out["per_modality"].values())
    assert all((v <= 0).all() for v in out["object_scores"].values())
    last.bias.fill_(10.0)
    out = m(_batch())
    assert not any((v == -1024).any() for v in out["per_modality"].values())
    # disabled gate: same weights, no blanking even with negative scores
    off = _model(object_score_gate=False)
    off.load_state_dict(m.state_dict())
    h = off.decoder.pred_obj_score_head
    (h.layers[-1] if hasattr(h, "layers") else h).bias.fill_(-10.0)
    assert not any((v == -1024).any() for v in off(_batch())["per_modality"].values())


@pytest.mark.parametrize("gate", [False, True])
def test_memory_mask_picked_before_upsampling_equals_sam2s_own_heads_step(gate):
    """``sam_heads`` upsamples only the memory's mask; SAM 2's ``_forward_sam_heads`` all K + 1: same outputs and gradients."""
    results = []
    for upsample_all in (False, True):
        model = _model(seed=3, object_score_gate=gate).train()
        if gate:  # some frames with an object, some without: both sides of the gate
            model.decoder.pred_obj_score_head.layers[-1].bias.data -= 0.04
        model.upsample_all = upsample_all
        out = model(_batch(seed=5))
        (out["logits"].square().mean() + out["losses"]["proto"]).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out["logits"].detach(), grads, out["object_scores"]))
    (a, ga, sa), (b, gb, sb) = results
    assert torch.equal(a, b)
    assert ga.keys() == gb.keys() and len(ga) > 0
    assert all(torch.equal(ga[k], gb[k]) for k in ga)
    if gate:
        scores = torch.cat(list(sa.values()))
        assert (scores > 0).any() and (scores <= 0).any(), scores
