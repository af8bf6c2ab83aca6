"""Your own modalities from YAML alone: the folder data set, `mmsam data stats`, every method
trained on it, and a model folder of it used in a fresh process."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mmsam.cli import main

CLASSES = ["background", "person", "car"]
SIZE = 64


def _write_scene(root: Path, split: str, i: int, rng: np.random.Generator) -> None:
    """RGB (8-bit PNG), thermal (16-bit 1-channel PNG) and NIR (.npy float) with a label PNG."""
    label = np.zeros((SIZE, SIZE), np.uint8)
    y, x = rng.integers(8, SIZE - 24, 2)
    label[y : y + 16, x : x + 16] = 1 + i % 2
    label[:2] = 255  # some ignored pixels
    rgb = (rng.random((SIZE, SIZE, 3)) * 60 + label[..., None] * 60).clip(0, 255).astype(np.uint8)
    thermal = (rng.random((SIZE, SIZE)) * 9000 + (label == 1) * 30000).astype(np.uint16)
    nir = (rng.random((SIZE, SIZE)) * 0.2 + (label == 2) * 0.7).astype(np.float32)
    for name, arr in (("rgb", rgb), ("thermal", thermal), ("label", label)):
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(d / f"scene{i:03d}.png")
    (root / split / "nir").mkdir(parents=True, exist_ok=True)
    np.save(root / split / "nir" / f"scene{i:03d}.npy", nir)


@pytest.fixture(scope="module", autouse=True)
def _restore_modality_registry():
    """The folder data set registers `thermal` on use; other test modules expect it unknown."""
    from mmsam.data import modalities

    saved = dict(modalities._REGISTRY)
    yield
    modalities._REGISTRY.clear()
    modalities._REGISTRY.update(saved)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("own") / "scenes"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        for i in range(n):
            _write_scene(root, split, i, rng)
    (root / "train" / "rgb" / "._scene000.png").write_bytes(b"\x00\x05\x16\x07")  # a macOS copy's shadow file
    return root


def _config(path: Path, root: Path, run: Path, method: dict, **model) -> Path:
    cfg = {
        "seed_everything": 0,
        "test_after_fit": True,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "default_root_dir": str(run), "log_every_n_steps": 1,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False},
        "model": {"method": method, "loss": "ce", "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
                  "lr_scheduler": {"class_path": "mmsam.engine.schedule.WarmupPoly", "init_args": {"warmup_epochs": 0}}, **model},
        "data": {"dataset": "folder", "root": str(root), "modalities": ["rgb", "thermal", "nir"],
                 "dataset_options": {"classes": CLASSES, "palette": [[0, 0, 0], [220, 20, 60], [0, 0, 142]]},
                 "train_size": SIZE, "eval_size": SIZE, "scale_range": None, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


LORA = {"r": 2, "parts": ["q", "v"]}
METHODS = {
    "sam_lora": {"class_path": "mmsam.methods.SamLoRA", "init_args": {"backbone": "sam_vit_tiny", "img_size": SIZE, "adapter": LORA}},
    "mlesam": {"class_path": "mmsam.methods.MLESAM", "init_args": {"backbone": "sam2_hiera_micro", "img_size": SIZE, "adapter": LORA}},
    "memorysam": {"class_path": "mmsam.methods.MemorySAM", "init_args": {"backbone": "sam2_hiera_micro", "img_size": SIZE, "adapter": LORA}},
    "mfnet": {"class_path": "mmsam.methods.MFNet", "init_args": {"backbone": "sam_vit_tiny", "img_size": SIZE,
                                                                 "adapter": {"class_path": "mmsam.adapters.MMLoRAConfig"}}},
    "convlora": {"class_path": "mmsam.methods.ConvLoRASAM", "init_args": {"backbone": "sam_vit_tiny", "img_size": SIZE,
                 "adapter": {"class_path": "mmsam.adapters.ConvLoRAConfig", "init_args": {"r": 2, "parts": None, "num_experts": 2}}}},
}


def test_stats_are_written_into_the_config(folder_root: Path, tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path / "c.yaml", folder_root, tmp_path / "run", METHODS["sam_lora"])
    assert main(["data", "stats", "--config", str(cfg), "--write"]) == 0
    stats = yaml.safe_load(cfg.read_text())["data"]["dataset_options"]["modality_stats"]
    assert set(stats) == {"rgb", "thermal", "nir"} and (tmp_path / "c.yaml.bak").is_file()
    # thermal is 16-bit: values in [0, 1] after /65535; its three channels repeat one band
    t = stats["thermal"]
    assert 0 < t["mean"][0] < 1 and t["mean"][0] == t["mean"][1] == t["mean"][2] and t["std"][0] > 0
    # recompute the RGB mean independently from the files
    pixels = np.concatenate([np.asarray(Image.open(p)).reshape(-1, 3) / 255.0 for p in sorted((folder_root / "train" / "rgb").glob("scene*.png"))])
    assert np.allclose(stats["rgb"]["mean"], pixels.mean(0), atol=1e-5) and np.allclose(stats["rgb"]["std"], pixels.std(0), atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_on_the_folder_data_set(method: str, folder_root: Path, tmp_path: Path, capsys) -> None:
    cfg = _config(tmp_path / "c.yaml", folder_root, tmp_path / "run", METHODS[method],
                  **({"loss": "none"} if method == "convlora" else {}))
    assert main(["data", "stats", "--config", str(cfg), "--write"]) == 0
    assert main(["fit", "--config", str(cfg)]) == 0, capsys.readouterr().err[-2000:]
    out = capsys.readouterr().out
    assert "[test] modalities: rgb, thermal, nir" in out and "person" in out and "car" in out
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_folder_model_in_a_fresh_process(folder_root: Path, tmp_path: Path) -> None:
    """Export, then predict in a new interpreter that has never registered `thermal`."""
    cfg = _config(tmp_path / "c.yaml", folder_root, tmp_path / "run", METHODS["sam_lora"])
    assert main(["data", "stats", "--config", str(cfg), "--write"]) == 0
    assert main(["fit", "--config", str(cfg), "--test_after_fit", "false"]) == 0
    assert main(["export", "--config", str(cfg), "--ckpt_path", str(tmp_path / "run/checkpoints/last.ckpt"),
                 "--output", str(tmp_path / "model"), "--pattern", "rgb=rgb/*.png", "--pattern", "thermal=thermal/*.png",
                 "--pattern", "nir=nir/*.npy"]) == 0
    res = subprocess.run([sys.executable, "-m", "mmsam.cli", "predict", "--model", str(tmp_path / "model"),
                          "--input", str(folder_root / "test"), "--output", str(tmp_path / "pred")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "predicted 4 scene(s), skipped 0" in res.stdout
    img = Image.open(tmp_path / "pred" / "scene000.png")
    assert img.mode == "P" and img.size == (SIZE, SIZE) and img.getpalette()[3:6] == [220, 20, 60]


def test_bad_folder_options_give_one_line(folder_root: Path, tmp_path: Path, capsys) -> None:
    for options, message in (
        ({}, "dataset_options.classes"),
        ({"classes": CLASSES, "modality_stats": {"depth": {"mean": [0], "std": [1]}}}, "depth"),
        ({"classes": CLASSES, "palette": [[0, 0, 0]]}, "palette"),
    ):
        cfg = _config(tmp_path / "c.yaml", folder_root, tmp_path / "run", METHODS["sam_lora"])
        data = yaml.safe_load(cfg.read_text())
        data["data"]["dataset_options"] = options
        cfg.write_text(yaml.safe_dump(data))
        assert main(["fit", "--config", str(cfg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("mmsam: error:") and message in err[-1], err[-3:]


def test_readme_folder_yaml_builds(folder_root: Path, tmp_path: Path, capsys) -> None:
    """The README's ten-line RGB + thermal config, with a tiny backbone and no weights file."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b.split("```", 1)[0] for b in text.split("```yaml\n")[1:] if "dataset: folder" in b)
    assert len(block.strip().splitlines()) <= 12
    cfg = tmp_path / "my_scenes.yaml"
    cfg.write_text(block)
    assert main(["info", "--config", str(cfg), "--model.method.init_args.checkpoint", "null",
                 "--model.method.init_args.backbone", "sam2_hiera_micro", "--model.method.init_args.img_size", "64",
                 "--data.root", str(folder_root)]) == 0
    out = capsys.readouterr().out
    assert "method: MLESAM" in out and "modalities: rgb, thermal" in out and "classes: 3" in out
