"""Conv-LoRA adapter: identity at init, token grids, gate and balance loss, gradients, composition."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmsam.adapters import (
    ConvLoRAConfig,
    ConvLoRADelta,
    ConvLoRALinear,
    LoRAConfig,
    MoELoRAConfig,
    MoELoRALinear,
    add_balance_loss,
    collect_balance_losses,
    create_adapter_config,
    delta_class,
    inject_adapters,
    merge_adapters,
    modality_layout,
)
from mmsam.adapters.conv_lora import ConvMoE, cv_squared
from mmsam.backbones import create_backbone


def _randomise_b(module: nn.Module, std: float = 0.5) -> None:
    for sub in module.modules():
        if isinstance(sub, ConvLoRADelta):
            for b in sub.lora_B:
                nn.init.normal_(b.weight, std=std)


# ---- identity at initialisation --------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["sam_vit_tiny", "sam2_hiera_micro"])
def test_adapted_encoder_equals_frozen_one_at_init(backbone):
    torch.manual_seed(0)
    enc = create_backbone(backbone, img_size=64).eval()
    enc.requires_grad_(False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = enc(x)
    names = inject_adapters(enc.image_encoder, ConvLoRAConfig())  # paper defaults: r 3, 8 experts, whole qkv
    assert names and all(n.endswith("attn.qkv") for n in names)
    for mode in (False, True):  # eval (clean gate) and train (noisy gate): B = 0 makes the update vanish
        enc.train(mode)
        with torch.no_grad():
            out = enc(x)
        for a, b in zip(out, ref):
            assert torch.allclose(a, b, atol=1e-6, rtol=0)
    enc.train()
    _randomise_b(enc)
    with torch.no_grad():
        assert not torch.allclose(enc(x)[-1], ref[-1], atol=1e-4)  # and it does change once B moves


# ---- the token grid -----------------------------------------------------------------------------


def _record_grids(module: nn.Module) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(layer, qkv input shape, grid shape seen by the experts) of every Conv-LoRA in a forward."""
    seen: list = []
    for name, layer in module.named_modules():
        if isinstance(layer, ConvLoRALinear):
            moe = layer.conv_lora.moe[0]
            layer.register_forward_pre_hook(lambda m, a, n=name: seen.append([n, tuple(a[0].shape), None]))
            moe.register_forward_pre_hook(lambda m, a: seen[-1].__setitem__(2, tuple(a[0].shape)))
    return seen


def test_grid_of_sam_windowed_and_global_blocks():
    enc = create_backbone("sam_vit_tiny", img_size=128)  # 8x8 tokens, window 4, block 1 global
    enc.requires_grad_(False)
    inject_adapters(enc.image_encoder, ConvLoRAConfig(r=2, num_experts=2))
    seen = _record_grids(enc)
    with torch.no_grad():
        enc(torch.randn(3, 3, 128, 128))
    assert [(n, g) for n, _, g in seen] == [
        ("image_encoder.blocks.0.attn.qkv", (3 * 4, 2, 4, 4)),  # windowed: 4 windows of 4x4 per image
        ("image_encoder.blocks.1.attn.qkv", (3, 2, 8, 8)),  # global: the whole 8x8 map
    ]
    assert all(x[:3] == (g[0], g[2], g[3]) for _, x, g in seen)  # always the qkv input's own (B', h, w)


def test_grid_of_every_hiera_block_type():
    enc = create_backbone("sam2_hiera_micro", img_size=128)  # stages 1-1-2-1, windows 4-4-4-2, block 3 global
    enc.requires_grad_(False)
    inject_adapters(enc.image_encoder, ConvLoRAConfig(r=2, num_experts=2))
    blocks = enc.image_encoder.trunk.blocks
    assert [b.q_stride is not None for b in blocks] == [False, True, True, False, True]
    assert [b.window_size for b in blocks] == [4, 4, 4, 0, 4]
    seen = _record_grids(enc)
    with torch.no_grad():
        enc(torch.randn(2, 3, 128, 128))
    assert [g for _, _, g in seen] == [
        (2 * 64, 2, 4, 4),  # stage 1 (32x32 tokens), 4x4 windows
        (2 * 64, 2, 4, 4),  # first block of stage 2: qkv runs before q-pooling, on stage 1's windows
        (2 * 16, 2, 4, 4),  # first block of stage 3 (pooled), 16x16 tokens in 4x4 windows
        (2, 2, 8, 8),  # global block of stage 3
        (2 * 4, 2, 4, 4),  # first block of stage 4 (pooled), 8x8 tokens in stage 3's 4x4 windows
    ]
    assert all(x[:3] == (g[0], g[2], g[3]) for _, x, g in seen)


def test_bottleneck_keeps_token_positions_and_accepts_square_sequences():
    cfg = ConvLoRAConfig(r=2, num_experts=2, noisy_gating=False)
    delta = ConvLoRADelta(3, 6, cfg).eval()
    with torch.no_grad():
        delta.lora_A[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    grids = []
    delta.moe[0].register_forward_pre_hook(lambda m, a: grids.append(a[0]))
    pos = torch.arange(20.0).view(1, 4, 5)  # token (i, j) carries the value 5 i + j in channel 0
    x = torch.stack([pos, -pos, torch.zeros_like(pos)], dim=-1)  # (1, 4, 5, 3)
    delta(x)
    assert torch.equal(grids[0][0, 0], pos[0]) and torch.equal(grids[0][0, 1], -pos[0])
    sq = torch.randn(2, 4, 4, 3)
    delta.lora_B[0].weight.data.normal_()
    assert torch.allclose(delta(sq.reshape(2, 16, 3)), delta(sq).reshape(2, 16, 6), atol=1e-6)
    with pytest.raises(ValueError, match="not a square"):
        delta(torch.randn(2, 15, 3))
    with pytest.raises(ValueError, match="expects a"):
        delta(torch.randn(15, 3))


# ---- gate, experts and the balance loss ----------------------------------------------------------


def test_expert_selection_on_a_hand_made_gate():
    torch.manual_seed(0)
    moe = ConvMoE(2, ConvLoRAConfig(r=2, num_experts=3)).eval()  # scales 1, 2, 3; eval: no noise
    assert [e.scale for e in moe.experts] == [1.0, 2.0, 3.0]
    with torch.no_grad():
        moe.w_gate.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))  # logits = (s0, s1, -s0)
    z = torch.randn(4, 2, 5, 5)
    z[0] += torch.tensor([3.0, 0.0]).view(2, 1, 1)  # mean (~3, ~0): expert 0
    z[1] += torch.tensor([0.0, 3.0]).view(2, 1, 1)  # expert 1
    z[2] += torch.tensor([-3.0, 0.0]).view(2, 1, 1)  # expert 2
    z[3] += torch.tensor([-3.0, 0.0]).view(2, 1, 1)  # expert 2
    gates, loss = moe.gate(z.mean(dim=(2, 3)))
    assert gates.argmax(1).tolist() == [0, 1, 2, 2]
    assert torch.equal(gates.sum(1), torch.ones(4))  # top-1: the kept gate value is exactly 1
    assert (gates > 0).sum(1).tolist() == [1, 1, 1, 1]
    out, _ = moe(z)
    for i, e in enumerate([0, 1, 2, 2]):  # each sample gets its expert's output, unscaled
        assert torch.allclose(out[i], moe.experts[e](z[i : i + 1])[0], atol=1e-6)
    # hard load = importance = (1, 1, 2): CV² = var / mean² = (1/3) / (4/3)² = 3/16 each
    assert torch.isclose(loss, torch.tensor(0.01 * 2 * 3 / 16))
    assert torch.isclose(cv_squared(torch.tensor([1.0, 1.0, 2.0])), torch.tensor(3 / 16))
    assert cv_squared(torch.tensor([5.0])) == 0


def test_top2_gates_and_scaled_outputs():
    moe = ConvMoE(1, ConvLoRAConfig(r=1, num_experts=3, top_k=2, multiply_by_gates=True)).eval()
    with torch.no_grad():
        moe.w_gate.copy_(torch.tensor([[2.0, 1.0, -5.0]]))
    z = torch.ones(1, 1, 3, 3)
    gates, _ = moe.gate(z.mean(dim=(2, 3)))
    p = torch.softmax(torch.tensor([2.0, 1.0]), 0)
    assert torch.allclose(gates[0], torch.tensor([p[0], p[1], 0.0]))
    out, _ = moe(z)
    assert torch.allclose(out, p[0] * moe.experts[0](z) + p[1] * moe.experts[1](z), atol=1e-6)


def test_load_estimate_is_the_probability_of_staying_in_the_top_k():
    moe = ConvMoE(2, ConvLoRAConfig(r=2, num_experts=3))
    clean = torch.tensor([[1.0, 0.0, -1.0]])
    noisy = torch.tensor([[1.2, 0.5, -2.0]])
    std = torch.ones(1, 3)
    top = noisy.topk(2, dim=1).values
    prob = moe._prob_in_top_k(clean, noisy, std, top)
    phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    # expert 0 is in: it must beat the 2nd value 0.5; experts 1, 2 are out: they must beat 1.2
    assert torch.allclose(prob, torch.tensor([[phi(1 - 0.5), phi(0 - 1.2), phi(-1 - 1.2)]]), atol=1e-6)


def test_gate_learns_from_the_balance_loss_only():
    torch.manual_seed(0)
    layer = ConvLoRALinear(nn.Linear(8, 24), ConvLoRAConfig(r=2, num_experts=4))
    _randomise_b(layer)
    layer.train()
    x = torch.randn(6, 4, 4, 8)
    layer(x).pow(2).sum().backward()  # task loss alone
    moe = layer.conv_lora.moe[0]
    assert moe.w_gate.grad is None or not moe.w_gate.grad.any()  # unscaled expert outputs: no path to the gate
    assert layer.conv_lora.lora_A[0].weight.grad.abs().sum() > 0
    assert any(e.conv.weight.grad is not None for e in moe.experts)
    layer.zero_grad()
    layer(x)
    loss = collect_balance_losses(layer)
    assert loss is not None and loss > 0
    loss.backward()
    assert moe.w_gate.grad.abs().sum() > 0 and moe.w_noise.grad.abs().sum() > 0
    assert collect_balance_losses(layer) is None  # collected once
    layer.eval()
    layer(x)
    assert collect_balance_losses(layer) is None  # eval mode stores nothing


def test_add_balance_loss_puts_the_sum_under_losses():
    enc = create_backbone("sam_vit_tiny", img_size=64)
    enc.requires_grad_(False)
    inject_adapters(enc.image_encoder, ConvLoRAConfig(r=2, num_experts=3))
    enc.train()
    enc(torch.randn(2, 3, 64, 64))
    per_layer = [m.balance_loss for m in enc.modules() if isinstance(m, ConvLoRADelta)]
    assert len(per_layer) == 2
    out = add_balance_loss(enc, {"logits": None})
    assert torch.isclose(out["losses"]["balance"], per_layer[0] + per_layer[1])
    assert "losses" not in add_balance_loss(enc, {})  # nothing stored any more: nothing added


# ---- gradients, composition, config ----------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["sam_vit_tiny", "sam2_hiera_micro"])
def test_gradients_reach_only_the_adapters(backbone):
    enc = create_backbone(backbone, img_size=64)
    enc.requires_grad_(False)
    inject_adapters(enc.image_encoder, ConvLoRAConfig(r=2, num_experts=3))
    _randomise_b(enc)
    enc.train()
    loss = sum(f.sum() for f in enc(torch.randn(2, 3, 64, 64))) + collect_balance_losses(enc)
    loss.backward()
    for name, p in enc.named_parameters():
        if ".conv_lora." in name:
            assert p.requires_grad, name
        else:
            assert not p.requires_grad and p.grad is None, name
    grads = {n: p.grad for n, p in enc.named_parameters() if ".conv_lora." in n}
    assert all(g is not None for n, g in grads.items() if "lora_A" in n or "lora_B" in n or "w_gate" in n)


def test_conv_lora_as_per_modality_experts():
    names = ["rgb", "depth"]
    moe_cfg = MoELoRAConfig(expert=ConvLoRAConfig(r=2, num_experts=3, noisy_gating=False), experts=names)
    enc = create_backbone("sam_vit_tiny", img_size=64)
    enc.requires_grad_(False)
    inject_adapters(enc.image_encoder, moe_cfg)
    layer = enc.image_encoder.blocks[0].attn.qkv
    assert isinstance(layer, MoELoRALinear) and all(isinstance(e, ConvLoRADelta) for e in layer.experts.values())
    _randomise_b(enc)
    enc.eval()  # a clean gate: the batched pass must equal each modality alone
    x = {n: torch.randn(2, 3, 64, 64) for n in names}
    with torch.no_grad(), modality_layout(names):
        batched = enc(torch.cat([x[n] for n in names]))[0]
    for i, n in enumerate(names):
        with torch.no_grad(), modality_layout([n]):
            assert torch.allclose(batched[2 * i : 2 * i + 2], enc(x[n])[0], atol=1e-5)
    enc.train()  # only the experts that ran store a balance loss
    with modality_layout(["depth"]):
        enc(x["depth"])
    stored = {n: e.balance_loss is not None for n, e in layer.experts.items()}
    assert stored == {"rgb": False, "depth": True}


def test_config_registry_and_errors():
    cfg = create_adapter_config("conv_lora", r=3, num_experts=8)
    assert isinstance(cfg, ConvLoRAConfig) and isinstance(cfg, LoRAConfig)
    assert cfg.scaling == pytest.approx(32 / 3) and cfg.expert_scales == [float(i) for i in range(1, 9)]
    assert delta_class(cfg) is ConvLoRADelta
    for bad in (dict(num_experts=0), dict(top_k=3, num_experts=2), dict(scales=[1.0]), dict(kernel_size=2), dict(r=0)):
        with pytest.raises(ValueError):
            ConvLoRAConfig(**bad)
    with pytest.raises(TypeError, match="ConvLoRAConfig"):
        ConvLoRADelta(4, 4, LoRAConfig())
    with pytest.raises(NotImplementedError):
        merge_adapters(nn.Sequential(ConvLoRALinear(nn.Linear(4, 4), ConvLoRAConfig(r=1, num_experts=1))))


def test_parts_give_one_conv_lora_per_slice():
    layer = ConvLoRALinear(nn.Linear(8, 24), ConvLoRAConfig(r=2, num_experts=2, parts=["q", "v"]))
    _randomise_b(layer)
    y = layer.conv_lora(torch.randn(2, 3, 3, 8))
    assert len(layer.conv_lora.moe) == 2
    assert torch.count_nonzero(y[..., 8:16]) == 0 and torch.count_nonzero(y[..., :8]) > 0


def test_vit_h_recipe_has_514560_adapter_parameters():
    from mmsam.methods import ConvLoRASAM

    with torch.device("meta"):  # ViT-H without allocating it
        model = ConvLoRASAM(2, ["rgb"], backbone="sam_vit_h", img_size=1024)
    adapters = model.param_groups()["adapters"]
    assert len(model.adapted_modules) == 32
    # per block: A 3x1280 + B 3840x3 = 15,360; 8 convs 3x3x3x3 + 3 = 672; gate 2 x 3x8 = 48
    assert sum(p.numel() for p in adapters) == 32 * (15_360 + 672 + 48) == 514_560
