"""MusesDataset on the synthetic stand-in: both layouts, conditions, labels, bad inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.datamodule import MultiModalDataModule
from mmsam.data.datasets import create_dataset, get_dataset_entry, list_datasets
from mmsam.data.datasets.muses import (
    MUSES_CLASSES,
    MUSES_PALETTE,
    MusesDataset,
    MusesSDKDataset,
)
from mmsam.data.modalities import get_modality
from mmsam.errors import ConfigError, DataError

MODS = ("rgb", "event", "lidar")


def _hw(info: dict) -> tuple[int, int]:
    return info["size"], int(round(info["size"] * 16 / 9))


def _cam(root: Path, split: str = "val", pattern: str = "*/*") -> Path:
    return sorted(root.glob(f"frame_camera/{split}/{pattern}/*.png"))[0]


def _sibling(cam: Path, folder: str, tag: str | None = None) -> Path:
    root = cam.parents[4]
    rel = cam.relative_to(root / "frame_camera").parent
    stem = cam.name[: -len("_frame_camera.png")]
    return root / folder / rel / f"{stem}_{tag or folder}.png"


def _index(ds: MusesDataset, cam: Path) -> int:
    return next(i for i, s in enumerate(ds.samples) if s.files["camera"] == cam)


def test_registry_classes_and_palette() -> None:
    assert {"muses", "muses_sdk"} <= set(list_datasets())
    entry = get_dataset_entry("muses")
    assert entry.num_classes == 19 and entry.default_modalities == MODS
    assert MUSES_CLASSES[0] == "road" and MUSES_PALETTE[0] == (128, 64, 128)
    assert MUSES_CLASSES[18] == "bicycle" and MUSES_PALETTE[18] == (119, 11, 32)
    assert len(MUSES_PALETTE) == 19


def test_item_shapes_dtypes_ranges_and_meta(muses_root: Path, muses_info: dict) -> None:
    H, W = _hw(muses_info)
    ds = create_dataset("muses", root=muses_root, split="train")
    assert len(ds) == muses_info["counts"]["num_train"]
    item = ds[0]
    assert list(item["modalities"]) == list(MODS)
    for m, x in item["modalities"].items():
        assert x.shape == (3, H, W) and x.dtype == torch.float32, m
        assert bool(item["present"][m])
    for m in ("event", "lidar"):  # /255 only
        assert 0 <= item["modalities"][m].min() and item["modalities"][m].max() <= 1
    assert item["label"].shape == (H, W) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) <= set(range(19)) | {255}
    weather, tod = item["meta"]["id"].split("/")[1:3]
    assert item["meta"]["condition"] == f"{weather}_{tod}" and item["meta"]["case"] == "normal"


def test_same_result_as_the_reference_loader(muses_root: Path) -> None:
    """AnySeg's path rewriting and PIL RGB conversion, minus its resize and 255 -> 0."""
    cam = _cam(muses_root, "val", "snow/night")
    ds = MusesDataset(muses_root, "val")
    item = ds[_index(ds, cam)]
    base = str(cam)
    for m, folder in (("rgb", "frame_camera"), ("event", "event_camera"), ("lidar", "lidar")):
        ref = np.array(Image.open(base.replace("frame_camera", folder)).convert("RGB"))
        ours = get_modality(m).denormalize(item["modalities"][m])
        expect = torch.from_numpy(ref.transpose(2, 0, 1).astype(np.float32) / 255)
        assert torch.allclose(ours, expect, atol=1e-5), m
    lbl = base.replace("/frame_camera", "/gt_semantic").replace("frame_camera", "gt_labelTrainIds")
    assert torch.equal(item["label"], torch.from_numpy(np.array(Image.open(lbl)).astype(np.int64)))


def test_ignore_stays_ignore(muses_copy: Path) -> None:
    cam = _cam(muses_copy)
    victim = _sibling(cam, "gt_semantic", "gt_labelTrainIds")
    lab = np.array(Image.open(victim))
    lab[0, :3] = [255, 0, 18]
    Image.fromarray(lab).save(victim)
    ds = MusesDataset(muses_copy, "val")
    assert ds[_index(ds, cam)]["label"][0, :3].tolist() == [255, 0, 18]  # not AnySeg's 255 -> 0


def test_condition_filters(muses_root: Path, muses_info: dict) -> None:
    n = muses_info["counts"]["num_train"]  # 8: one per weather x time of day
    def count(c: object) -> int:
        return len(MusesDataset(muses_root, "train", conditions=c, check=False))
    assert count(None) == n and count(["fog"]) == n // 4 and count("night") == n // 2
    assert count(["fog_night"]) == 1 and count(["fog", "night"]) == 1
    assert count(["clear", "snow", "day"]) == 2 and count(["rain", "snow_night"]) == 3
    ds = MusesDataset(muses_root, "train", conditions=["snow"])
    assert {s.weather for s in ds.samples} == {"snow"}
    with pytest.raises(ConfigError, match="blizzard"):
        MusesDataset(muses_root, "train", conditions=["blizzard"])
    with pytest.raises(ConfigError, match="no sensor-failure cases"):
        MusesDataset(muses_root, "train", cases=["motionblur"])
    MusesDataset(muses_root, "train", cases=["normal"])
    with pytest.raises(ConfigError, match="split"):
        MusesDataset(muses_root, "training")


def test_label_root_next_to_the_multimodal_folder(muses_copy: Path) -> None:
    official = muses_copy.parent
    shutil.move(str(muses_copy / "gt_semantic"), str(official / "gt_semantic"))
    ds = MusesDataset(muses_copy, "val")  # <root>/../gt_semantic
    assert ds.label_root == official / "gt_semantic" and ds.labelled
    assert ds[0]["label"].max() <= 255
    moved = official / "labels"
    shutil.move(str(official / "gt_semantic"), str(moved))
    with pytest.raises(DataError, match="missing file for label"):
        MusesDataset(muses_copy, "val")
    assert len(MusesDataset(muses_copy, "val", label_root=moved)) > 0


def test_test_split_without_labels_is_all_ignore(muses_copy: Path) -> None:
    shutil.rmtree(muses_copy / "gt_semantic" / "test")
    ds = MusesDataset(muses_copy, "test")
    assert not ds.labelled
    assert torch.all(ds[0]["label"] == 255)
    shutil.rmtree(muses_copy / "gt_semantic" / "val" / "fog")
    with pytest.raises(DataError, match="missing file for label"):
        MusesDataset(muses_copy, "val")  # train/val labels are required


def test_sdk_layout_decodes_the_projections(muses_root: Path) -> None:
    cam = _cam(muses_root, "train", "clear/day")
    ds = create_dataset("muses_sdk", root=muses_root, split="train")
    assert isinstance(ds, MusesSDKDataset) and ds.layout == "sdk"
    item = ds[_index(ds, cam)]
    lidar = get_modality("muses_lidar_projected").denormalize(item["modalities"]["lidar"])
    png = np.array(Image.open(_sibling(cam, "projected_to_rgb/lidar", "lidar")))
    assert png.dtype != np.uint16  # PIL reads 16-bit colour as 8-bit: the loader must not
    path = _sibling(cam, "projected_to_rgb/lidar", "lidar")
    from torchvision.io import ImageReadMode, decode_png
    raw = decode_png(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8),
                     ImageReadMode.UNCHANGED).numpy().astype(np.float32)
    expect = torch.from_numpy(raw[::-1] / 150 - 100)  # cv2 channel order, then the codec
    assert torch.allclose(lidar, expect, atol=1e-3)
    hit = lidar[0] > 0
    assert 0.01 < hit.float().mean() < 0.6  # sparse returns; empty pixels decode to 0
    assert torch.all(lidar[:, ~hit].abs() < 1e-3)
    event = get_modality("muses_event_projected").denormalize(item["modalities"]["event"])
    assert torch.all(event[2].abs() < 1e-5) and event.max() >= 1  # [pos, neg, 0] counts


def test_sdk_layout_accepts_cafuser_names(muses_copy: Path) -> None:
    for f in (muses_copy / "projected_to_rgb").rglob("*.png"):
        f.rename(f.with_name(f.stem + "_projected.png"))
    ds = MusesSDKDataset(muses_copy, "val")
    assert ds.samples[0].files["lidar"].name.endswith("_lidar_projected.png")
    assert ds[0]["modalities"]["lidar"].shape[0] == 3


def test_missing_file_is_named_at_construction(muses_copy: Path) -> None:
    victim = _sibling(_cam(muses_copy), "event_camera")
    victim.unlink()
    with pytest.raises(DataError, match="missing file for modality 'event'") as exc:
        MusesDataset(muses_copy, "val")
    assert str(victim) in str(exc.value)
    ds = MusesDataset(muses_copy, "val", missing=("event",))
    assert not ds[0]["present"]["event"] and torch.all(ds[0]["modalities"]["event"] == 0)


def test_wrong_size_and_bad_label_are_named(muses_copy: Path, muses_info: dict) -> None:
    H, W = _hw(muses_info)
    cam = _cam(muses_copy)
    lidar = _sibling(cam, "lidar")
    Image.fromarray(np.zeros((H, W - 3), np.uint8)).save(lidar)
    with pytest.raises(DataError) as exc:
        MusesDataset(muses_copy, "val")
    assert str(lidar) in str(exc.value) and f"{H}x{W - 3}" in str(exc.value)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(lidar)
    label = _sibling(cam, "gt_semantic", "gt_labelTrainIds")
    lab = np.array(Image.open(label))
    lab[1, 1] = 19
    Image.fromarray(lab).save(label)
    ds = MusesDataset(muses_copy, "val")
    with pytest.raises(DataError, match=r"label ids \[19\] outside 0..18") as exc:
        ds[_index(ds, cam)]
    assert str(label) in str(exc.value)


def test_badly_placed_or_named_camera_files(muses_copy: Path) -> None:
    cam = _cam(muses_copy)
    cam.rename(cam.with_name("frame.png"))
    with pytest.raises(DataError, match="frame.png: file name lacks the '_frame_camera.png'"):
        MusesDataset(muses_copy, "val")
    odd = muses_copy / "frame_camera" / "train" / "haze" / "day"
    odd.mkdir(parents=True)
    shutil.copy(_cam(muses_copy, "train"), odd / "X_frame_camera.png")
    with pytest.raises(DataError, match="got haze/day"):
        MusesDataset(muses_copy, "train")
    with pytest.raises(DataError, match="no MUSES frame-camera images"):
        MusesDataset(muses_copy / "nowhere", "train")


def test_datamodule_builds_muses(tmp_path: Path) -> None:
    kw = dict(root=str(tmp_path / "mu"), synthesize=True, synth_num_train=8, synth_num_val=4,
              synth_num_test=2, synth_size=32, train_size=24, eval_size=32, batch_size=2,
              num_workers=0)
    dm = MultiModalDataModule(dataset="muses", conditions=["night"], **kw)
    assert dm.modalities == MODS and dm.num_classes == 19
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["modalities"]["lidar"].shape == (2, 3, 24, 24)
    assert all(c.endswith("_night") for c in batch["meta"]["condition"])
    sdk = MultiModalDataModule(dataset="muses_sdk", **kw)
    sdk.setup("test")
    assert next(iter(sdk.test_dataloader()))["modalities"]["event"].shape == (1, 3, 32, 32)
