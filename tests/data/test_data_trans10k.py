"""Trans10K-v1 / -v2 read from files written in the data sets' own layouts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.datasets.trans10k import (
    TRANS10K_V2_CLASSES,
    Trans10KDataset,
    decode_v1_mask,
    encode_v1_mask,
)
from mmsam.errors import ConfigError, DataError

H, W = 20, 28


def _ids(seed: int, k: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=(H, W))


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=95)


def write_v1(root: Path) -> dict[str, np.ndarray]:
    """Trans10K (v1): train/{images,masks}, validation|test/{easy,hard}/{images,masks}; RGBA colour masks."""
    labels = {}
    folders = [("train", ""), ("validation", "easy"), ("validation", "hard"), ("test", "easy"), ("test", "hard")]
    for i, (split, case) in enumerate(folders):
        base = root / split / case if case else root / split
        for j in range(2):
            stem = f"{i * 10 + j}"
            _image(base / "images" / f"{stem}.jpg", i * 10 + j)
            ids = _ids(i * 10 + j, 3)
            rgba = np.concatenate([encode_v1_mask(ids), np.full((H, W, 1), 255, np.uint8)], -1)
            (base / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rgba, "RGBA").save(base / "masks" / f"{stem}_mask.png")
            labels["/".join(p for p in (split, case, stem) if p)] = ids
    return labels


def write_v2(root: Path) -> dict[str, np.ndarray]:
    """Trans10K_cls12 (v2): <split>/{images,masks_12}; palette masks holding the class index."""
    labels = {}
    for i, split in enumerate(("train", "validation", "test")):
        for j in range(3):
            stem = f"{i}{j:04d}"
            _image(root / split / "images" / f"{stem}.jpg", 100 + i * 10 + j)
            ids = _ids(100 + i * 10 + j, 12)
            mask = Image.fromarray(ids.astype(np.uint8), "P")
            mask.putpalette([c for k in range(256) for c in ((k * 37) % 256, (k * 91) % 256, (k * 13) % 256)])
            (root / split / "masks_12").mkdir(parents=True, exist_ok=True)
            mask.save(root / split / "masks_12" / f"{stem}_mask.png")
            labels[f"{split}/{stem}"] = ids
    return labels


def test_v1_colour_masks_decode_and_cases(tmp_path: Path) -> None:
    labels = write_v1(tmp_path / "Trans10K")
    train = Trans10KDataset(tmp_path / "Trans10K", version=1, split="train")
    assert len(train) == 2 and train.classes == ("background", "things", "stuff")
    item = train[0]
    assert item["modalities"]["rgb"].shape == (3, H, W)
    assert torch.equal(item["label"], torch.from_numpy(labels[item["meta"]["id"]]))
    val = Trans10KDataset(tmp_path / "Trans10K", version=1, split="val")
    assert len(val) == 4 and {s.case for s in val.samples} == {"easy", "hard"}
    hard = Trans10KDataset(tmp_path / "Trans10K", version=1, split="test", cases=["hard"])
    assert len(hard) == 2 and all(s.id.startswith("test/hard/") for s in hard.samples)
    for i in range(len(hard)):
        it = hard[i]
        assert torch.equal(it["label"], torch.from_numpy(labels[it["meta"]["id"]]))
    with pytest.raises(ConfigError, match="cases"):
        Trans10KDataset(tmp_path / "Trans10K", version=1, split="test", cases=["medium"])


def test_v1_mask_with_an_unknown_colour_is_named(tmp_path: Path) -> None:
    write_v1(tmp_path / "Trans10K")
    bad = tmp_path / "Trans10K" / "train" / "masks" / "0_mask.png"
    arr = np.array(Image.open(bad))
    arr[0, 0, :3] = (0, 255, 0)  # read by channel mean like the official loader: green (mean 85) counts as things
    arr[0, 1, :3] = (10, 10, 10)
    Image.fromarray(arr).save(bad)
    ds = Trans10KDataset(tmp_path / "Trans10K", version=1, split="train")
    with pytest.raises(DataError, match=r"0_mask\.png.*10\.0"):
        ds[[s.label for s in ds.samples].index(bad)]


def test_v1_decode_round_trip() -> None:
    ids = _ids(3, 3)
    assert np.array_equal(decode_v1_mask(encode_v1_mask(ids)), ids)


def test_v2_index_masks_and_splits(tmp_path: Path) -> None:
    labels = write_v2(tmp_path / "Trans10K_cls12")
    for split, n in (("train", 3), ("val", 3), ("test", 3)):
        ds = Trans10KDataset(tmp_path / "Trans10K_cls12", version=2, split=split)
        assert len(ds) == n and len(ds.classes) == 12 == len(TRANS10K_V2_CLASSES)
        for i in range(n):
            it = ds[i]
            assert torch.equal(it["label"], torch.from_numpy(labels[it["meta"]["id"]]))
    assert Trans10KDataset(tmp_path / "Trans10K_cls12", version=2, split="val").samples[0].id.startswith("validation/")


def test_v2_out_of_range_index_missing_mask_and_empty_root(tmp_path: Path) -> None:
    root = tmp_path / "Trans10K_cls12"
    write_v2(root)
    mask = root / "train" / "masks_12" / "00000_mask.png"
    Image.fromarray(np.full((H, W), 14, np.uint8), "L").save(mask)
    ds = Trans10KDataset(root, version=2, split="train")
    with pytest.raises(DataError, match=r"00000_mask\.png.*14"):
        ds[[s.label for s in ds.samples].index(mask)]
    mask.unlink()
    with pytest.raises(DataError, match=r"00000_mask\.png: missing mask"):
        Trans10KDataset(root, version=2, split="train")
    with pytest.raises(DataError, match="image folder"):
        Trans10KDataset(tmp_path / "nowhere", version=2, split="train")
    with pytest.raises(ConfigError, match="one modality"):
        Trans10KDataset(root, version=2, split="val", modalities=["rgb", "depth"])


def test_registry_datamodule_and_data_check(tmp_path: Path) -> None:
    from mmsam.data.check import check_dataset
    from mmsam.data.datamodule import MultiModalDataModule

    write_v1(tmp_path / "Trans10K")
    dm = MultiModalDataModule("trans10k_v1", root=str(tmp_path / "Trans10K"), train_size=16, eval_size=16,
                              batch_size=2, eval_batch_size=2, num_workers=0)
    assert dm.num_classes == 3 and dm.class_names == ("background", "things", "stuff")
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["modalities"]["rgb"].shape == (2, 3, 16, 16) and int(batch["label"].max()) <= 2
    report = check_dataset("trans10k_v1", tmp_path / "Trans10K", progress=False)
    assert report.exit_code == 0, report.format()


def test_registered_versions_are_fixed(tmp_path: Path) -> None:
    from mmsam.data.datasets import Trans10KV1Dataset, get_dataset_entry

    assert get_dataset_entry("trans10k_v1").factory is Trans10KV1Dataset
    with pytest.raises(ConfigError, match=r"trans10k_v1 is Trans10K-v1; got version=2 \(use trans10k_v2\)"):
        Trans10KV1Dataset(tmp_path, version=2)
