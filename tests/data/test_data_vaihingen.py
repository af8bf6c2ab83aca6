"""ISPRS Vaihingen loader on tiny tiles written in the official layout and encodings."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.check import check_dataset
from mmsam.data.datasets import create_dataset, get_dataset_entry
from mmsam.data.datasets.isprs import (
    VaihingenDataset,
    colours_to_ids,
    ids_to_colours,
    read_label,
)
from mmsam.data.synthetic import get_generator
from mmsam.data.transforms import eval_transform
from mmsam.errors import ConfigError, DataError

# The ISPRS colour code, written out here independently of the loader.
COLOURS = np.array([(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0),
                    (255, 0, 0)], np.uint8)
MFNET_TRAIN = ["1", "3", "23", "26", "7", "11", "13", "28", "17", "32", "34", "37"]
MFNET_TEST = ["5", "21", "15", "30"]


def tile_hw(area: str) -> tuple[int, int]:
    """Non-square tile sizes that differ per area."""
    return 20 + int(area) % 5, 26 + int(area) % 3


def write_vaihingen(root: Path, areas: list[str], seed: int = 0) -> dict[str, dict]:
    """Write ``areas`` as Vaihingen tiles; return each tile's arrays."""
    rng = np.random.default_rng(seed)
    for sub in ("top", "dsm", "gts_for_participants", "gts_eroded_for_participants"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    out = {}
    for area in areas:
        h, w = tile_hw(area)
        irrg = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        dsm = (rng.uniform(255.0, 275.0, (h, w))).astype(np.float32)
        ids = rng.integers(0, 6, (h, w))
        eroded = COLOURS[ids].copy()
        boundary = rng.random((h, w)) < 0.2
        eroded[boundary] = 0
        name = f"top_mosaic_09cm_area{area}"
        Image.fromarray(irrg).save(root / "top" / f"{name}.tif")
        Image.fromarray(dsm).save(root / "dsm" / f"dsm_09cm_matching_area{area}.tif")
        Image.fromarray(COLOURS[ids]).save(root / "gts_for_participants" / f"{name}.tif")
        Image.fromarray(eroded).save(
            root / "gts_eroded_for_participants" / f"{name}_noBoundary.tif")
        out[area] = {"irrg": irrg, "dsm": dsm, "ids": ids, "boundary": boundary}
    return out


@pytest.fixture()
def vaihingen(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "Vaihingen"
    return root, write_vaihingen(root, MFNET_TRAIN + MFNET_TEST)


def test_registry_entry() -> None:
    e = get_dataset_entry("vaihingen")
    assert e.classes == ("impervious_surfaces", "building", "low_vegetation", "tree", "car",
                         "clutter")
    assert e.palette[1] == (0, 0, 255) and e.default_modalities == ("irrg", "dsm")
    assert e.splits == ("train", "test") and get_generator("vaihingen") is not None


def test_mfnet_split_ids_and_val_is_test(vaihingen) -> None:
    root, _ = vaihingen
    train = VaihingenDataset(root, "train")
    test = VaihingenDataset(root, "test")
    val = VaihingenDataset(root, "val")
    assert [s.id for s in train.samples] == [f"area{a}" for a in MFNET_TRAIN]
    assert [s.id for s in test.samples] == [f"area{a}" for a in MFNET_TEST]
    assert [s.id for s in val.samples] == [s.id for s in test.samples]
    official = VaihingenDataset(root, "train", split_scheme="official", check=False)
    assert len(official) == 16 and "area5" in [s.id for s in official.samples]
    assert len(VaihingenDataset(root, "test", split_scheme="official", check=False)) == 17


def test_item_reads_irrg_dsm_and_full_gt_for_training(vaihingen) -> None:
    root, tiles = vaihingen
    ds = VaihingenDataset(root, "train", cache_tiles=False)
    item = ds[0]
    t = tiles["1"]
    assert item["meta"] == {"id": "area1", "condition": "all", "case": "normal"}
    # IRRG: the stored band order (NIR, R, G), /255, no mean/std.
    expected = torch.from_numpy(t["irrg"].transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.allclose(item["modalities"]["irrg"], expected)
    # DSM: min-max over the tile, repeated to 3 channels.
    d = t["dsm"]
    dsm = item["modalities"]["dsm"]
    assert torch.allclose(dsm[0], torch.from_numpy((d - d.min()) / (d.max() - d.min())), atol=1e-6)
    assert torch.equal(dsm[0], dsm[2]) and dsm.min() == 0 and dsm.max() == 1
    assert torch.equal(item["label"], torch.from_numpy(t["ids"]))  # full GT: no 255
    assert item["present"]["dsm"].item() is True


def test_eval_splits_read_the_eroded_gt_at_native_size(vaihingen) -> None:
    root, tiles = vaihingen
    ds = VaihingenDataset(root, "test", transform=eval_transform(None))
    item = ds[0]
    t = tiles["5"]
    assert item["label"].shape == tile_hw("5")
    assert item["modalities"]["irrg"].shape[1:] == tile_hw("5")
    want = np.where(t["boundary"], 255, t["ids"])
    assert torch.equal(item["label"], torch.from_numpy(want))
    full = VaihingenDataset(root, "test", eroded_test_labels=False)[0]["label"]
    assert torch.equal(full, torch.from_numpy(t["ids"]))


def test_train_window_keeps_the_tile_normalisation(vaihingen) -> None:
    root, tiles = vaihingen
    ds = VaihingenDataset(root, "train", train_window=8)
    torch.manual_seed(0)
    d = tiles["1"]["dsm"]
    full = (d - d.min()) / (d.max() - d.min())
    for _ in range(5):
        item = ds[0]
        assert item["label"].shape == (8, 8)
        win = item["modalities"]["dsm"][0].numpy()
        # the window is a sub-window of the tile-normalised DSM (not re-scaled to [0, 1])
        hits = [(y, x) for y in range(d.shape[0] - 7) for x in range(d.shape[1] - 7)
                if np.allclose(full[y:y + 8, x:x + 8], win, atol=1e-6)]
        assert len(hits) == 1
        y, x = hits[0]
        assert torch.equal(item["label"], torch.from_numpy(tiles["1"]["ids"][y:y + 8, x:x + 8]))


def test_cached_training_tiles_are_not_read_again(vaihingen) -> None:
    root, _ = vaihingen
    ds = VaihingenDataset(root, "train")
    first = ds[0]
    (root / "top" / "top_mosaic_09cm_area1.tif").unlink()
    assert torch.equal(ds[0]["modalities"]["irrg"], first["modalities"]["irrg"])
    fresh = VaihingenDataset(root, "train", cache_tiles=False, check=False)
    with pytest.raises(DataError, match="top_mosaic_09cm_area1.tif"):
        fresh[0]


def test_palette_round_trip_and_black_is_ignore() -> None:
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 6, (7, 9)).astype(np.uint8)
    ids[0, :3] = 255
    colours = ids_to_colours(ids)
    assert colours[0, 0].tolist() == [0, 0, 0]
    assert colours[1, 1].tolist() == COLOURS[ids[1, 1]].tolist()
    assert np.array_equal(colours_to_ids(colours), ids)


def test_unknown_colour_names_file_and_colour(tmp_path: Path) -> None:
    bad = COLOURS[np.zeros((4, 5), int)].copy()
    bad[2, 3] = (10, 20, 30)
    path = tmp_path / "top_mosaic_09cm_area1.tif"
    Image.fromarray(bad).save(path)
    with pytest.raises(DataError, match=r"top_mosaic_09cm_area1\.tif.*\(10, 20, 30\) x1"):
        read_label(path)


def test_missing_file_is_named(vaihingen) -> None:
    root, _ = vaihingen
    (root / "dsm" / "dsm_09cm_matching_area23.tif").unlink()
    with pytest.raises(DataError, match=r"dsm_09cm_matching_area23\.tif: missing file"):
        VaihingenDataset(root, "train")
    ds = VaihingenDataset(root, "train", missing=["dsm"])  # not read when declared missing
    item = ds[2]
    assert not item["present"]["dsm"].item() and torch.all(item["modalities"]["dsm"] == 0)


def test_nan_dsm_is_a_data_error_and_flat_dsm_is_zero(vaihingen) -> None:
    root, tiles = vaihingen
    path = root / "dsm" / "dsm_09cm_matching_area3.tif"
    d = tiles["3"]["dsm"].copy()
    d[1, 1] = np.nan
    Image.fromarray(d).save(path)
    with pytest.raises(DataError, match=r"dsm_09cm_matching_area3\.tif.*1 NaN"):
        VaihingenDataset(root, "train", cache_tiles=False)[1]
    Image.fromarray(np.full(d.shape, 260.0, np.float32)).save(path)
    assert torch.all(VaihingenDataset(root, "train")[1]["modalities"]["dsm"] == 0)


def test_wrong_size_and_bad_options(vaihingen) -> None:
    root, tiles = vaihingen
    Image.fromarray(tiles["7"]["irrg"][:-1]).save(root / "top" / "top_mosaic_09cm_area7.tif")
    with pytest.raises(DataError, match=r"top_mosaic_09cm_area7\.tif: .* but the label"):
        VaihingenDataset(root, "train")
    with pytest.raises(ConfigError, match="split"):
        VaihingenDataset(root, "validation")
    with pytest.raises(ConfigError, match="split_scheme"):
        VaihingenDataset(root, "train", split_scheme="mmseg")
    with pytest.raises(ConfigError, match="no modality"):
        VaihingenDataset(root, "train", modalities=["rgb"])


def test_parent_root_and_check_command(vaihingen) -> None:
    root, _ = vaihingen
    ds = create_dataset("vaihingen", root=root.parent, split="test")
    assert ds.root == root
    report = check_dataset("vaihingen", root)
    assert report.ok, report.format()
    assert report.splits["train"].samples == 12 and report.splits["test"].samples == 4
    assert report.splits["train"].expected == 12
    (root / "gts_eroded_for_participants" / "top_mosaic_09cm_area21_noBoundary.tif").unlink()
    bad = check_dataset("vaihingen", root)
    assert bad.exit_code == 1
    assert any("area21_noBoundary" in p for p in bad.problem_paths())


@pytest.mark.parametrize("layout", ["zip_folders", "flat"])
def test_complete_release_layouts_and_extensions(tmp_path: Path, layout: str) -> None:
    """GT as the COMPLETE zips unpack (own folder or flat in the root), .TIF / .tiff names."""
    root = tmp_path / "Vaihingen"
    tiles = write_vaihingen(root, MFNET_TRAIN + MFNET_TEST)
    full, eroded = root / "gts_for_participants", root / "gts_eroded_for_participants"
    if layout == "flat":  # torchgeo: ground_truth_COMPLETE.zip unpacked into the root
        full_dst = eroded_dst = root
    else:
        full_dst = root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE"
        eroded_dst = root / "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE"
        full_dst.mkdir()
        eroded_dst.mkdir()
    for i, f in enumerate(sorted(full.iterdir())):
        f.rename(full_dst / (f.stem + (".TIF" if i % 2 else ".tif")))
    for i, f in enumerate(sorted(eroded.iterdir())):
        f.rename(eroded_dst / (f.stem + (".tiff" if i % 2 else ".tif")))
    full.rmdir()
    eroded.rmdir()
    top = root / "top" / "top_mosaic_09cm_area1.tif"
    top.rename(top.with_suffix(".TIFF"))
    (root / "top" / "._top_mosaic_09cm_area3.tif").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble
    train = VaihingenDataset(root, "train")
    test = VaihingenDataset(root, "test")
    assert len(train) == 12 and len(test) == 4
    assert train.samples[0].files["irrg"].name == "top_mosaic_09cm_area1.TIFF"
    assert train.samples[1].files["irrg"].name == "top_mosaic_09cm_area3.tif"
    item = train[0]
    assert torch.equal(item["label"], torch.from_numpy(tiles["1"]["ids"]))
    t = tiles[MFNET_TEST[0]]
    expected = torch.from_numpy(np.where(t["boundary"], 255, t["ids"]))
    assert torch.equal(test[0]["label"], expected)
    assert check_dataset("vaihingen", root).ok


def test_missing_complete_release_label_names_the_participants_path(vaihingen) -> None:
    root, _ = vaihingen
    (root / "gts_for_participants" / "top_mosaic_09cm_area1.tif").unlink()
    with pytest.raises(DataError, match=r"gts_for_participants/top_mosaic_09cm_area1\.tif: missing"):
        VaihingenDataset(root, "train")
