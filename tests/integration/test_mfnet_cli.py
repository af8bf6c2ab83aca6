"""MFNet through the command line: a fit with the tiny SAM, the recipes, Table VI's exact counts."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import yaml

from mmsam.adapters import MMAdapterConfig, MMLoRAConfig, target_module_names
from mmsam.backbones import create_backbone
from mmsam.cli import main

CONFIGS = Path(__file__).parents[2] / "configs"
DATASETS = ("vaihingen", "potsdam", "mmhunan")
ADAPTERS = {"mmadapter": MMAdapterConfig, "mmlora": MMLoRAConfig}

# Table VI, encoder tuning (M) and the exact counts behind it: MMAdapter 4 bottlenecks (C -> C/4 -> C)
# + λx, λy per block; MMLoRA rank-4 q/v + lin1 + lin2 per stream + λx, λy per lin layer
TABLE_VI = {
    ("mmadapter", "b"): (14_201_880, "14.20"), ("mmadapter", "l"): (50_454_576, "50.45"),
    ("mmadapter", "h"): (105_062_464, "105.06"),
    ("mmlora", "b"): (1_032_240, "1.03"), ("mmlora", "l"): (2_752_608, "2.75"), ("mmlora", "h"): (4_587_648, "4.59"),
}
WIDTH_DEPTH = {"b": (768, 12), "l": (1024, 24), "h": (1280, 32)}


def _counts(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+[\d,]+\s+\((\d+)\)$", text, re.M)}


@pytest.mark.parametrize("adapter", ["MMAdapterConfig", "MMLoRAConfig"])
def test_fit_mfnet_with_the_tiny_sam(adapter, tiny_root, make_config, tmp_path, capsys):
    method = {"class_path": "mmsam.methods.MFNet",
              "init_args": {"backbone": "sam_vit_tiny", "img_size": 64,
                            "adapter": {"class_path": f"mmsam.adapters.{adapter}"}}}
    cfg = make_config(
        tmp_path / "c.yaml", tiny_root, tmp_path / "run", model__method=method, model__loss="ce",
        model__optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}},
        model__lr_scheduler={"class_path": "torch.optim.lr_scheduler.MultiStepLR", "init_args": {"milestones": [1], "gamma": 0.1}},
        data__modalities=["rgb", "depth"], model__modality_dropout=0.5,
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"^\s+x\s+-\s+\d+\.\d\d", text, re.M)  # the missing-depth row of the subset table
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    keys = state["state_dict"]
    assert "method.backbone.image_encoder.blocks.1.mlp.lambdas.depth" in keys or \
        "method.backbone.image_encoder.blocks.1.mlp.lin2.lambdas.depth" in keys
    assert any(k.startswith("method.dfm.se.depth.3.") for k in keys) and any(k.startswith("method.decoder.p1.") for k in keys)
    assert not any("mask_decoder" in k or "prompt_encoder" in k for k in keys)


def test_recipes_are_the_papers():
    vit = create_backbone("sam_vit_tiny", img_size=64).image_encoder
    for ds in DATASETS:
        for ad, cls in ADAPTERS.items():
            for v in "blh":
                path = CONFIGS / ds / f"mfnet_{ad}_vit_{v}.yaml"
                cfg = yaml.safe_load(path.read_text())
                init = cfg["model"]["method"]["init_args"]
                assert init["backbone"] == f"sam_vit_{v}" and init["img_size"] == 256, path
                assert init["adapter"]["class_path"] == f"mmsam.adapters.{cls.__name__}", path
                recipe = cls(**init["adapter"]["init_args"])
                # the official hyper-parameters; MMLoRA's default targets also name Hiera's MLP Linears,
                # the recipes SAM ViT's only: the same modules of a SAM ViT encoder
                assert dataclasses.replace(recipe, target_modules=cls().target_modules) == cls(), path
                assert target_module_names(vit, recipe, (torch.nn.Module,)) == target_module_names(vit, cls(), (torch.nn.Module,)), path
                assert init["dfm"] is True and init["decode_channels"] == 64, path
                m, d = cfg["model"], cfg["data"]
                assert m["optimizer"] == {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}}, path
                assert m["lr_scheduler"] == {"class_path": "torch.optim.lr_scheduler.MultiStepLR",
                                             "init_args": {"milestones": [24, 34, 44], "gamma": 0.1}}, path
                assert m["loss"] == "ce", path
                assert cfg["trainer"]["max_epochs"] == 50 and m["evaluation"]["window"] == 256, path
                batch = 4 if v == "h" else 10
                assert d["batch_size"] == batch, path
                assert d["train_samples_per_epoch"] == batch * (500 if ds == "mmhunan" else 1000), path
                assert d["dataset"] == ds and d["modalities"] == (["irrg", "dsm"] if ds == "vaihingen" else ["rgb", "dsm"]), path
                assert (d["train_size"], d["eval_size"], d["vflip_prob"], d["flip_prob"]) == (256, None, 0.5, 0.5), path
                if ds == "mmhunan":
                    assert len(m["evaluation"]["classes"]) == 7 and "dataset_options" not in d, path
                else:
                    assert "clutter" not in m["evaluation"]["classes"] and len(m["evaluation"]["classes"]) == 5, path
                    assert d["dataset_options"] == {"train_window": 256, "eroded_test_labels": True} and d["scale_range"] is None and m["evaluation"]["stride"] == 32, path


@pytest.mark.parametrize("key", sorted(TABLE_VI), ids=lambda k: f"{k[0]}_vit_{k[1]}")
def test_mmsam_info_prints_table_vi_encoder_tuning_parameters(key, capsys):
    adapter, v = key
    exact, millions = TABLE_VI[key]
    # the count follows from the architecture: per block (width C) and stream
    c, depth = WIDTH_DEPTH[v]
    per_block = 2 * 2 * (c * c // 4 + c // 4 + c // 4 * c + c) + 2 if adapter == "mmadapter" else \
        2 * (2 * 8 * c + 2 * (4 * c + 16 * c)) + 4
    assert per_block * depth == exact
    recipe = CONFIGS / "vaihingen" / f"mfnet_{adapter}_vit_{v}.yaml"
    with torch.device("meta"):  # ViT-H's weights need no memory for a count
        code = main(["info", "--config", str(recipe), "--model.method.init_args.checkpoint", "null"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"backbone: sam_vit_{v}" in out
    counts = _counts(out)
    assert counts["adapters"] == exact and f"{counts['adapters'] / 1e6:.2f}" == millions
    # DFM + decoder (6 classes) + SAM's prompt encoder and mask decoder (unused, not held) = Table VI's +6.22 M
    with torch.device("meta"):
        sam = create_backbone(f"sam_vit_{v}", img_size=256)
    unused = sum(p.numel() for m in (sam.prompt_encoder, sam.mask_decoder) for p in m.parameters())
    assert f"{(counts['fusion'] + counts['heads'] + unused) / 1e6:.2f}" == "6.22"
