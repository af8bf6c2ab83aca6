"""From a trained run to use: model folder export, loading on the base file, the Python API and
prediction over a folder of new captures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import mmsam
from mmsam.backbones import create_backbone
from mmsam.cli import main
from mmsam.engine.report import load_checkpoint_weights


@pytest.fixture(scope="module")
def base_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny SAM saved exactly as Meta ships SAM files (flat state dict)."""
    path = tmp_path_factory.mktemp("base") / "sam_vit_tiny.pth"
    torch.manual_seed(0)
    torch.save(create_backbone("sam_vit_tiny", img_size=64).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def trained(tiny_root: Path, base_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from conftest import write_config  # tests/integration/conftest.py (rootdir import mode)

    tmp = tmp_path_factory.mktemp("deploy")
    cfg = write_config(tmp / "c.yaml", tiny_root, tmp / "run", model__method__init_args__checkpoint=str(base_file),
                       model__method__class_path="mmsam.methods.MLESAM",
                       model__method__init_args__backbone="sam_vit_tiny", test_after_fit=False)
    assert main(["fit", "--config", str(cfg)]) == 0
    return {"cfg": cfg, "ckpt": tmp / "run" / "checkpoints" / "last.ckpt", "tmp": tmp}


def _trained_task(trained: dict):
    from mmsam.cli import lightning_main

    cli = lightning_main(["--config", str(trained["cfg"])], run=False)
    load_checkpoint_weights(cli.model, trained["ckpt"])
    cli.datamodule.setup("test")
    return cli.model.eval(), cli.datamodule


@pytest.fixture(scope="module")
def exported(trained: dict) -> Path:
    out = trained["tmp"] / "model"
    assert main(["export", "--config", str(trained["cfg"]), "--ckpt_path", str(trained["ckpt"]), "--output", str(out),
                 "--pattern", "rgb=*_rgb.png"]) == 0
    return out


def test_export_then_load_reproduces_the_trained_logits(trained: dict, exported: Path, base_file: Path) -> None:
    out = exported
    info = yaml.safe_load((out / "mmsam.yaml").read_text())
    assert info["base_checkpoint"]["file"] == "sam_vit_tiny.pth" and len(info["base_checkpoint"]["sha256"]) == 64
    assert info["model"]["method"]["class_path"] == "mmsam.methods.MLESAM" and info["mmsam_version"] == mmsam.__version__
    assert [m["name"] for m in info["modalities"]] == ["rgb", "depth", "event", "lidar"] and info["patterns"] == {"rgb": "*_rgb.png"}
    assert len(info["class_names"]) == len(info["palette"]) == info["num_classes"] == 25

    from safetensors import safe_open

    task, data = _trained_task(trained)
    with safe_open(str(out / "adapters.safetensors"), framework="pt") as f:
        saved = set(f.keys())
    trainable = {n for n, p in task.method.named_parameters() if p.requires_grad}
    assert trainable <= saved  # parameters ...
    assert any(k.endswith("running_mean") for k in saved)  # ... and buffers (the aux head's BatchNorm)
    assert not any(k.startswith("backbone.image_encoder.patch_embed") for k in saved)  # not the frozen base

    predictor = mmsam.load(out)  # the base file at the path recorded in mmsam.yaml
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        want = task.eval_logits(batch)
        got = predictor.task.eval_logits(batch)
    assert torch.equal(want, got)

    # another base file is refused, naming both hashes
    other = trained["tmp"] / "other.pth"
    torch.manual_seed(1)
    torch.save(create_backbone("sam_vit_tiny", img_size=64).state_dict(), other)
    with pytest.raises(mmsam.errors.CheckpointError, match=r"other\.pth: SHA-256 [0-9a-f]{64} is not the base .*sam_vit_tiny\.pth, SHA-256 [0-9a-f]{64}"):
        mmsam.load(out, checkpoint=other)


def test_random_base_is_embedded(tiny_root: Path, tmp_path: Path) -> None:
    from conftest import write_config  # tests/integration/conftest.py (rootdir import mode)

    cfg = write_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", test_after_fit=False)
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert main(["export", "--config", str(cfg), "--ckpt_path", str(ckpt), "--output", str(tmp_path / "m")]) == 0
    info = yaml.safe_load((tmp_path / "m" / "mmsam.yaml").read_text())
    assert info["base_checkpoint"] is None
    torch.manual_seed(123)  # a different random backbone at build time must not matter
    predictor = mmsam.load(tmp_path / "m")
    task, data = _trained_task({"cfg": cfg, "ckpt": ckpt})
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        assert torch.equal(task.eval_logits(batch), predictor.task.eval_logits(batch))


def test_predict_api_and_folder(exported: Path, tmp_path: Path, capsys) -> None:
    out = exported
    predictor = mmsam.load(out)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    depth = rng.integers(0, 256, (80, 96), dtype=np.uint8)
    pred = predictor.predict({"rgb": rgb, "depth": depth}, probabilities=True)
    assert pred.labels.shape == (80, 96) and pred.labels.dtype == np.uint8
    assert pred.probabilities.shape == (25, 80, 96) and np.allclose(pred.probabilities.sum(0), 1, atol=1e-5)
    assert (pred.probabilities.argmax(0) == pred.labels).all()
    # the same scene from files gives the same labels
    Image.fromarray(rgb).save(tmp_path / "a_rgb.png")
    Image.fromarray(depth).save(tmp_path / "a_depth.png")
    assert np.array_equal(predictor.predict({"rgb": tmp_path / "a_rgb.png", "depth": tmp_path / "a_depth.png"}).labels, pred.labels)
    with pytest.raises(mmsam.errors.ConfigError, match="thermal"):
        predictor.predict({"thermal": rgb})
    with pytest.raises(mmsam.errors.DataError, match="co-registered"):
        predictor.predict({"rgb": rgb, "depth": depth[:40]})

    # a folder: scene a (rgb + depth), scene b (depth only), a hidden macOS file, a broken file
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(rgb).save(inp / "a_rgb.png")
    Image.fromarray(depth).save(inp / "a_depth.png")
    Image.fromarray(depth).save(inp / "b_depth.png")
    (inp / "._a_rgb.png").write_bytes(b"\x00\x05\x16\x07")
    (inp / "c_rgb.png").write_bytes(b"not a png")
    res = tmp_path / "res"
    assert main(["predict", "--model", str(out), "--input", str(inp), "--output", str(res), "--probabilities",
                 "--pattern", "depth=*_depth.png"]) == 0
    text = capsys.readouterr().out
    assert "predicted 2 scene(s), skipped 1" in text and "c_rgb.png" in text and "depth in 1 scene(s)" in text
    label = Image.open(res / "a.png")
    assert label.mode == "P" and label.getpalette()[:6] == [*predictor.palette[0], *predictor.palette[1]]
    assert np.array_equal(np.array(label), pred.labels)
    assert Image.open(res / "a_overlay.png").size == (96, 80)
    assert np.load(res / "b_probs.npy").shape == (25, 80, 96)
    assert not (res / "._a.png").exists()


def _readme_block(lang: str, marker: str) -> str:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split(f"```{lang}\n")[1:]]
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"README has {len(found)} {lang} blocks with {marker!r}"
    return found[0]


def test_readme_python_example_runs_verbatim(exported: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    code = _readme_block("python", "mmsam.load(")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").symlink_to(exported, target_is_directory=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (72, 88, 3), dtype=np.uint8)).save("scene_rgb.png")
    Image.fromarray(rng.integers(0, 256, (72, 88), dtype=np.uint8)).save("scene_depth.png")
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() == "(72, 88) (25, 72, 88)"
