"""MemorySAM through the command line: a short fit with the missing-modality table, the recipe's LoRA count."""
from __future__ import annotations

import re
from pathlib import Path

import torch

from mmsam.cli import main

ROOT = Path(__file__).parents[2]


def _counts(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+[\d,]+\s+\((\d+)\)$", text, re.M)}


def test_fit_memorysam_with_every_modality_subset(tiny_root, make_config, tmp_path, capsys):
    method = {"class_path": "mmsam.methods.MemorySAM",
              "init_args": {"backbone": "sam2_hiera_micro", "img_size": 64,
                            "adapter": {"r": 2, "parts": ["q", "v"], "slice_width": "in"}}}
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run",
                      model__method=method, model__evaluation__modality_subsets="all")
    assert main(["fit", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "[test] modalities: rgb, depth, event, lidar" in text
    # the missing-modality table: one row per non-empty subset of the four sensors
    table = text.split("modalities present (x) -> scores", 1)[1].strip().splitlines()[1:16]
    assert len(table) == 15 and all(re.search(r"(\d+\.\d\d\s+){2}\d+\.\d\d$", row) for row in table)
    log = next((tmp_path / "run" / "logs").glob("version_*/metrics.csv")).read_text()
    assert "train/loss_proto" in log and "train/loss_main" in log
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    protos = state["state_dict"]["method.spmm.prototypes"]
    assert protos.shape == (25, 4) and protos.abs().sum() > 0  # micro conv_s0: 32 / 8 = 4 channels


def test_deliver_recipe_prints_159488_lora_parameters(capsys):
    recipe = ROOT / "configs/deliver/memorysam_sam2_hiera_b+.yaml"
    assert main(["info", "--config", str(recipe), "--model.method.init_args.checkpoint", "null"]) == 0
    out = capsys.readouterr().out
    counts = _counts(out)
    assert "method: MemorySAM" in out and "backbone: sam2_hiera_b+" in out
    # rank 4 on q and v of 24 Hiera blocks; the 3 stage-transition blocks adapt d_in of their 2 d_in channels
    d_in = [112] * 2 + [112] + [224] * 2 + [224] + [448] * 15 + [448] + [896] * 2
    assert counts["adapters"] == 2 * 2 * 4 * sum(d_in) == 159_488
    assert re.search(r"^adapters\s+159,488\s", out, re.M)
    assert counts["trainable"] == counts["adapters"] + counts["fusion"] + counts["heads"]
