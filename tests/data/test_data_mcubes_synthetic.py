"""The synthetic MCubeS stand-in: layout, encodings, determinism, materials that need fusion."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.datamodule import MultiModalDataModule
from mmsam.data.datasets.mcubes import LEFT_OFFSET, read_list
from mmsam.data.synthetic import materials as mt
from mmsam.data.synthetic.mcubes import MARKER, crop_width, generate_mcubes, is_generated
from mmsam.errors import ConfigError

FOLDERS = {"polL_color": ".png", "polL_aolp_sin": ".npy", "polL_aolp_cos": ".npy",
           "polL_dolp": ".npy", "NIR_warped": ".png", "NIR_warped_mask": ".png", "GT": ".png",
           "SS": ".png"}


def test_layout_and_encodings(mcubes_root: Path, mcubes_info: dict) -> None:
    size, counts = mcubes_info["size"], mcubes_info["counts"]
    lists = {s: read_list(mcubes_root / "list_folder" / f"{s}.txt")
             for s in ("train", "val", "test", "all")}
    assert [len(lists[s]) for s in ("train", "val", "test")] == list(counts.values())
    assert lists["all"] == lists["train"] + lists["val"] + lists["test"]
    assert len(set(lists["all"])) == len(lists["all"])
    for folder, suffix in FOLDERS.items():
        assert sorted(p.stem for p in (mcubes_root / folder).iterdir()) == sorted(lists["all"])
        assert {p.suffix for p in (mcubes_root / folder).iterdir()} == {suffix}
    stem = lists["val"][0]
    width = LEFT_OFFSET + crop_width(size)
    color = Image.open(mcubes_root / "polL_color" / f"{stem}.png")
    assert color.mode == "RGB" and color.size == (width, size)
    assert Image.open(mcubes_root / "NIR_warped" / f"{stem}.png").mode == "I;16"
    for folder in ("GT", "SS", "NIR_warped_mask"):
        assert Image.open(mcubes_root / folder / f"{stem}.png").mode == "L"
    mask = np.array(Image.open(mcubes_root / "NIR_warped_mask" / f"{stem}.png"))
    nir = np.array(Image.open(mcubes_root / "NIR_warped" / f"{stem}.png"))
    assert set(np.unique(mask).tolist()) <= {0, 255} and mask[:, 0].all()  # left is invalid
    assert not nir[mask == 255].any() and nir[mask == 0].mean() > 1000
    for folder in ("polL_aolp_sin", "polL_aolp_cos", "polL_dolp"):
        arr = np.load(mcubes_root / folder / f"{stem}.npy")
        assert arr.dtype == np.float32 and arr.shape == (size, width)
    dolp = np.load(mcubes_root / "polL_dolp" / f"{stem}.npy")
    assert 0 <= dolp.min() and dolp.max() <= 1
    gt = np.array(Image.open(mcubes_root / "GT" / f"{stem}.png"))
    assert set(np.unique(gt).tolist()) <= set(range(20)) | {255}
    info = json.loads((mcubes_root / MARKER).read_text())
    assert info["generator"] == "mmsam.synthetic.mcubes" and is_generated(mcubes_root)


def test_deterministic_from_the_seed(tmp_path: Path) -> None:
    kw = dict(num_train=2, num_val=1, num_test=0, size=16, progress=False)
    generate_mcubes(tmp_path / "a", seed=3, **kw)
    generate_mcubes(tmp_path / "b", seed=3, **kw)
    generate_mcubes(tmp_path / "c", seed=4, **kw)

    def tree(root: Path) -> dict:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
                if p.is_file() and p.name != MARKER}

    a, b, c = tree(tmp_path / "a"), tree(tmp_path / "b"), tree(tmp_path / "c")
    assert a == b and len(a) == 3 * len(FOLDERS) + 4
    assert a.keys() == c.keys() and a != c
    with pytest.raises(ConfigError):
        generate_mcubes(tmp_path / "d", size=8, progress=False)


def test_materials_that_colour_confuses_other_sensors_separate() -> None:
    """Asphalt vs rubber, leaf vs green plastic, concrete vs plaster: near in RGB, apart in
    NIR or DoLP."""
    rgb: dict[int, list] = {}
    nir: dict[int, list] = {}
    dolp: dict[int, list] = {}
    for seed in range(6):
        a = mt.render_materials(np.random.default_rng(seed), 96, LEFT_OFFSET + 96, LEFT_OFFSET)
        gt = a["gt"][:, LEFT_OFFSET:]
        valid = a["nir_mask"][:, LEFT_OFFSET:] == 0
        for m in (mt.ASPHALT, mt.RUBBER, mt.CONCRETE, mt.PLASTER, mt.LEAF, mt.GRASS, mt.GLASS,
                  mt.SKY):
            sel = (gt == m) & valid
            if sel.any():
                rgb.setdefault(m, []).append(a["color"][:, LEFT_OFFSET:][sel].mean(0) / 255)
                nir.setdefault(m, []).append(a["nir"][:, LEFT_OFFSET:][sel].mean() / 65535)
                dolp.setdefault(m, []).append(a["dolp"][:, LEFT_OFFSET:][sel].mean())

    def gap(store: dict, x: int, y: int) -> float:
        return float(np.abs(np.mean(store[x], 0) - np.mean(store[y], 0)).max())

    for x, y in ((mt.ASPHALT, mt.RUBBER), (mt.CONCRETE, mt.PLASTER), (mt.GLASS, mt.SKY)):
        assert gap(rgb, x, y) < 0.1, (x, y)
        assert max(gap(nir, x, y), gap(dolp, x, y)) > 0.12, (x, y)
    for m in (mt.LEAF, mt.GRASS):  # vegetation is bright in NIR, not in colour
        assert np.mean(nir[m]) > 1.5 * np.mean(rgb[m], 0).max(), m
    # AoLP follows orientation: ground ~ 0 (cos ~ +-1), facades ~ pi/2 (sin ~ 1)
    a = mt.render_materials(np.random.default_rng(0), 96, LEFT_OFFSET + 96, LEFT_OFFSET)
    glossy = a["dolp"] > 0.3
    ground = glossy & np.isin(a["gt"], (mt.WATER, mt.ASPHALT))
    wall = glossy & np.isin(a["gt"], (mt.GLASS, mt.CERAMIC))
    if ground.any():
        assert np.abs(a["aolp_cos"][ground]).mean() > 0.8
    assert wall.any() and a["aolp_sin"][wall].mean() > 0.8


def test_datamodule_builds_mcubes(tmp_path: Path) -> None:
    dm = MultiModalDataModule(dataset="mcubes", root=str(tmp_path / "mc"), synthesize=True,
                              synth_num_train=4, synth_num_val=2, synth_num_test=2,
                              synth_size=32, train_size=24, eval_size=32, batch_size=2,
                              num_workers=0)
    assert dm.modalities == ("rgb", "aolp", "dolp", "nir") and dm.num_classes == 20
    dm.prepare_data()
    assert is_generated(tmp_path / "mc")
    batch = next(iter(dm.train_dataloader()))
    for m, x in batch["modalities"].items():
        assert x.shape == (2, 3, 24, 24) and x.dtype == torch.float32, m
    val = next(iter(dm.val_dataloader()))
    assert val["label"].shape == (1, 32, 32)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 2
