import pytest
import torch

from mmsam.adapters import LoRAConfig, MoELoRALinear
from mmsam.engine.task import all_subsets, drop_modalities
from mmsam.fusion import ModalityRouter
from mmsam.methods import MLESAM

MODS = ["rgb", "depth", "event", "lidar"]


def _batch(b=2, size=64, mods=MODS):
    g = torch.Generator().manual_seed(0)
    return {
        "modalities": {m: torch.randn(b, 3, size, size, generator=g) for m in mods},
        "present": {m: torch.ones(b, dtype=torch.bool) for m in mods},
        "label": torch.randint(0, 5, (b, size, size), generator=g),
    }


def test_router_renormalises_over_present_modalities():
    torch.manual_seed(0)
    router = ModalityRouter(8, 1, gate="none")
    feats = torch.randn(3, 2, 8, 4, 4)
    present = torch.tensor([[True, True], [True, False], [False, True]])
    w = router.weights(0, feats, present.float())
    assert torch.allclose(w.sum(0), torch.ones(2))
    assert w[2, 0] == 0 and w[1, 1] == 0 and (w[present] > 0).all()
    # scores of present modalities do not depend on what the absent ones hold
    feats2 = feats.clone()
    feats2[2, 0] = 1e3
    assert torch.allclose(router.weights(0, feats2, present.float())[:, 0], w[:, 0])
    # a sample's weights equal those computed without the absent modality at all
    solo = router.weights(0, feats[:2, :1], torch.ones(2, 1))
    assert torch.allclose(solo[:, 0], w[:2, 0])


def test_router_top_k_keeps_k_per_image():
    torch.manual_seed(0)
    router = ModalityRouter(8, 2, top_k=2)
    feats = [torch.randn(4, 3, 8, 4, 4), torch.randn(4, 3, 8, 2, 2)]
    fused, weights = router(feats, torch.ones(4, 3))
    assert fused[0].shape == (3, 8, 4, 4) and fused[1].shape == (3, 8, 2, 2)
    for w in weights:
        assert ((w > 0).sum(0) == 2).all() and torch.allclose(w.sum(0), torch.ones(3))


@pytest.mark.parametrize("backbone,levels", [("sam2_hiera_micro", 3), ("sam_vit_tiny", 1)])
def test_mlesam_shapes_groups_and_gradients(backbone, levels):
    torch.manual_seed(0)
    m = MLESAM(5, MODS, backbone=backbone, img_size=64, adapter=LoRAConfig(r=4, parts=["q", "v"]))
    out = m(_batch())
    assert out["logits"].shape == (2, 5, 64, 64) and out["aux"]["multiscale"].shape == (2, 5, 64, 64)
    assert set(out["router_weights"]) == set(MODS) and out["router_weights"]["rgb"].shape == (levels, 2)
    layers = [mod for mod in m.backbone.image_encoder.modules() if isinstance(mod, MoELoRALinear)]
    assert layers and all(list(layer.experts) == MODS for layer in layers)
    groups = m.param_groups()
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == {id(p) for ps in groups.values() for p in ps}
    assert groups["fusion"] and groups["adapters"] and groups["heads"]
    (out["logits"].logsumexp(1).mean() + out["aux"]["multiscale"].logsumexp(1).mean()).backward()
    assert all(p.grad is not None for ps in groups.values() for p in ps)
    assert all(p.grad is None for n, p in m.backbone.named_parameters() if "experts" not in n)
    m.eval()
    assert "aux" not in m(_batch())


def test_mlesam_missing_modalities():
    torch.manual_seed(0)
    m = MLESAM(5, MODS, backbone="sam2_hiera_micro", img_size=64, adapter=LoRAConfig(r=2, parts=["q", "v"])).eval()
    batch = _batch()
    batch["present"]["lidar"] = torch.tensor([True, False])
    with torch.no_grad():
        out = m(batch)
        assert (out["router_weights"]["lidar"][:, 1] == 0).all()
        sub = {"modalities": {k: v for k, v in batch["modalities"].items() if k != "lidar"}}
        ref = m(sub)
    assert torch.allclose(out["logits"][1], ref["logits"][1], atol=1e-4)
    assert out["logits"].shape == ref["logits"].shape


def test_registry_and_ablation_modes():
    m = MLESAM(num_classes=3, modalities=["rgb", "depth"], backbone="sam_vit_tiny", img_size=64, fusion="mean")
    assert m.router is None and m.param_groups()["fusion"] == []
    with pytest.raises(ValueError):
        MLESAM(num_classes=3, modalities=["rgb"], backbone="sam_vit_tiny", img_size=64, fusion="max")


def test_all_subsets_and_modality_dropout():
    subs = all_subsets(["a", "b", "c"])
    assert len(subs) == 7 and subs[0] == ["a", "b", "c"] and ["b"] in subs
    torch.manual_seed(0)
    batch = _batch(b=64)
    dropped = drop_modalities(batch, 0.9)
    p = torch.stack([dropped["present"][m] for m in MODS])
    assert p.any(0).all() and p.float().mean() < 0.5
    batch["present"]["rgb"][:] = False
    batch["present"]["depth"][:] = False
    again = drop_modalities(batch, 0.99)
    assert not again["present"]["rgb"].any() and not again["present"]["depth"].any()
    assert torch.stack([again["present"][m] for m in MODS]).any(0).all()
