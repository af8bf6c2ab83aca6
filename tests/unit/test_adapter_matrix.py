"""Every registered adapter in every method: built from the one `adapter` key, one training step.

Tiny backbones (SAM ViT and SAM 2 Hiera, 64 px), batch 1; the whole matrix runs in well under a minute.
Combinations that cannot work would be refused with one line and listed in docs/architecture.md; today
there are none.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmsam.adapters import (
    AdapterLayer,
    ConvLoRAConfig,
    LoRAConfig,
    MMAdapterConfig,
    MMLoRAConfig,
    MoELoRAConfig,
    list_adapters,
)
import mmsam.methods
from mmsam.methods import ConvLoRASAM, MemorySAM, MFNet, MLESAM, SamLoRA, SegmentationMethod

MODS = ["rgb", "depth"]
SIZE = 64

# one small config per registered adapter type
ADAPTERS = {
    "lora": lambda: LoRAConfig(r=2, parts=["q", "v"]),
    "conv_lora": lambda: ConvLoRAConfig(r=2, num_experts=2),
    "moe_lora": lambda: MoELoRAConfig(expert=LoRAConfig(r=2, parts=["q", "v"])),
    "mm_adapter": lambda: MMAdapterConfig(),
    "mm_lora": lambda: MMLoRAConfig(r=2),
}
# each method on a tiny backbone; together they put every adapter on both SAM ViT and SAM 2 Hiera
METHODS = {
    "sam_lora": (SamLoRA, {"backbone": "sam2_hiera_micro"}),
    "mlesam": (MLESAM, {"backbone": "sam2_hiera_micro", "aux_embed_dim": 16}),
    "memorysam": (MemorySAM, {"backbone": "sam2_hiera_micro"}),
    "mfnet": (MFNet, {"backbone": "sam_vit_tiny", "decode_channels": 16, "num_heads": 2}),
    "conv_lora_sam": (ConvLoRASAM, {"backbone": "sam_vit_tiny"}),
}
NUM_CLASSES = {"conv_lora_sam": 2}  # its binary head: the cheapest loss
# (method, adapter) pairs refused on purpose, with the message they give (docs/architecture.md)
REFUSED: dict[tuple[str, str], str] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: thread-pool overhead dominates (and spins on a busy machine); one thread is faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_the_matrix_covers_every_registered_adapter_and_method():
    assert set(ADAPTERS) == set(list_adapters())
    exported = {c for c in vars(mmsam.methods).values()
                if isinstance(c, type) and issubclass(c, SegmentationMethod) and c is not SegmentationMethod}
    assert {cls for cls, _ in METHODS.values()} == exported


def _batch(k: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "modalities": {m: torch.randn(1, 3, SIZE, SIZE, generator=g) for m in MODS},
        "present": {m: torch.ones(1, dtype=torch.bool) for m in MODS},
        "label": torch.randint(0, k, (1, SIZE, SIZE), generator=g),
    }


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_adapter_in_method_builds_and_trains_one_step(method, adapter):
    torch.manual_seed(0)
    k = NUM_CLASSES.get(method, 3)
    cls, extra = METHODS[method]
    kwargs = dict(num_classes=k, modalities=MODS, img_size=SIZE, adapter=ADAPTERS[adapter](), **extra)
    if (method, adapter) in REFUSED:
        with pytest.raises(Exception, match=REFUSED[(method, adapter)]):
            cls(**kwargs)
        return
    m = cls(**kwargs)
    layers = [mod for mod in m.modules() if isinstance(mod, AdapterLayer)]
    assert layers and all(type(mod).__name__ == type(layers[0]).__name__ for mod in layers)
    if m.adapter_config.modality_field is not None:  # experts / streams: the model's modalities, set in one place
        assert getattr(m.adapter_config, m.adapter_config.modality_field) == MODS
    groups = m.param_groups()
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == {id(p) for ps in groups.values() for p in ps}  # the optimiser sees every adapter parameter
    adapter_params = {id(p) for mod in layers for p in mod.adapter_parameters()}
    assert adapter_params and adapter_params <= {id(p) for p in groups["adapters"]}

    m.train()
    batch = _batch(k)
    out = m(batch)
    assert out["logits"].shape == (1, k, SIZE, SIZE)
    loss = F.cross_entropy(out["logits"], batch["label"]) + sum(out.get("losses", {}).values())
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for mod in layers for p in mod.adapter_parameters() if p.grad is not None]
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)  # the adapters learn


def test_layout_presence_keeps_absent_streams_out_of_mm_mixing_in_any_method():
    """A modality absent for one sample is a zero image in the stacked batch; the shared encode step's
    ModalityLayout carries the presence, so MMAdapter's MLP-stage exchange skips it in SAM-LoRA too."""
    torch.manual_seed(0)
    m = SamLoRA(num_classes=3, modalities=MODS, backbone="sam_vit_tiny", img_size=SIZE,
                      adapter=MMAdapterConfig()).eval()  # bottlenecks are non-zero at init: the exchange is visible
    g = torch.Generator().manual_seed(1)
    images = {k: torch.randn(2, 3, SIZE, SIZE, generator=g) for k in MODS}
    present = {"rgb": torch.tensor([True, True]), "depth": torch.tensor([True, False])}
    with torch.no_grad():
        both = m({"modalities": images, "present": present})["logits"]
        alone = m({"modalities": {"rgb": images["rgb"][1:]}, "present": {"rgb": torch.tensor([True])}})["logits"]
    assert torch.allclose(both[1], alone[0], atol=1e-5)
