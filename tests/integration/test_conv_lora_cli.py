"""Conv-LoRA through the command line: a fit, composition by config alone, the ViT-H count."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.adapters import ConvLoRAConfig, ConvLoRADelta, ConvLoRALinear, MoELoRALinear
from mmsam.cli import lightning_main, main

RECIPES = Path(__file__).parents[2] / "configs" / "convlora"
# r, alpha and parts are given: jsonargparse would carry them over from a method's default LoRAConfig
CONV_LORA = {"class_path": "mmsam.adapters.ConvLoRAConfig",
             "init_args": {"r": 2, "alpha": 32.0, "parts": None, "num_experts": 3}}


def _counts(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+[\d,]+\s+\((\d+)\)$", text, re.M)}


@pytest.fixture(scope="module")
def binary_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny binary task in the official layout: CSVs of image/mask paths (disc = foreground)."""
    root = tmp_path_factory.mktemp("binary") / "polyp"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        rows = []
        for i in range(n):
            cy, cx = rng.integers(20, 44, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 12**2
            img = rng.integers(0, 80, (64, 64, 3), dtype=np.uint8)
            img[disc] += 150
            for sub, arr in (("images", img), ("masks", disc.astype(np.uint8) * 255)):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / split / sub / f"{i}.png")
            rows.append({"image": f"{split}/images/{i}.png", "label": f"{split}/masks/{i}.png"})
        with open(root / f"{split}.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["image", "label"])
            w.writeheader()
            w.writerows(rows)
    return root


def test_fit_conv_lora_sam_on_a_binary_folder_set(binary_root, make_config, tmp_path, capsys):
    method = {"class_path": "mmsam.methods.ConvLoRASAM",
              "init_args": {"backbone": "sam_vit_tiny", "img_size": 64, "adapter": CONV_LORA}}
    cfg = make_config(
        tmp_path / "c.yaml", binary_root, tmp_path / "run",
        model__method=method, model__loss="ce", model__evaluation__modality_subsets=None,
        data__dataset="binary_folder", data__modalities=["rgb"], data__batch_size=2, data__eval_batch_size=2,
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^foreground\s+\d+\.\d\d", text, re.M)  # the test table after fit
    log = next((tmp_path / "run" / "logs").glob("version_*/metrics.csv")).read_text()
    assert "train/loss_structure" in log and "train/loss_balance" in log
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2 and any("conv_lora.moe.0.w_gate" in k for k in state["state_dict"])


@pytest.mark.parametrize("method", ["SamLoRA", "MLESAM", "MemorySAM"])
def test_conv_lora_composes_with_methods_by_config_alone(method, tiny_root, make_config, tmp_path, capsys):
    # MemorySAM runs SAM 2's memory modules: it needs a SAM 2 backbone
    backbone = "sam2_hiera_micro" if method == "MemorySAM" else "sam_vit_tiny"
    init = {"backbone": backbone, "img_size": 64, "adapter": CONV_LORA}
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run",
                      model__method={"class_path": f"mmsam.methods.{method}", "init_args": init})
    assert main(["info", "--config", str(cfg)]) == 0
    counts = _counts(capsys.readouterr().out)
    model = lightning_main(["--config", str(cfg)], run=False).model.method
    enc = model.backbone.image_encoder
    layers = [m for m in enc.modules() if isinstance(m, (ConvLoRALinear, MoELoRALinear))]
    assert layers, "no Conv-LoRA layer was injected"
    deltas = [m for m in enc.modules() if isinstance(m, ConvLoRADelta)]
    per_delta = sum(p.numel() for p in deltas[0].parameters())
    n_mod = len(model.modalities)
    if method == "MLESAM":  # one Conv-LoRA expert per modality in every adapted layer
        assert all(isinstance(m, MoELoRALinear) for m in layers) and len(deltas) == n_mod * len(layers)
    else:  # SamLoRA, MemorySAM: one Conv-LoRA shared by all modalities
        assert all(isinstance(m, ConvLoRALinear) for m in layers) and len(deltas) == len(layers)
    if method == "MemorySAM":
        # 5 micro Hiera blocks, qkv d_in -> 3 d_out: A 2 x d_in + B 3 d_out x 2 + 3 convs 2x2x3x3+2 + gate 2 x 2x3
        qkvs = [m.base_layer for m in layers]
        assert len(qkvs) == 5 and any(q.out_features != 3 * q.in_features for q in qkvs)
        assert counts["adapters"] == sum(2 * q.in_features + 2 * q.out_features + 3 * (36 + 2) + 12 for q in qkvs)
        model.train()
        batch = {"modalities": {m: torch.randn(2, 3, 64, 64) for m in model.modalities},
                 "label": torch.randint(0, 25, (2, 64, 64))}
        out = model(batch)
        assert set(out["losses"]) == {"proto", "balance"}  # SPMM and Conv-LoRA's gate balance, both reach the task
        return
    # 2 tiny blocks (width 32, qkv 32 -> 96): A 2x32 + B 96x2 + 3 convs 2x2x3x3+2 + gate 2 x 2x3
    assert per_delta == 2 * 32 + 96 * 2 + 3 * (36 + 2) + 12
    assert counts["adapters"] == len(deltas) * per_delta


def test_vit_h_recipe_prints_514560_adapter_parameters(capsys):
    with torch.device("meta"):  # the count needs no memory for ViT-H's weights
        code = main(["info", "--config", str(RECIPES / "polyp_vit_h.yaml"),
                     "--model.method.init_args.checkpoint", "null", "--trainer.precision", "32-true"])
    assert code == 0
    out = capsys.readouterr().out
    assert "backbone: sam_vit_h" in out and _counts(out)["adapters"] == 514_560
    assert re.search(r"^adapters\s+514,560\s", out, re.M)


def test_every_binary_recipe_is_the_official_one():
    import yaml

    expected = {  # run_semantic_segmentation.py get_default_training_setting: lr, epochs, loss
        "polyp_vit_h.yaml": (1e-4, 30, "structure"),
        "leaf_disease_vit_h.yaml": (3e-4, 30, "structure"),
        "camouflage_vit_h.yaml": (1e-4, 20, "structure"),
        "isic2017_vit_h.yaml": (1e-4, 30, "structure"),
        "road_vit_h.yaml": (3e-4, 20, "structure"),
        "sbu_shadow_vit_h.yaml": (1e-4, 10, "balanced_bce"),
    }
    for name, (lr, epochs, loss) in expected.items():
        cfg = yaml.safe_load((RECIPES / name).read_text())
        init = cfg["model"]["method"]["init_args"]
        assert (cfg["model"]["optimizer"]["init_args"]["lr"], cfg["trainer"]["max_epochs"], init["binary_loss"]) == (lr, epochs, loss), name
        lora = init["adapter"]["init_args"]
        assert ConvLoRAConfig(**lora) == ConvLoRAConfig(), name  # rank 3, alpha 32, 8 experts, top-1, ...
        assert init["backbone"] == "sam_vit_h" and cfg["trainer"]["accumulate_grad_batches"] * cfg["data"]["batch_size"] == 4
