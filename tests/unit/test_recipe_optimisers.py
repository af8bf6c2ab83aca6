"""The recipes' optimiser and schedule, built from their YAML (``model.optimizer`` / ``model.lr_scheduler``),
against values written from the papers' numbers: optimiser class, per-group lr and weight decay (1-D
tensors without decay where the recipe says so), and the lr of every step (warm-up + poly per
iteration) or epoch (multi-step)."""
from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from mmsam.deploy.model_folder import build_task

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STEPS_PER_EPOCH = 3


class Stub(nn.Module):
    """Three groups as a method's ``param_groups()``: a matrix + bias, a norm (1-D only), a conv + bias."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.f, self.h = nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv2d(4, 3, 1)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"adapters": list(self.a.parameters()), "fusion": list(self.f.parameters()), "heads": list(self.h.parameters())}


def warmup_poly(base: float, step: int, *, epochs: int, warmup_epochs: float, ratio: float = 0.1, power: float = 0.9, extra: int = 0) -> float:
    warm = int(warmup_epochs * STEPS_PER_EPOCH)
    total = STEPS_PER_EPOCH * (epochs + extra)
    if step < warm:
        return base * (ratio + (1 - ratio) * step / warm)
    return base * (1 - (step - warm) / (total - warm)) ** power


# recipe -> (optimiser, lr, weight decay, extra optimiser defaults, no decay on 1-D, lr at a step)
RECIPES = {
    "deliver/memorysam_sam2_hiera_b+.yaml": (torch.optim.AdamW, 6e-4, 0.01, {}, True,
                                             lambda s: warmup_poly(6e-4, s, epochs=200, warmup_epochs=10, extra=1)),
    "deliver/mlesam_sam2_hiera_b+.yaml": (torch.optim.AdamW, 6e-4, 0.01, {}, False,
                                          lambda s: warmup_poly(6e-4, s, epochs=200, warmup_epochs=10)),
    "mcubes/memorysam_sam2_hiera_b+.yaml": (torch.optim.AdamW, 3.5e-4, 0.01, {}, True,
                                            lambda s: warmup_poly(3.5e-4, s, epochs=500, warmup_epochs=10, extra=1)),
    "convlora/polyp_vit_h.yaml": (torch.optim.AdamW, 1e-4, 1e-4, {}, True,
                                  lambda s: warmup_poly(1e-4, s, epochs=30, warmup_epochs=0, power=1.0)),
    "demo/sam_lora_synthetic.yaml": (torch.optim.AdamW, 3e-3, 0.01, {}, False,
                                     lambda s: warmup_poly(3e-3, s, epochs=40, warmup_epochs=1)),
    # MFNet: SGD, lr ×0.1 after epochs 24, 34, 44 (stepped per epoch)
    "vaihingen/mfnet_mmlora_vit_b.yaml": (torch.optim.SGD, 0.01, 5e-4, {"momentum": 0.9}, False,
                                          lambda s: 0.01 * 0.1 ** sum(s // STEPS_PER_EPOCH >= m for m in (24, 34, 44))),
}


def build(recipe: str):
    cfg = yaml.safe_load((CONFIGS / recipe).read_text())
    model = {k: v for k, v in cfg["model"].items() if k != "evaluation"}  # classes: not those of the stand-in
    model["method"] = {"class_path": "mmsam.methods.SamLoRA", "init_args": {"backbone": "sam_vit_tiny", "img_size": 32}}
    task = build_task({**model, "num_classes": 2, "class_names": ["a", "b"], "modalities": ["rgb"]})
    task.method = Stub()
    epochs = cfg["trainer"]["max_epochs"]
    task._trainer = types.SimpleNamespace(estimated_stepping_batches=STEPS_PER_EPOCH * epochs, max_epochs=epochs)
    return task.configure_optimizers(), epochs


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_optimiser_groups_and_lr_per_step(recipe: str) -> None:
    cls, lr, wd, extra, no_decay_1d, lr_at = RECIPES[recipe]
    conf, epochs = build(recipe)
    opt, sched, interval = conf["optimizer"], conf["lr_scheduler"]["scheduler"], conf["lr_scheduler"]["interval"]
    assert type(opt) is cls and opt.defaults["lr"] == lr and opt.defaults["weight_decay"] == wd
    assert all(opt.defaults[k] == v for k, v in extra.items())
    names = ["adapters", "adapters_no_decay", "fusion_no_decay", "heads", "heads_no_decay"] if no_decay_1d else ["adapters", "fusion", "heads"]
    assert [g["name"] for g in opt.param_groups] == names
    for g in opt.param_groups:  # every group at the recipe's lr (no per-group multiplier), 1-D ones without decay
        assert g["initial_lr"] == lr and g["weight_decay"] == (0.0 if g["name"].endswith("_no_decay") else wd), g["name"]
        if no_decay_1d:
            assert all(p.dim() <= 1 for p in g["params"]) == g["name"].endswith("_no_decay"), g["name"]
    assert interval == ("epoch" if cls is torch.optim.SGD else "step")
    seen = []
    for step in range(STEPS_PER_EPOCH * epochs):
        seen.append([g["lr"] for g in opt.param_groups])
        if interval == "step" or (step + 1) % STEPS_PER_EPOCH == 0:
            opt.step()
            sched.step()
    for step, lrs in enumerate(seen):
        assert lrs == pytest.approx([lr_at(step)] * len(names), rel=1e-12, abs=1e-15), step
