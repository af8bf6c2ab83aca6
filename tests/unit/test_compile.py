"""``torch.compile`` (regional, per encoder block) and the ``sam_attention`` option of the task.

Compiled and eager copies of the same tiny model (SAM ViT tiny, 64 px) must give the same logits
and gradients; the adapters inside the compiled blocks include MMLoRA, which reads the batch's
modality layout from a ``ContextVar`` while the block runs. Adapter weights are randomised (LoRA's
``B`` starts at zero, which would hide the adapters). The models run in eval mode: in train mode
MFNet's decoder (BatchNorm over batch 2 of 4 x 4 maps) turns a 1e-7 relative change of the encoder
features into gradient changes of about 1 %, eager or compiled alike.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmsam.adapters import LoRAConfig, MMLoRAConfig
from mmsam.backbones.sam_attention import SdpaAttention
from mmsam.engine import SegmentationTask
from mmsam.engine.compile import compile_encoder, compile_options, encoder_blocks
from mmsam.errors import ConfigError
from mmsam.methods import MFNet, SamLoRA

MODS = ["rgb", "depth"]
SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sam_lora(num_classes: int = 3, modalities=MODS) -> SamLoRA:
    return SamLoRA(num_classes=num_classes, modalities=modalities, backbone="sam_vit_tiny", img_size=SIZE,
                   adapter=LoRAConfig(r=2, parts=["q", "v"]))


def _mfnet() -> MFNet:
    return MFNet(num_classes=3, modalities=MODS, backbone="sam_vit_tiny", img_size=SIZE, adapter=MMLoRAConfig(r=2),
                 decode_channels=16, num_heads=2)


def _twins(build) -> tuple[torch.nn.Module, torch.nn.Module]:
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build()
        with torch.no_grad():
            for p in m.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.05)
        models.append(m.eval())
    return models[0], models[1]


def _batch(depth_present: list[bool]) -> dict:
    g = torch.Generator().manual_seed(0)
    b = len(depth_present)
    return {
        "modalities": {m: torch.randn(b, 3, SIZE, SIZE, generator=g) for m in MODS},
        "present": {"rgb": torch.ones(b, dtype=torch.bool), "depth": torch.tensor(depth_present)},
        "label": torch.randint(0, 3, (b, SIZE, SIZE), generator=g),
    }


def _logits_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(batch)["logits"]
    F.cross_entropy(logits, batch["label"]).backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(eager: torch.nn.Module, compiled: torch.nn.Module, batch: dict) -> None:
    la, ga = _logits_and_grads(eager, batch)
    lb, gb = _logits_and_grads(compiled, batch)
    assert torch.allclose(la, lb, atol=1e-5)
    assert ga.keys() == gb.keys() and any(n.startswith("backbone.") for n in ga)  # adapter gradients inside the blocks
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-5, rtol=1e-4), n


def test_regional_compile_of_sam_lora_gives_the_eager_logits_gradients_and_keys():
    eager, compiled = _twins(_sam_lora)
    keys = list(compiled.state_dict())
    assert compile_encoder(compiled) == len(encoder_blocks(compiled)) == 2
    assert compile_encoder(compiled) == 0  # configure_model may run again (fit, then test)
    assert list(compiled.state_dict()) == keys
    _assert_same(eager, compiled, _batch([True, True]))


def test_compiled_mmlora_follows_the_modality_layout_it_reads_during_the_forward():
    """MMLoRA mixes streams by the layout's per-sample presence: a new presence (and fewer stacked
    modalities) must not reuse a graph traced for another one."""
    eager, compiled = _twins(_mfnet)
    compile_encoder(compiled)
    for depth in ([True, False], [True, True]):  # depth missing for sample 2, then present: one graph, presence as its input
        _assert_same(eager, compiled, _batch(depth))


def test_method_scope_compiles_the_whole_method_in_place():
    """The whole MFNet under dynamo (backend ``eager``: its tracing and guards, no code generation),
    also when a modality is absent from the whole batch (fewer stacked streams, another layout)."""
    eager, compiled = _twins(_mfnet)
    keys = list(compiled.state_dict())
    assert compile_encoder(compiled, scope="method", backend="eager") == 1
    assert compiled._compiled_call_impl is not None and all(b._compiled_call_impl is None for b in encoder_blocks(compiled))
    assert list(compiled.state_dict()) == keys
    for depth in ([True, False], [True, True], [False, False]):
        _assert_same(eager, compiled, _batch(depth))


@pytest.mark.parametrize(("value", "message"), [
    ({"scope": "all"}, r"model.compile.scope must be one of blocks, method, got 'all'"),
    ({"modes": "default"}, r"model.compile: unknown key\(s\) \['modes'\]"),
    ({"mode": "fastest"}, r"model.compile: Unrecognized mode=fastest"),
    ("yes", r"model.compile must be true, false or a mapping"),
])
def test_bad_compile_options_are_one_line(value, message):
    with pytest.raises(ConfigError, match=message) as e:
        compile_options(value)
    assert "\n" not in str(e.value)


def _task(**kwargs) -> SegmentationTask:
    torch.manual_seed(0)
    return SegmentationTask(lambda k, mods: _sam_lora(k, mods), num_classes=3, modalities=MODS, **kwargs)


def test_task_options_reach_the_model_and_keep_the_checkpoint_keys():
    plain = _task()
    task = _task(compile={"mode": "default"}, sam_attention="sdpa")
    assert task.hparams.compile == {"mode": "default"} and task.hparams.sam_attention == "sdpa"
    assert sum(type(m) is SdpaAttention for m in task.modules()) == len(encoder_blocks(task.method)) == 2
    assert not any(type(m) is SdpaAttention for m in plain.modules())  # official by default
    assert all(b._compiled_call_impl is None for b in encoder_blocks(task.method))  # nothing before the Trainer's hook
    task.configure_model()
    assert all(b._compiled_call_impl is not None for b in encoder_blocks(task.method))
    assert list(task.state_dict()) == list(plain.state_dict())
    task.load_state_dict(plain.state_dict())  # an uncompiled model's checkpoint loads into a compiled one


def test_task_refuses_a_bad_sam_attention_in_one_line():
    with pytest.raises(ConfigError, match=r"^model.sam_attention must be one of official, sdpa, got 'flash'$"):
        _task(sam_attention="flash")


def test_compile_with_grad_checkpointing_is_refused_in_one_line():
    """Encoder checkpointing replays the modality layout through checkpoint's ``context_fn``, which
    dynamo refuses deep inside the first step; say so when the options are read."""
    with pytest.raises(ConfigError, match=r"^model.compile cannot be combined with model.grad_checkpointing"):
        _task(compile=True, grad_checkpointing=True)
    model = _sam_lora()
    model.set_grad_checkpointing(True)
    with pytest.raises(ConfigError, match=r"^model.compile cannot be combined with model.grad_checkpointing"):
        compile_encoder(model)


def test_blocks_get_a_recompile_limit_above_torchs_default(monkeypatch):
    """All blocks share one forward code object and so one dynamo cache; with torch's limit of 8,
    Hiera-T's blocks ran eagerly again from the first validation on."""
    from mmsam.engine.compile import BLOCKS_RECOMPILE_LIMIT

    seen: list[dict] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    compile_encoder(_sam_lora())
    compile_encoder(_sam_lora(), recompile_limit=3)
    assert [kw["recompile_limit"] for kw in seen] == [BLOCKS_RECOMPILE_LIMIT] * 2 + [3] * 2
    assert BLOCKS_RECOMPILE_LIMIT > torch._dynamo.config.recompile_limit
