"""`mmsam import`: checkpoints written by the papers' own code become model folders whose logits
equal the official model's (the golden values of tests/golden, produced by benchmarks/parity/)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import mmsam
from mmsam.cli import main
from mmsam.interop.memorysam import ours_to_official
from mmsam.methods import MemorySAM
from mmsam.testing import fill_deterministic, fixed_input, load_golden

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _no_dropout(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            m.dropout_p = 0.0


def _folder_config(path: Path, method: dict, classes: int, modalities: list[str]) -> Path:
    """A config that builds ``method`` for ``classes`` classes and ``modalities`` (no data needed)."""
    cfg = {
        "model": {"method": method},
        "trainer": {"accelerator": "cpu", "logger": False, "enable_checkpointing": False},
        "data": {"dataset": "folder", "root": str(path.parent / "nodata"), "modalities": modalities,
                 "dataset_options": {"classes": [f"c{i}" for i in range(classes)]}},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_memorysam_official_checkpoint_imports_to_the_official_logits(tmp_path: Path, capsys) -> None:
    tensors, meta = load_golden(GOLDEN / "memorysam_sam2_hiera_t.safetensors")
    kwargs = json.loads(meta["init_args"])
    seed = int(meta["seed"])
    # the official training script's file: LoRA_Sam's state dict, written from the parity weights
    model = MemorySAM(**kwargs)
    fill_deterministic(model, seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("positional_encoding_gaussian_matrix"):
                b.copy_(fixed_input(tuple(b.shape), seed, name=name))
    official = {ours_to_official(k): v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.sam2_model.")}
    assert any(".attn.qkv.linear_a_q." in k for k in official) and all(k.startswith("sam.") for k in official)
    ckpt = tmp_path / "memorysam_official.pth"
    torch.save(official, ckpt)
    del model

    init = {k: v for k, v in kwargs.items() if k not in ("num_classes", "modalities")}
    cfg = _folder_config(tmp_path / "c.yaml", {"class_path": "mmsam.methods.MemorySAM", "init_args": init},
                         kwargs["num_classes"], kwargs["modalities"])
    assert main(["import", "--from", "memorysam", str(ckpt), "--config", str(cfg), "--output", str(tmp_path / "model")]) == 0
    assert "imported" in capsys.readouterr().out

    imported = mmsam.load(tmp_path / "model").task.method
    imported.train()  # the golden logits were taken in training mode (SPMM on), dropout off
    _no_dropout(imported)
    imported.spmm.prototypes.zero_()
    x, label = tensors["images"], tensors["label"].long()
    for m in (2, 3):
        with torch.no_grad():
            out = imported({"modalities": {n: x[i] for i, n in enumerate(kwargs["modalities"][:m])}, "label": label})
        diff = (out["logits"] - tensors[f"logits_m{m}"]).abs().max().item()
        assert diff <= 1e-5, f"M={m}: imported logits differ from the official ones by {diff:.2e}"


def test_import_refuses_bad_files(tmp_path: Path, capsys) -> None:
    cfg = _folder_config(tmp_path / "c.yaml", {"class_path": "mmsam.methods.MemorySAM",
                                               "init_args": {"backbone": "sam2_hiera_micro", "img_size": 64}}, 4, ["rgb", "depth"])
    wrong = tmp_path / "wrong.pth"
    torch.save({"sam.image_encoder.trunk.blocks.0.attn.qkv.qkv.weight": torch.zeros(3, 3)}, wrong)

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    for path, message in ((wrong, "does not fit"), (evil, "tensors-only"), (tmp_path / "none.pth", "not found")):
        assert main(["import", "--from", "memorysam", str(path), "--config", str(cfg), "--output", str(tmp_path / "m")]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("mmsam: error:") and path.name in last and message in last, last
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(SystemExit):  # not a known format
        main(["import", "--from", "autogluon", str(wrong), "--config", str(cfg), "--output", str(tmp_path / "m")])
    # a Conv-LoRA file for a config that builds another method, and a MemorySAM file for a Conv-LoRA config
    assert main(["import", "--from", "convlora", str(wrong), "--config", str(cfg), "--output", str(tmp_path / "m")]) == 2
    assert "fills an mmsam ConvLoRASAM" in capsys.readouterr().err
    cfg = _folder_config(tmp_path / "c.yaml", {"class_path": "mmsam.methods.ConvLoRASAM",
                                               "init_args": {"backbone": "sam_vit_tiny", "img_size": 128}}, 4, ["rgb"])
    assert main(["import", "--from", "convlora", str(wrong), "--config", str(cfg), "--output", str(tmp_path / "m")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "wrong.pth" in last and "not an AutoGluon SAM checkpoint" in last, last


def _parity_mfnet():
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "parity" / "mfnet.py"
    spec = importlib.util.spec_from_file_location("mmsam_parity_mfnet_import", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mfnet_official_checkpoint_imports_to_the_official_logits(tmp_path: Path, capsys) -> None:
    """An MMLoRA checkpoint in the official layout (64-grid position embedding, 127-row global
    rel-pos tables, fused q/v LoRA factors, wx/wy mixing weights) imports to the official logits."""
    from mmsam.interop.mfnet import rule_for

    pm = _parity_mfnet()
    adapter = "mm_lora"
    golden, meta = load_golden(GOLDEN / f"mfnet_{adapter}.safetensors")
    shapes = json.loads(meta["official_shapes"])  # the official state dict's layout, recorded by the parity script
    torch.manual_seed(0)
    ours = pm.build_ours(adapter)
    sd = {**dict(ours.named_parameters()), **dict(ours.named_buffers())}
    tables = pm.official_size_tables(adapter)
    official = {}
    for key, shape in shapes.items():
        src, fn = rule_for(key, adapter, ["irrg", "dsm"])
        value = tables[key] if key in tables else fn([sd[k] for k in src])
        assert list(value.shape) == shape, key
        official[("sam." + key) if key.startswith("image_encoder.") else key] = value.detach().clone()
    ckpt = tmp_path / "mfnet_mmlora_official.pth"
    torch.save(official, ckpt)
    del ours, sd

    method = {"class_path": "mmsam.methods.MFNet", "init_args": {"backbone": "sam_vit_b", "img_size": 256,
              "adapter": {"class_path": "mmsam.adapters.MMLoRAConfig"}}}
    cfg = _folder_config(tmp_path / "c.yaml", method, pm.NUM_CLASSES, list(pm.MODALITIES))
    assert main(["import", "--from", "mfnet", str(ckpt), "--config", str(cfg), "--output", str(tmp_path / "model")]) == 0
    model = mmsam.load(tmp_path / "model").task.method.eval()
    irrg, dsm, _ = pm.fixed_data()
    with torch.no_grad():
        logits = model(pm.ours_batch(irrg, dsm))["logits"]
    diff = (logits[..., :: pm.SUB, :: pm.SUB] - golden["logits_sub"]).abs().max().item()
    assert diff <= 1e-6, f"imported MFNet logits differ from the official ones by {diff:.2e}"


def _parity_convlora_model():
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "parity" / "convlora_model.py"
    spec = importlib.util.spec_from_file_location("mmsam_parity_convlora_model_import", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convlora_autogluon_checkpoint_imports_to_the_official_logits(tmp_path: Path, capsys) -> None:
    """An AutoGluon ``model.ckpt`` (``{"state_dict": {"model.model.<SamModel key>": …}}``, Conv-LoRA
    in the fused qkv, 10 mask tokens, the K+1 class head), written from the parity weights in the
    official layout the golden file records, imports to AutoGluon's outputs."""
    from mmsam.interop.convlora import to_official

    pm = _parity_convlora_model()
    golden, meta = load_golden(GOLDEN / "convlora_model.safetensors")
    layout = json.loads(meta["official_layout"])
    ours = pm.build_ours()
    official = to_official(ours.state_dict(), list(layout))
    assert {k: list(v.shape) for k, v in official.items()} == layout
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {meta["official_prefix"] + k: v for k, v in official.items()}}, ckpt)
    del ours

    init = {k: v for k, v in json.loads(meta["init_args"]).items() if k not in ("num_classes", "modalities")}
    init["adapter"] = {"class_path": "mmsam.adapters.ConvLoRAConfig", "init_args": json.loads(meta["lora"])}
    cfg = _folder_config(tmp_path / "c.yaml", {"class_path": "mmsam.methods.ConvLoRASAM", "init_args": init},
                         pm.NUM_CLASSES, ["rgb"])
    assert main(["import", "--from", "convlora", str(ckpt), "--config", str(cfg), "--output", str(tmp_path / "model")]) == 0
    assert "imported" in capsys.readouterr().out

    model = mmsam.load(tmp_path / "model").task.method.eval()
    x = pm.image()
    with torch.no_grad():
        logits = model({"modalities": {"rgb": x}})["logits"]
        masks, classes = model.head(model.forward_features({"modalities": {"rgb": x}}))
    sub = pm.SUB
    assert (masks - golden["official.masks"]).abs().max().item() <= 5e-6  # HF's LayerNorm eps 1e-6 vs 1e-5: 7e-7
    assert (classes - golden["official.class_logits"]).abs().max().item() <= 2e-4  # measured 6.4e-5
    semantic = logits[..., ::sub, ::sub]
    assert (semantic.exp() - golden["official.semantic_sub"]).abs().max().item() <= 2e-4  # measured 4.8e-5
    assert torch.equal(semantic.argmax(1), golden["official.semantic_sub"].argmax(1))
