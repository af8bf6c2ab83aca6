"""ISPRS Potsdam loader on tiny tiles in the official layout (RGBIR TIFF, nDSM JPG, padded ids)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.check import check_dataset
from mmsam.data.datasets import get_dataset_entry
from mmsam.data.datasets.isprs import PotsdamDataset, potsdam_padded
from mmsam.data.transforms import eval_transform
from mmsam.errors import ConfigError, DataError

COLOURS = np.array([(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0),
                    (255, 0, 0)], np.uint8)
MFNET_TRAIN = ["6_10", "7_10", "2_12", "3_11", "2_10", "7_8", "5_10", "3_12", "5_12", "7_11",
               "7_9", "6_9", "7_7", "4_12", "6_8", "6_12", "6_7", "4_11"]
MFNET_TEST = ["4_10", "5_11", "2_11", "3_10", "6_11", "7_12"]
H, W = 18, 22


def pad(tile: str) -> str:
    r, c = tile.split("_")
    return f"{int(r):02d}_{int(c):02d}"


def write_potsdam(root: Path, tiles: list[str], seed: int = 0, four_band_mode: str = "RGBA",
                  labels: str = "5_Labels_for_participants") -> dict[str, dict]:
    """Write Potsdam tiles with the official names; return each tile's arrays."""
    rng = np.random.default_rng(seed)
    folders = ("4_Ortho_RGBIR", "3_Ortho_IRRG", "1_DSM", "1_DSM_normalisation", labels,
               labels.replace("participants", "participants_no_Boundary")
               if "participants" in labels else labels + "_noBoundary")
    for f in folders:
        (root / f).mkdir(parents=True, exist_ok=True)
    out = {}
    for t in tiles:
        rgbir = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
        rgbir[0, 0, 3] = 0  # a zero 4th band must not alter the first three (no alpha maths)
        ndsm = rng.integers(0, 256, (H, W), dtype=np.uint8)
        dsm = rng.uniform(30, 80, (H, W)).astype(np.float32)
        ids = rng.integers(0, 6, (H, W))
        eroded = COLOURS[ids].copy()
        boundary = rng.random((H, W)) < 0.25
        eroded[boundary] = 0
        Image.fromarray(rgbir, four_band_mode).save(
            root / folders[0] / f"top_potsdam_{t}_RGBIR.tif")
        Image.fromarray(rgbir[:, :, [3, 0, 1]]).save(
            root / folders[1] / f"top_potsdam_{t}_IRRG.tif")
        Image.fromarray(dsm).save(root / folders[2] / f"dsm_potsdam_{pad(t)}.tif")
        Image.fromarray(ndsm).save(
            root / folders[3] / f"dsm_potsdam_{pad(t)}_normalized_lastools.jpg", quality=95)
        Image.fromarray(COLOURS[ids]).save(root / folders[4] / f"top_potsdam_{t}_label.tif")
        Image.fromarray(eroded).save(root / folders[5] / f"top_potsdam_{t}_label_noBoundary.tif")
        out[t] = {"rgbir": rgbir, "dsm": dsm, "ids": ids, "boundary": boundary}
    return out


@pytest.fixture()
def potsdam(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "Potsdam"
    return root, write_potsdam(root, MFNET_TRAIN + MFNET_TEST)


def test_registry_and_padding() -> None:
    e = get_dataset_entry("potsdam")
    assert e.default_modalities == ("rgb", "dsm") and e.num_classes == 6
    assert potsdam_padded("2_10") == "02_10" and potsdam_padded("7_7") == "07_07"
    with pytest.raises(ConfigError, match="row"):
        potsdam_padded("area5")


def test_mfnet_split_ids(potsdam) -> None:
    root, _ = potsdam
    assert [s.id for s in PotsdamDataset(root, "train").samples] == MFNET_TRAIN
    assert [s.id for s in PotsdamDataset(root, "val").samples] == MFNET_TEST
    assert len(PotsdamDataset(root, "train", split_scheme="official", check=False)) == 24
    assert len(PotsdamDataset(root, "test", split_scheme="official", check=False)) == 14


@pytest.mark.parametrize("mode", ["RGBA", "CMYK"])
def test_rgb_is_the_first_three_rgbir_bands_and_dsm_the_padded_ndsm(tmp_path: Path,
                                                                    mode: str) -> None:
    root = tmp_path / "Potsdam"
    tiles = write_potsdam(root, MFNET_TRAIN + MFNET_TEST, four_band_mode=mode)
    ds = PotsdamDataset(root, "train", modalities=["rgb", "irrg", "dsm"], cache_tiles=False)
    item = ds[MFNET_TRAIN.index("2_10")]
    t = tiles["2_10"]
    rgb = torch.from_numpy(t["rgbir"][:, :, :3].transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.allclose(item["modalities"]["rgb"], rgb)  # /255, no ImageNet mean/std
    irrg = torch.from_numpy(t["rgbir"][:, :, [3, 0, 1]].transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.allclose(item["modalities"]["irrg"], irrg)
    jpg = np.array(Image.open(root / "1_DSM_normalisation"
                              / "dsm_potsdam_02_10_normalized_lastools.jpg"), np.float32)
    want = (jpg - jpg.min()) / (jpg.max() - jpg.min())
    assert torch.allclose(item["modalities"]["dsm"][1], torch.from_numpy(want), atol=1e-6)
    assert torch.equal(item["label"], torch.from_numpy(t["ids"]))


def test_float_dsm_source_and_eroded_eval_labels(potsdam) -> None:
    root, tiles = potsdam
    ds = PotsdamDataset(root, "test", dsm_source="dsm", transform=eval_transform(None))
    assert ds.samples[0].files["dsm"].name == "dsm_potsdam_04_10.tif"
    item = ds[0]
    d = tiles["4_10"]["dsm"]
    assert torch.allclose(item["modalities"]["dsm"][0],
                          torch.from_numpy((d - d.min()) / (d.max() - d.min())), atol=1e-6)
    want = np.where(tiles["4_10"]["boundary"], 255, tiles["4_10"]["ids"])
    assert torch.equal(item["label"], torch.from_numpy(want)) and item["label"].shape == (H, W)
    with pytest.raises(ConfigError, match="dsm_source"):
        PotsdamDataset(root, "test", dsm_source="lidar")


def test_complete_release_label_folders(tmp_path: Path) -> None:
    root = tmp_path / "Potsdam"
    official_test = ["2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14",
                     "5_15", "6_13", "6_14", "6_15", "7_13"]
    write_potsdam(root, official_test, labels="5_Labels_all")
    ds = PotsdamDataset(root, "test", split_scheme="official")
    assert ds.samples[0].files["label"].parent.name == "5_Labels_all_noBoundary"
    assert ds[0]["label"].shape == (H, W)


def test_missing_ndsm_names_the_padded_file(potsdam) -> None:
    root, _ = potsdam
    (root / "1_DSM_normalisation" / "dsm_potsdam_07_08_normalized_lastools.jpg").unlink()
    with pytest.raises(DataError, match=r"dsm_potsdam_07_08_normalized_lastools\.jpg: missing"):
        PotsdamDataset(root, "train")


def test_one_column_short_ndsm_is_reported(potsdam) -> None:
    root, _ = potsdam
    path = root / "1_DSM_normalisation" / "dsm_potsdam_04_10_normalized_lastools.jpg"
    Image.fromarray(np.zeros((H, W - 1), np.uint8)).save(path)
    with pytest.raises(DataError, match=rf"{H}x{W - 1} \(HxW\) but the label"):
        PotsdamDataset(root, "test")
    report = check_dataset("potsdam", root)
    assert report.exit_code == 1 and [p.kind for p in report.problems] == ["size"]


@pytest.mark.parametrize("where", ["5_Labels_all", "flat"])
def test_complete_release_labels_flat_or_in_labels_all(tmp_path: Path, where: str) -> None:
    """5_Labels_all.zip unpacked into its own folder or flat in the root (torchgeo), .TIF names."""
    root = tmp_path / "Potsdam"
    tiles = write_potsdam(root, MFNET_TRAIN + MFNET_TEST, labels="5_Labels_all")
    if where == "flat":
        for folder in ("5_Labels_all", "5_Labels_all_noBoundary"):
            for f in sorted((root / folder).iterdir()):
                f.rename(root / (f.stem + ".TIF"))
            (root / folder).rmdir()
    train = PotsdamDataset(root, "train")
    test = PotsdamDataset(root, "test")
    assert len(train) == 18 and len(test) == 6
    assert torch.equal(train[0]["label"], torch.from_numpy(tiles[MFNET_TRAIN[0]]["ids"]))
    t = tiles[MFNET_TEST[0]]
    assert torch.equal(test[0]["label"], torch.from_numpy(np.where(t["boundary"], 255, t["ids"])))
    assert check_dataset("potsdam", root).ok
