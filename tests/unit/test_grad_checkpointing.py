"""Activation checkpointing of the frozen encoder's blocks: same loss and gradients, fewer saved activations.

Tiny backbones (SAM ViT 2 blocks, SAM 2 Hiera 5 blocks, 64 px) as in test_adapter_matrix.py.
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Block

import mmsam.backbones.grad_checkpointing as gc
from mmsam.adapters import ConvLoRAConfig, ConvLoRADelta, LoRAConfig, MMAdapterConfig, MMLoRAConfig, MoELoRAConfig
from mmsam.engine import SegmentationTask
from mmsam.errors import ConfigError
from mmsam.methods import ConvLoRASAM, MemorySAM, MFNet, MLESAM, SamLoRA

MODS = ["rgb", "depth"]
SIZE = 64
DEPTH = {"sam_vit_tiny": 2, "sam2_hiera_micro": 5}

# (method, backbone, kwargs): every method, and the adapters whose forward the recompute must replay exactly
CASES = {
    "sam_lora-lora_dropout": (SamLoRA, "sam_vit_tiny", {"adapter": LoRAConfig(r=2, parts=["q", "v"], dropout=0.5)}),
    "sam_lora-mm_adapter": (SamLoRA, "sam_vit_tiny", {"adapter": MMAdapterConfig()}),
    "sam_lora-mm_lora": (SamLoRA, "sam2_hiera_micro", {"adapter": MMLoRAConfig(r=2, dropout=0.3)}),
    "mfnet": (MFNet, "sam_vit_tiny", {"decode_channels": 16, "num_heads": 2}),
    "conv_lora_sam": (ConvLoRASAM, "sam_vit_tiny", {"adapter": ConvLoRAConfig(r=2, num_experts=2, dropout=0.2)}),
    "mlesam-moe_conv_lora": (MLESAM, "sam2_hiera_micro", {
        "aux_embed_dim": 16, "adapter": MoELoRAConfig(expert=ConvLoRAConfig(r=2, num_experts=2))}),
    "memorysam": (MemorySAM, "sam2_hiera_micro", {}),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _build(case: str):
    cls, backbone, extra = CASES[case]
    k = 2 if cls is ConvLoRASAM else 3
    torch.manual_seed(0)
    m = cls(num_classes=k, modalities=MODS, backbone=backbone, img_size=SIZE, **extra)
    with torch.no_grad():  # zero-initialised up-projections would hide the down-projections' gradients
        for p in m.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return m.train(), k


def _batch(k: int) -> dict:
    """Two samples; depth absent for the second (presence), so stream mixing sees a missing modality."""
    g = torch.Generator().manual_seed(0)
    return {
        "modalities": {m: torch.randn(2, 3, SIZE, SIZE, generator=g) for m in MODS},
        "present": {"rgb": torch.tensor([True, True]), "depth": torch.tensor([True, False])},
        "label": torch.randint(0, k, (2, SIZE, SIZE), generator=g),
    }


def _step(m, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    m.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # dropout, noisy gates
    out = m(batch)
    aux = {k: v.detach() for k, v in out.get("losses", {}).items()}
    loss = F.cross_entropy(out["logits"], batch["label"]) + sum(out.get("losses", {}).values())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), aux, grads


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_loss_and_gradients_with_checkpointing(case, monkeypatch):
    m, k = _build(case)
    m1 = copy.deepcopy(m)  # a fresh copy: a step changes running statistics (MemorySAM's memory encoder)
    batch = _batch(k)
    loss0, aux0, grads0 = _step(m, batch)
    depth = DEPTH[CASES[case][1]]
    assert m1.set_grad_checkpointing(True) == depth
    calls = []
    real = gc.checkpoint
    monkeypatch.setattr(gc, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    loss1, aux1, grads1 = _step(m1, batch)
    assert len(calls) == depth  # every block of the method's encoder ran checkpointed
    assert torch.equal(loss0, loss1)
    assert aux0.keys() == aux1.keys() and all(torch.equal(aux0[k], aux1[k]) for k in aux0)
    assert grads0.keys() == grads1.keys()
    assert sum(1 for n in grads0 if "backbone" in n and grads0[n].abs().sum() > 0) > 0  # the encoder's adapters learn
    bad = [n for n in grads0 if not torch.allclose(grads0[n], grads1[n], rtol=0, atol=1e-6)]
    assert not bad, bad


def test_conv_lora_balance_loss_is_trained_and_the_recompute_leaves_none_behind():
    """The balance loss reaches the gates through the recompute; the recompute's own copy is put back,
    so a later step (where this expert may not run) collects nothing stale."""
    m, k = _build("conv_lora_sam")
    m.set_grad_checkpointing(True)
    _, aux, grads = _step(m, _batch(k))
    assert "balance" in aux
    assert any("moe" in n and "gate" in n and g.abs().sum() > 0 for n, g in grads.items())
    deltas = [d for d in m.modules() if isinstance(d, ConvLoRADelta)]
    assert deltas and all(d.balance_loss is None for d in deltas)


def _saved_bytes(m, batch) -> int:
    """Bytes autograd keeps for the encode step, outside checkpointed regions (checkpoint's own hooks take the inner ones)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m.encode(m.backbone, batch)
    return total


def test_checkpointing_keeps_fewer_activations():
    m, k = _build("sam_lora-mm_adapter")
    batch = _batch(k)
    plain = _saved_bytes(m, batch)
    m.set_grad_checkpointing(True)
    ckpt = _saved_bytes(m, batch)
    assert ckpt < 0.5 * plain


def test_only_training_with_grad_is_checkpointed_and_off_restores(monkeypatch):
    m, k = _build("sam_lora-mm_adapter")
    blocks = m.backbone.image_encoder.blocks
    keys = list(m.state_dict())
    names = [n for n, _ in m.named_parameters()]
    calls = []
    real = gc.checkpoint
    monkeypatch.setattr(gc, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    assert m.set_grad_checkpointing(True) == 2 and m.set_grad_checkpointing(True) == 2  # idempotent
    assert all(gc.is_grad_checkpointed(b) and isinstance(b, Block) for b in blocks)
    assert list(m.state_dict()) == keys and [n for n, _ in m.named_parameters()] == names
    batch = _batch(k)
    m(batch)
    assert len(calls) == 2
    m.eval()
    m(batch)
    with torch.no_grad():
        m.train()(batch)
    assert len(calls) == 2  # eval and no-grad run the plain forward
    assert m.set_grad_checkpointing(False) == 2
    assert all(type(b) is Block for b in blocks)
    m(batch)
    assert len(calls) == 2


@pytest.mark.parametrize("case,indices", [("sam_lora-lora_dropout", [0, 1]), ("memorysam", [1, 3])])
def test_block_hooks_still_capture_intermediates(case, indices):
    """run_capturing (intermediate block outputs) hooks the blocks' __call__: same outputs and gradients."""
    m, _ = _build(case)
    x = torch.randn(1, 3, SIZE, SIZE)
    outs = []
    for on in (False, True):
        m.set_grad_checkpointing(on)
        m.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        levels, inter = m.backbone.forward_intermediates(x, indices)
        (sum(f.sum() for f in levels) + sum(i.square().sum() for i in inter)).backward()
        outs.append([*[f.detach() for f in levels], *[i.detach() for i in inter], *[p.grad.clone() for p in m.backbone.image_encoder.parameters() if p.requires_grad]])
    assert len(outs[0]) == len(outs[1]) > len(indices) + 1
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(*outs))


def test_switched_model_pickles_into_a_fresh_process_state(monkeypatch):
    """The switched classes are found by name when unpickled (ddp_spawn, torch.save of a whole model)."""
    m, k = _build("sam_lora-mm_adapter")
    m.set_grad_checkpointing(True)
    data = pickle.dumps(m)
    monkeypatch.setattr(gc, "_CHECKPOINTED", {})  # as in a process that never switched a block
    back = pickle.loads(data)
    blocks = back.backbone.image_encoder.blocks
    assert all(gc.is_grad_checkpointed(b) and isinstance(b, Block) for b in blocks)
    assert type(blocks[0]) is gc._CHECKPOINTED[Block]
    batch = _batch(k)
    torch.manual_seed(1)
    a = m(batch)["logits"]
    torch.manual_seed(1)
    assert torch.equal(a, back(batch)["logits"])


def test_task_option_reaches_the_method_and_is_saved():
    task = SegmentationTask(lambda k, mods: SamLoRA(k, mods, backbone="sam_vit_tiny", img_size=SIZE),
                            num_classes=3, modalities=MODS, grad_checkpointing=True)
    assert all(gc.is_grad_checkpointed(b) for b in task.method.backbone.image_encoder.blocks)
    assert task.hparams["grad_checkpointing"] is True
    plain = SegmentationTask(lambda k, mods: SamLoRA(k, mods, backbone="sam_vit_tiny", img_size=SIZE), num_classes=3, modalities=MODS)
    assert not any(gc.is_grad_checkpointed(b) for b in plain.method.backbone.image_encoder.blocks)


@pytest.mark.parametrize("value,message", [("yes", "model.grad_checkpointing must be true or false, got 'yes'"),
                                           (1, "model.grad_checkpointing must be true or false, got 1")])
def test_task_refuses_a_non_bool(value, message):
    with pytest.raises(ConfigError, match=message):
        SegmentationTask(lambda k, mods: SamLoRA(k, mods, backbone="sam_vit_tiny", img_size=SIZE),
                         num_classes=3, modalities=MODS, grad_checkpointing=value)


def test_task_refuses_a_method_without_encoder_blocks():
    with pytest.raises(ConfigError, match="model.grad_checkpointing: Conv2d has no encoder blocks"):
        SegmentationTask(torch.nn.Conv2d(3, 3, 1), num_classes=3, modalities=MODS, grad_checkpointing=True)
