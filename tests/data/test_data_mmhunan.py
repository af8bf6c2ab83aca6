"""MMHunan loader on tiny tiles in MFNet's layout (PNG optical + DEM, int8 TIFF masks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.check import check_dataset
from mmsam.data.datasets import create_dataset, get_dataset_entry
from mmsam.data.datasets.mmhunan import MMHunanDataset, read_label
from mmsam.data.datasets.mmhunan_splits import MMHUNAN_TEST_IDS, MMHUNAN_TRAIN_IDS
from mmsam.errors import DataError

S = 6


def write_tile(root: Path, tile: str, rng: np.random.Generator) -> dict:
    """One tile: RGB PNG, one-band DEM PNG, signed int8 mask TIFF with -1 = unlabelled."""
    for f in ("images_png", "dsm_pngs", "masks_png"):
        (root / f).mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    dem = rng.integers(10, 200, (S, S), dtype=np.uint8)
    ids = rng.integers(-1, 7, (S, S)).astype(np.int8)
    Image.fromarray(rgb).save(root / "images_png" / f"{tile}.png")
    Image.fromarray(dem).save(root / "dsm_pngs" / f"{tile}.png")
    # bytes of int8, tagged SampleFormat = 2 (signed) as an int8 GeoTIFF is
    Image.fromarray(ids.view(np.uint8), "L").save(root / "masks_png" / f"{tile}.tif",
                                                 tiffinfo={339: 2})
    return {"rgb": rgb, "dem": dem, "ids": ids}


@pytest.fixture(scope="module")
def hunan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mmhunan") / "Hunan"
    rng = np.random.default_rng(0)
    tiles = {t: write_tile(root, t, rng) for t in MMHUNAN_TRAIN_IDS + MMHUNAN_TEST_IDS}
    return root, tiles


def test_official_mfnet_lists() -> None:
    assert len(MMHUNAN_TRAIN_IDS) == 450 and len(MMHUNAN_TEST_IDS) == 50
    assert not set(MMHUNAN_TRAIN_IDS) & set(MMHUNAN_TEST_IDS)
    assert MMHUNAN_TRAIN_IDS[:3] == ("10434", "11524", "11607") and MMHUNAN_TEST_IDS[-1] == "11624"
    e = get_dataset_entry("mmhunan")
    assert e.classes == ("cropland", "forest", "grassland", "wetland", "water", "unused_land",
                         "built_up")
    assert e.default_modalities == ("rgb", "dsm") and e.splits == ("train", "test")


def test_splits_follow_the_lists_and_val_is_test(hunan) -> None:
    root, _ = hunan
    assert [s.id for s in MMHunanDataset(root, "train").samples] == list(MMHUNAN_TRAIN_IDS)
    assert [s.id for s in MMHunanDataset(root, "val").samples] == list(MMHUNAN_TEST_IDS)
    assert create_dataset("mmhunan", root=root.parent, split="test").root == root


def test_item_encodings(hunan) -> None:
    root, tiles = hunan
    ds = MMHunanDataset(root, "test")
    item = ds[0]
    t = tiles[MMHUNAN_TEST_IDS[0]]
    assert item["meta"]["id"] == MMHUNAN_TEST_IDS[0]
    rgb = torch.from_numpy(t["rgb"].transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.allclose(item["modalities"]["rgb"], rgb)  # /255 only
    d = t["dem"].astype(np.float32)
    want = torch.from_numpy((d - d.min()) / (d.max() - d.min()))
    assert all(torch.allclose(item["modalities"]["dsm"][c], want, atol=1e-6) for c in range(3))
    ids = t["ids"].astype(np.int64)
    assert torch.equal(item["label"], torch.from_numpy(np.where(ids < 0, 255, ids)))
    assert (item["label"] == 255).any()  # -1 became ignore


def test_bad_ids_and_missing_files(hunan, tmp_path: Path) -> None:
    root, _ = hunan
    bad = tmp_path / "9.tif"
    Image.fromarray(np.array([[0, 9]], np.uint8)).save(bad)
    with pytest.raises(DataError, match=r"9\.tif: label ids \[9\]"):
        read_label(bad)
    unsigned = tmp_path / "u.tif"
    Image.fromarray(np.array([[255, 3]], np.uint8)).save(unsigned)
    assert read_label(unsigned).tolist() == [[255, 3]]
    copy = tmp_path / "Hunan"
    rng = np.random.default_rng(1)
    for t in MMHUNAN_TEST_IDS[:-1]:
        write_tile(copy, t, rng)
    with pytest.raises(DataError, match=rf"masks_png/{MMHUNAN_TEST_IDS[-1]}\.tif: missing"):
        MMHunanDataset(copy, "test")


def test_check_counts_the_reference_sizes(hunan) -> None:
    root, _ = hunan
    report = check_dataset("mmhunan", root)
    assert report.ok, report.format()
    assert report.splits["train"].samples == 450 and report.splits["test"].expected == 50
    assert report.class_pixels["train"][-1] > 0  # ignore pixels counted
