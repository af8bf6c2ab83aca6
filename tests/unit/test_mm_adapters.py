"""MMAdapter / MMLoRA: shared frozen blocks, exchange exactly at the MLP stage, gradients, counts."""
from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling.image_encoder import Block
from torch import nn

from mmsam.adapters import (
    MMAdapterConfig,
    MMAdapterLayer,
    MMLoRAConfig,
    MMLoRALinear,
    adapter_layers,
    create_adapter_config,
    inject_adapters,
    merge_adapters,
    modality_layout,
)
from mmsam.backbones import create_backbone

STREAMS = ["rgb", "depth"]


def _encoder(config, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    enc = create_backbone("sam_vit_tiny", img_size=64).image_encoder
    enc.requires_grad_(False)
    inject_adapters(enc, config)
    with torch.no_grad():  # LoRA's B starts at zero: make every update non-zero so exchange is visible
        for _, layer in adapter_layers(enc):
            for p in layer.adapter_parameters():
                if p.ndim > 0:
                    p.normal_(0, 0.2)
    return enc


def _run(enc: nn.Module, x: torch.Tensor, y: torch.Tensor, names=STREAMS, present=None) -> torch.Tensor:
    with modality_layout(names, present):
        return enc(torch.cat([x, y], 0) if y is not None else x)


def _set_lambdas(enc: nn.Module, stream: str, value: float) -> None:
    with torch.no_grad():
        for _, layer in adapter_layers(enc):
            if stream in layer.lambdas:
                layer.lambdas[stream].fill_(value)


CONFIGS = [MMAdapterConfig(streams=STREAMS), MMLoRAConfig(streams=STREAMS)]
IDS = ["mm_adapter", "mm_lora"]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_injected_by_name_and_streams_share_the_frozen_blocks(config):
    frozen = create_backbone("sam_vit_tiny", img_size=64).image_encoder
    enc = copy.deepcopy(frozen).requires_grad_(False)
    names = inject_adapters(enc, config)
    expected = (["attn", "mlp"] if isinstance(config, MMAdapterConfig) else ["attn.qkv", "mlp.lin1", "mlp.lin2"])
    assert names == [f"blocks.{i}.{m}" for i in range(2) for m in expected]
    # one frozen weight set, whatever the number of streams: the base params are the original ones
    base = {n.replace(".base_layer", ""): p for n, p in enc.named_parameters() if not p.requires_grad}
    assert {n: p.shape for n, p in base.items()} == {n: p.shape for n, p in frozen.named_parameters()}
    # with every update zeroed, each stream's output is the frozen encoder's on that stream alone
    with torch.no_grad():
        for _, layer in adapter_layers(enc):
            for p in layer.adapter_parameters():
                if p.ndim > 0:
                    p.zero_()
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    out = _run(enc, x, y)
    with torch.no_grad():
        assert torch.allclose(out[:2], frozen(x), atol=1e-5) and torch.allclose(out[2:], frozen(y), atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_stream_y_reaches_stream_x_only_through_the_mlp_mixing(config):
    enc = _encoder(config)
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    y2 = y + torch.randn_like(y)
    with torch.no_grad():
        a, b = _run(enc, x, y), _run(enc, x, y2)
        assert not torch.allclose(a[:2], b[:2], atol=1e-4)  # λx = 0.5: y flows into x
        _set_lambdas(enc, "rgb", 1.0)
        _set_lambdas(enc, "depth", 0.3)  # y's own λ does not matter to x
        a, b = _run(enc, x, y), _run(enc, x, y2)
        assert torch.equal(a[:2], b[:2])  # λx = 1: x is blind to y
        assert not torch.allclose(a[2:], b[2:])
        # ... and equals x through the encoder alone (a missing y contributes nothing either)
        alone = _run(enc, x, None, names=["rgb"])
        assert torch.allclose(a[:2], alone, atol=1e-5)


def _mlp_and_attn_layers(config):
    torch.manual_seed(0)
    block = Block(dim=16, num_heads=2, window_size=0)
    enc = nn.Module()
    enc.blocks = nn.ModuleList([block])
    inject_adapters(enc, config)
    with torch.no_grad():
        for _, layer in adapter_layers(enc):
            for p in layer.adapter_parameters():
                if p.ndim > 0:
                    p.normal_(0, 0.3)
    layers = dict(adapter_layers(enc))
    return layers


def test_mm_adapter_layers_exchange_exactly_as_eqs_5_6():
    layers = _mlp_and_attn_layers(MMAdapterConfig(streams=STREAMS))
    attn, mlp = layers["blocks.0.attn"], layers["blocks.0.mlp"]
    assert attn.stage == "attn" and mlp.stage == "mlp" and len(attn.lambdas) == 0
    x, y = torch.randn(2, 4, 4, 16), torch.randn(2, 4, 4, 16)
    with torch.no_grad(), modality_layout(STREAMS):
        a = attn(torch.cat([x, y]))
        a_x = attn.base_layer(x)
        # attention stage: a + Ad_att,m(a) per stream, no exchange
        assert torch.allclose(a[:2], a_x + attn.adapters["rgb"](a_x), atol=1e-6)
        assert torch.equal(attn(torch.cat([x, y + 1]))[:2], a[:2])
        # MLP stage: MLP(xn) + λx Ad_x(xn) + (1 - λx) Ad_y(yn)
        mlp.lambdas["rgb"].fill_(0.3)
        out = mlp(torch.cat([x, y]))
        want = mlp.base_layer(x) + 0.3 * mlp.adapters["rgb"](x) + 0.7 * mlp.adapters["depth"](y)
        assert torch.allclose(out[:2], want, atol=1e-6)


def test_mm_lora_layers_mix_only_on_lin1_lin2_and_scale_only_qkv():
    layers = _mlp_and_attn_layers(MMLoRAConfig(streams=STREAMS))
    qkv, lin1, lin2 = layers["blocks.0.attn.qkv"], layers["blocks.0.mlp.lin1"], layers["blocks.0.mlp.lin2"]
    assert qkv.is_qkv and not lin1.is_qkv and not lin2.is_qkv
    assert len(qkv.lambdas) == 0 and set(lin1.lambdas) == set(lin2.lambdas) == set(STREAMS)
    x, y = torch.randn(2, 4, 4, 16), torch.randn(2, 4, 4, 16)
    with torch.no_grad(), modality_layout(STREAMS):
        out = qkv(torch.cat([x, y]))[:2]
        lo = qkv.lora["rgb"]
        dq = lo.lora_B[0](lo.lora_A[0](x)) * 0.25  # alpha / r = 1 / 4
        dv = lo.lora_B[1](lo.lora_A[1](x)) * 0.25
        want = qkv.base_layer(x) + torch.cat([dq, torch.zeros_like(dq), dv], -1)  # k untouched
        assert torch.allclose(out, want, atol=1e-6)
        assert torch.equal(qkv(torch.cat([x, y + 1]))[:2], out)
        h = torch.randn(2, 4, 4, 64)
        hy = torch.randn(2, 4, 4, 64)
        lin2.lambdas["depth"].fill_(0.8)
        got = lin2(torch.cat([h, hy]))[2:]
        d = lambda s, t: lin2.lora[s].lora_B[0](lin2.lora[s].lora_A[0](t))  # noqa: E731  (unscaled)
        assert torch.allclose(got, lin2.base_layer(hy) + 0.8 * d("depth", hy) + 0.2 * d("rgb", h), atol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_gradients_reach_only_the_adapters_and_every_stream(config):
    enc = _encoder(config)
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    _run(enc, x, y).square().mean().backward()
    for name, p in enc.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    enc.zero_grad(set_to_none=True)
    _run(enc, x, y)[:2].square().mean().backward()  # a loss on stream x alone reaches y's first-block adapters
    first = dict(adapter_layers(enc))["blocks.0.mlp" if isinstance(config, MMAdapterConfig) else "blocks.0.mlp.lin1"]
    depth = (first.adapters if isinstance(config, MMAdapterConfig) else first.lora)["depth"]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in depth.parameters())
    adapters = {id(p) for _, layer in adapter_layers(enc) for p in layer.adapter_parameters()}
    assert adapters == {id(p) for p in enc.parameters() if p.requires_grad}


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_absent_stream_per_sample_drops_its_cross_term(config):
    enc = _encoder(config)
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    present = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # sample 1 has no depth
    with torch.no_grad():
        out = _run(enc, x, y, present=present)
        alone = _run(enc, x, None, names=["rgb"])
        full = _run(enc, x, y)
        assert torch.allclose(out[1], alone[1], atol=1e-5)  # as if rgb had come alone
        assert torch.allclose(out[0], full[0], atol=1e-5)
        assert not torch.allclose(out[1], full[1], atol=1e-4)


def test_three_streams_mix_with_the_mean_of_the_others():
    streams = ["rgb", "depth", "lidar"]
    torch.manual_seed(0)
    block = Block(dim=16, num_heads=2)
    enc = nn.Module()
    enc.blocks = nn.ModuleList([block])
    inject_adapters(enc, MMAdapterConfig(streams=streams, target_modules=["mlp"]))
    mlp = enc.blocks[0].mlp
    x, y, z = (torch.randn(2, 4, 4, 16) for _ in range(3))
    with torch.no_grad(), modality_layout(streams):
        out = mlp(torch.cat([x, y, z]))[:2]
        ad = mlp.adapters
        want = mlp.base_layer(x) + 0.5 * ad["rgb"](x) + 0.5 * (ad["depth"](y) + ad["lidar"](z)) / 2
        assert torch.allclose(out, want, atol=1e-6)


@pytest.mark.parametrize("cls", [MMAdapterConfig, MMLoRAConfig])
def test_mixing_false_gives_plain_per_stream_adapters(cls):
    enc = _encoder(cls(streams=STREAMS, mixing=False))
    assert all(len(layer.lambdas) == 0 for _, layer in adapter_layers(enc))
    x, y = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(_run(enc, x, y)[:2], _run(enc, x, y + 1)[:2])


def test_per_block_counts_of_table_vi():
    """One SAM block of each width: 4 bottlenecks + 2 λ (MMAdapter), q/v + lin1/lin2 LoRA + 2·2 λ (MMLoRA)."""
    for dim, hidden in ((768, 192), (1024, 256), (1280, 320)):
        with torch.device("meta"):
            block = Block(dim=dim, num_heads=16, window_size=0).requires_grad_(False)
        for config, want in (
            (MMAdapterConfig(streams=STREAMS), 4 * (2 * dim * hidden + hidden + dim) + 2),
            (MMLoRAConfig(streams=STREAMS), 2 * (2 * 2 * 4 * dim + 2 * (4 * dim + 4 * 4 * dim)) + 4),
        ):
            enc = nn.Module()
            enc.blocks = nn.ModuleList([copy.deepcopy(block)])
            inject_adapters(enc, config)
            assert sum(p.numel() for p in enc.parameters() if p.requires_grad) == want


def test_config_and_layer_errors():
    with pytest.raises(ValueError, match="unique"):
        MMAdapterConfig(streams=["rgb", "rgb"])
    with pytest.raises(ValueError, match="parts"):
        MMLoRAConfig(streams=STREAMS, parts=["x"])
    assert create_adapter_config("mm_lora", streams=STREAMS, r=8).r == 8
    with pytest.raises(ValueError, match="stream names"):
        MMLoRALinear(nn.Linear(4, 4), MMLoRAConfig())
    enc = _encoder(MMLoRAConfig(streams=STREAMS))
    with pytest.raises(NotImplementedError):
        merge_adapters(enc)
    with pytest.raises(RuntimeError, match="modality_layout"):
        enc(torch.randn(2, 3, 64, 64))
    with pytest.raises(RuntimeError, match="no MMLoRA stream for modalities"):
        _run(enc, torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64), names=["rgb", "thermal"])
    with pytest.raises(ValueError, match="Linear"):
        MMAdapterLayer(nn.Identity(), MMAdapterConfig(streams=STREAMS))


def test_mixing_keeps_one_activation_per_stream_for_the_backward():
    """The mix keeps one tensor per stream (``d − cross``, for λ's gradient) for the backward, not both ``d``
    and ``cross`` (MFNet's MMLoRA mixes in every Linear of every block); value and gradients unchanged."""
    from mmsam.adapters.mm_adapter import mix_streams

    m, n, width = 3, 4, 256
    g = torch.Generator().manual_seed(0)
    deltas = [torch.randn(n, 16, width, generator=g, requires_grad=True) for _ in range(m)]
    lambdas = [torch.tensor(v, requires_grad=True) for v in (0.7, 0.2, 0.5)]
    present = torch.tensor([[1.0] * n, [1.0, 0.0, 1.0, 1.0], [1.0] * n])
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with modality_layout(("rgb", "depth", "event"), present) as layout:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = mix_streams(deltas, lambdas, layout)
    assert sum(s for s in saved if s >= n * 16 * width) == m * n * 16 * width, saved  # one (N, 16, width) per stream
    # the value is the paper's λ d_m + (1 − λ) · mean of the other present streams
    p = present[:, :, None, None]
    for i in range(m):
        others = [p[k] * deltas[k] for k in range(m) if k != i]
        cross = sum(others) / sum(p[k] for k in range(m) if k != i).clamp(min=1)
        ref = lambdas[i] * deltas[i] + (1 - lambdas[i]) * cross
        torch.testing.assert_close(out[i * n:(i + 1) * n], ref, rtol=1e-6, atol=1e-6)
    out.square().sum().backward()
    grads = [t.grad.clone() for t in deltas + lambdas]
    for t in deltas + lambdas:
        t.grad = None
    ref = []
    for i in range(m):  # autograd through the plain formula
        others = [p[k] * deltas[k] for k in range(m) if k != i]
        cross = sum(others) / sum(p[k] for k in range(m) if k != i).clamp(min=1)
        ref.append(lambdas[i] * deltas[i] + (1 - lambdas[i]) * cross)
    torch.cat(ref).square().sum().backward()
    for got, t in zip(grads, deltas + lambdas):
        torch.testing.assert_close(got, t.grad, rtol=1e-5, atol=1e-5)
