"""DeliverDataset on the official layout: item contract, reference semantics, bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate
from torchvision import io
from torchvision.transforms import functional as TF

from mmsam.data.datasets import create_dataset, list_datasets
from mmsam.data.datasets.deliver import DELIVER_CLASSES, DELIVER_PALETTE, DeliverDataset
from mmsam.data.modalities import get_modality
from mmsam.errors import ConfigError, DataError

MODS = ("rgb", "depth", "event", "lidar")


def _first(root: Path, folder: str, tag: str, split: str = "val", pattern: str = "*") -> Path:
    return sorted(root.glob(f"{folder}/*/{split}/{pattern}/*_{tag}_front.png"))[0]


def test_registry_and_classes() -> None:
    assert "deliver" in list_datasets()
    assert len(DELIVER_CLASSES) == 25 and len(DELIVER_PALETTE) == 25
    assert DELIVER_CLASSES[6] == "Road" and DELIVER_PALETTE[6] == (128, 64, 128)
    assert DELIVER_CLASSES[12] == "Sky" and DELIVER_PALETTE[24] == (0, 0, 70)
    with pytest.raises(ConfigError, match="unknown dataset 'nope'.*deliver"):
        create_dataset("nope", root=".")


def test_item_follows_the_contract(synth_root: Path, synth_info: dict) -> None:
    size, counts = synth_info["size"], synth_info["counts"]
    ds = create_dataset("deliver", root=synth_root, split="val", modalities=("lidar", "rgb"))
    assert len(ds) == counts["num_val"]
    item = ds[0]
    assert list(item["modalities"]) == ["lidar", "rgb"]  # the order asked for
    for m, img in item["modalities"].items():
        assert img.shape == (3, size, size) and img.dtype == torch.float32
        assert item["present"][m].dtype == torch.bool and item["present"][m].dim() == 0
        assert bool(item["present"][m])
    assert item["label"].shape == (size, size) and item["label"].dtype == torch.int64
    values = set(item["label"].unique().tolist())
    assert values <= set(range(25)) | {255} and len(values) > 3
    cond, split, scene, frame = item["meta"]["id"].split("/")
    assert cond == item["meta"]["condition"] and split == "val"
    assert (synth_root / "img" / cond / split / scene / f"{frame}_rgb_front.png").is_file()
    batch = default_collate([ds[0], ds[1]])
    assert batch["modalities"]["rgb"].shape == (2, 3, size, size)
    assert batch["present"]["rgb"].shape == (2,) and len(batch["meta"]["id"]) == 2


def test_same_result_as_the_reference_loader(synth_root: Path) -> None:
    """Paths, channel handling, /255 and label shift as jamycheung/DELIVER's loader does them."""
    ds = DeliverDataset(synth_root, "train", modalities=MODS, cases=["eventlowres"])
    item = ds[0]
    cond, split, scene, frame = item["meta"]["id"].split("/")
    rgb = str(synth_root / "img" / cond / split / scene / f"{frame}_rgb_front.png")

    def ref_open(p: str) -> torch.Tensor:
        img = io.read_image(p)
        return img.repeat(3, 1, 1) if img.shape[0] == 1 else img[:3]

    ref_rgb = io.read_image(rgb)[:3]
    ref = {"rgb": ref_rgb, "depth": ref_open(rgb.replace("/img", "/hha").replace("_rgb", "_depth")),
           "lidar": ref_open(rgb.replace("/img", "/lidar").replace("_rgb", "_lidar"))}
    event = ref_open(rgb.replace("/img", "/event").replace("_rgb", "_event"))
    assert event.shape[-1] < ref_rgb.shape[-1]  # a low-resolution event image
    ref["event"] = TF.resize(event, list(ref_rgb.shape[1:]), TF.InterpolationMode.NEAREST)
    for m in MODS:
        ours = get_modality(m).denormalize(item["modalities"][m])
        assert torch.allclose(ours, ref[m].float() / 255, atol=1e-5), m
    label = io.read_image(rgb.replace("/img", "/semantic").replace("_rgb", "_semantic"))[0]
    label[label == 255] = 0
    label -= 1  # uint8: 0 wraps to 255
    assert torch.equal(item["label"], label.long())


def test_condition_and_case_filters(synth_root: Path, synth_info: dict) -> None:
    counts = synth_info["counts"]
    night = DeliverDataset(synth_root, "train", conditions=["night"])
    assert len(night) == counts["num_train"] // 5
    assert all(s.condition == "night" for s in night.samples)
    low = DeliverDataset(synth_root, "train", cases=["eventlowres"])
    assert len(low) > 0 and all(s.case == "eventlowres" for s in low.samples)
    normal = DeliverDataset(synth_root, "train", cases=["normal"])
    assert len(normal) + sum(
        len(DeliverDataset(synth_root, "train", cases=[c]))
        for c in ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")
    ) == counts["num_train"]
    assert all(s.case == "normal" for s in normal.samples)
    by_cond = DeliverDataset(synth_root, "train", cases=["fog"])  # reference: substring match
    assert {s.condition for s in by_cond.samples} == {"fog"}
    with pytest.raises(ConfigError, match="snow"):
        DeliverDataset(synth_root, "train", conditions=["snow"])
    with pytest.raises(ConfigError, match="blizzard"):
        DeliverDataset(synth_root, "train", cases=["blizzard"])
    with pytest.raises(ConfigError, match="split"):
        DeliverDataset(synth_root, "training")


def test_missing_modality_is_zero_and_absent(synth_copy: Path) -> None:
    for f in synth_copy.glob("lidar/*/val/*/*.png"):
        f.unlink()  # never read when declared missing
    ds = DeliverDataset(synth_copy, "val", missing=("lidar",))
    item = ds[0]
    assert not item["present"]["lidar"] and torch.all(item["modalities"]["lidar"] == 0)
    assert item["present"]["rgb"] and item["modalities"]["rgb"].abs().sum() > 0
    with pytest.raises(ConfigError, match="thermal"):
        DeliverDataset(synth_copy, "val", missing=("thermal",))
    with pytest.raises(ConfigError, match="at least one"):
        DeliverDataset(synth_copy, "val", modalities=("rgb",), missing=("rgb",))


def test_unknown_or_unsupported_modality(synth_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown modality 'thermal'.*rgb"):
        DeliverDataset(synth_root, "val", modalities=("rgb", "thermal"))
    with pytest.raises(ConfigError, match="duplicate"):
        DeliverDataset(synth_root, "val", modalities=("rgb", "rgb"))


def test_missing_file_is_named_at_construction(synth_copy: Path) -> None:
    victim = _first(synth_copy, "lidar", "lidar")
    victim.unlink()
    with pytest.raises(DataError, match=f"{victim.name}: missing file for modality 'lidar'") as exc:
        DeliverDataset(synth_copy, "val")
    assert str(victim) in str(exc.value)
    ds = DeliverDataset(synth_copy, "val", check=False)  # still caught when the item is read
    idx = next(i for i, s in enumerate(ds.samples) if s.files["lidar"] == victim)
    with pytest.raises(DataError, match=victim.name):
        ds[idx]


def test_wrong_image_size_is_named_with_both_shapes(synth_copy: Path,
                                                     synth_info: dict) -> None:
    size = synth_info["size"]
    victim = _first(synth_copy, "hha", "depth")
    Image.fromarray(np.zeros((size - 8, size, 3), np.uint8)).save(victim)
    with pytest.raises(DataError) as exc:
        DeliverDataset(synth_copy, "val")
    msg = str(exc.value)
    assert str(victim) in msg and f"{size - 8}x{size}" in msg and f"{size}x{size}" in msg


def test_small_event_image_is_resized_not_rejected(synth_copy: Path,
                                                    synth_info: dict) -> None:
    size = synth_info["size"]
    victim = _first(synth_copy, "event", "event")
    Image.fromarray(np.full((size // 4, size // 4, 3), 255, np.uint8)).save(victim)
    ds = DeliverDataset(synth_copy, "val")
    idx = next(i for i, s in enumerate(ds.samples) if s.files["event"] == victim)
    assert ds[idx]["modalities"]["event"].shape == (3, size, size)
    assert torch.all(ds[idx]["modalities"]["event"] == 1.0)


def test_truncated_png_fails_when_read_naming_the_file(synth_copy: Path) -> None:
    victim = _first(synth_copy, "hha", "depth")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    ds = DeliverDataset(synth_copy, "val")  # the header is intact: the cheap check passes
    idx = next(i for i, s in enumerate(ds.samples) if s.files["depth"] == victim)
    with pytest.raises(DataError, match=f"{victim.name}: cannot decode"):
        ds[idx]


def test_label_id_outside_class_list(synth_copy: Path) -> None:
    victim = _first(synth_copy, "semantic", "semantic")
    lab = np.array(Image.open(victim))
    lab[0, :3] = [30, 26, 255]  # 255 is allowed (unlabeled), 26 and 30 are not
    Image.fromarray(lab).save(victim)
    ds = DeliverDataset(synth_copy, "val")
    idx = next(i for i, s in enumerate(ds.samples) if s.files["label"] == victim)
    with pytest.raises(DataError, match=rf"{victim.name}: label ids \[26, 30\] outside 1..25"):
        ds[idx]


def test_unlabeled_pixels_become_ignore(synth_copy: Path) -> None:
    victim = _first(synth_copy, "semantic", "semantic")
    lab = np.array(Image.open(victim))
    lab[0, :4] = [0, 255, 1, 25]
    Image.fromarray(lab).save(victim)
    ds = DeliverDataset(synth_copy, "val")
    idx = next(i for i, s in enumerate(ds.samples) if s.files["label"] == victim)
    assert ds[idx]["label"][0, :4].tolist() == [255, 255, 0, 24]


def test_empty_split_names_root_and_glob(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        DeliverDataset(tmp_path, "train")
    assert str(tmp_path) in str(exc.value) and "img/*/train/*/*.png" in str(exc.value)


def test_badly_named_rgb_file(synth_copy: Path) -> None:
    victim = _first(synth_copy, "img", "rgb")
    victim.rename(victim.with_name("frame.png"))
    with pytest.raises(DataError, match="frame.png: file name lacks the '_rgb' tag"):
        DeliverDataset(synth_copy, "val")


def test_palette_label_png_uses_indices(tmp_path: Path) -> None:
    from mmsam.data.datasets.deliver import read_label

    ids = np.array([[0, 1, 7], [25, 255, 13]], np.uint8)
    img = Image.fromarray(ids).convert("P")
    img.putpalette([v for i in range(256) for v in (255 - i, i, 0)])
    img.save(tmp_path / "lab.png")
    assert Image.open(tmp_path / "lab.png").mode == "P"
    assert read_label(tmp_path / "lab.png").tolist() == [[255, 0, 6], [24, 255, 12]]


def test_event_resize_is_interpolate_nearest_at_the_real_ratio() -> None:
    """512 -> 1042: the reference's TF.resize(NEAREST) is F.interpolate(mode="nearest")."""
    from mmsam.data.datasets.deliver import resize_event

    ev = torch.randint(0, 256, (3, 512, 512), dtype=torch.uint8)
    ref = torch.nn.functional.interpolate(ev[None].float(), size=(1042, 1042), mode="nearest")[0]
    ours = resize_event(ev.float() / 255, (1042, 1042))
    assert torch.equal(ours, ref / 255)
    assert torch.equal(TF.resize(ev, [1042, 1042], TF.InterpolationMode.NEAREST).float(), ref)
    exact = torch.nn.functional.interpolate(ev[None].float(), size=(1042, 1042),
                                            mode="nearest-exact")[0]
    assert (exact != ref).any(dim=0).float().mean() > 0.3  # the rule matters at this ratio


def test_lowres_events_of_the_synthetic_set_match_the_reference(synth_root: Path,
                                                                synth_info: dict) -> None:
    size = synth_info["size"]
    ds = DeliverDataset(synth_root, "train", modalities=["rgb", "event"], cases=["eventlowres"])
    s = ds.samples[0]
    raw = io.read_image(str(s.files["event"]))
    assert raw.shape[-1] == size * 512 // 1042 and size % raw.shape[-1] != 0  # non-integer ratio
    ref = torch.nn.functional.interpolate(raw[None].float(), size=(size, size), mode="nearest")[0]
    assert torch.equal(ds[0]["modalities"]["event"], ref / 255)


def test_16bit_event_is_refused_naming_the_file(synth_copy: Path) -> None:
    from mmsam.data.check import check_dataset

    victim = _first(synth_copy, "event", "event")
    grey = np.array(Image.open(victim).convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(victim)  # a 16-bit grey PNG
    ds = DeliverDataset(synth_copy, "val")
    idx = next(i for i, s in enumerate(ds.samples) if s.files["event"] == victim)
    with pytest.raises(DataError, match=rf"{victim.name}: 16-bit uint16 image for event.*8-bit"):
        ds[idx]
    report = check_dataset("deliver", synth_copy, splits=["val"])
    assert [(p.kind, Path(p.path).name) for p in report.problems] == [("unreadable", victim.name)]
