"""MCubeSDataset on the synthetic stand-in: contract, reference semantics, splits, bad inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.datasets import create_dataset, get_dataset_entry, list_datasets
from mmsam.data.datasets.mcubes import (
    LEFT_OFFSET,
    MCUBES_CLASSES,
    MCUBES_PALETTE,
    MCubeSDataset,
    read_list,
)
from mmsam.data.modalities import IMAGENET_MEAN, IMAGENET_STD, get_modality
from mmsam.data.synthetic.mcubes import crop_width
from mmsam.data.synthetic.muses import write_png16
from mmsam.errors import ConfigError, DataError

MODS = ("rgb", "aolp", "dolp", "nir")
H = 32  # tests/data/conftest.py: MCUBES_SIZE
W = crop_width(H)
COUNTS = {"num_train": 6, "num_val": 3, "num_test": 4}  # conftest.py: COUNTS


def test_fixture_parameters(mcubes_info: dict) -> None:
    assert mcubes_info == {"size": H, "counts": COUNTS}


def _stem(root: Path, split: str = "train", i: int = 0) -> str:
    return read_list(root / "list_folder" / f"{split}.txt")[i]


def _index(ds: MCubeSDataset, stem: str) -> int:
    return next(i for i, s in enumerate(ds.samples) if s.id == stem)


def test_registry_classes_and_palette() -> None:
    assert "mcubes" in list_datasets()
    entry = get_dataset_entry("mcubes")
    assert entry.num_classes == 20 and entry.default_modalities == MODS
    assert len(MCUBES_PALETTE) == 20 and MCUBES_CLASSES[0] == "asphalt"
    assert MCUBES_CLASSES[19] == "sky" and MCUBES_PALETTE[19] == (99, 121, 57)
    assert MCUBES_CLASSES[17] == "water" and MCUBES_PALETTE[5] == (127, 127, 127)


def test_item_shapes_dtypes_and_ranges(mcubes_root: Path) -> None:
    ds = create_dataset("mcubes", root=mcubes_root, split="train")
    assert len(ds) == COUNTS["num_train"]
    item = ds[0]
    assert list(item["modalities"]) == list(MODS)
    for m, x in item["modalities"].items():
        assert x.shape == (3, H, W) and x.dtype == torch.float32, m
        assert bool(item["present"][m]) and item["present"][m].dtype == torch.bool
    rgb = get_modality("rgb").denormalize(item["modalities"]["rgb"])
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0 + 1e-6
    aolp, dolp, nir = (item["modalities"][m] for m in ("aolp", "dolp", "nir"))
    assert torch.equal(aolp[0], aolp[2]) and not torch.equal(aolp[0], aolp[1])  # [sin, cos, sin]
    assert aolp.min() >= -1.0 and aolp.max() <= 1.0 and aolp.min() < 0  # cos takes signs
    assert torch.allclose(aolp[0] ** 2 + aolp[1] ** 2, torch.ones(H, W), atol=1e-5)
    for x in (dolp, nir):
        assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert item["label"].shape == (H, W) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) <= set(range(20)) | {255}
    assert item["meta"] == {"id": ds.samples[0].id, "condition": "all", "case": "normal"}


def test_same_result_as_the_reference_loader(mcubes_root: Path) -> None:
    """Paths, [sin, cos, sin], /255 and /65535, the 192-column crop as CMNeXt's loader does."""
    stem = _stem(mcubes_root, "val", 1)
    ds = MCubeSDataset(mcubes_root, "val")
    item = ds[_index(ds, stem)]
    r = str(mcubes_root)
    rgb = np.array(Image.open(f"{r}/polL_color/{stem}.png"))  # what cv2 [:, :, ::-1] gives
    assert rgb.dtype == np.uint8 and rgb.shape[1] == LEFT_OFFSET + W
    rgb = rgb.astype(np.float32) / 255
    sin, cos = np.load(f"{r}/polL_aolp_sin/{stem}.npy"), np.load(f"{r}/polL_aolp_cos/{stem}.npy")
    dolp = np.load(f"{r}/polL_dolp/{stem}.npy")
    nir = np.array(Image.open(f"{r}/NIR_warped/{stem}.png"))
    assert nir.dtype == np.uint16 and nir.ndim == 2  # the synthetic NIR is 16-bit
    nir = nir.astype(np.float32) / 65535
    ref = {"rgb": (rgb - IMAGENET_MEAN) / IMAGENET_STD,
           "aolp": np.stack([sin, cos, sin], 2), "dolp": np.stack([dolp] * 3, 2),
           "nir": np.stack([nir] * 3, 2)}
    for m, arr in ref.items():
        expect = torch.from_numpy(arr[:, LEFT_OFFSET:].transpose(2, 0, 1).astype(np.float32))
        assert torch.allclose(item["modalities"][m], expect, atol=1e-5), m
    gt = np.array(Image.open(f"{r}/GT/{stem}.png"))
    assert torch.equal(item["label"], torch.from_numpy(gt[:, LEFT_OFFSET:].astype(np.int64)))
    for folder in ("NIR_warped_mask", "SS"):  # the reference opens these too
        assert Image.open(f"{r}/{folder}/{stem}.png").size == (LEFT_OFFSET + W, H)


def test_splits_come_from_the_list_files(mcubes_root: Path) -> None:
    n = {s: len(MCubeSDataset(mcubes_root, s, check=False)) for s in ("train", "val", "test",
                                                                       "all")}
    assert n == {"train": COUNTS["num_train"], "val": COUNTS["num_val"],
                 "test": COUNTS["num_test"], "all": sum(COUNTS.values())}
    ds = MCubeSDataset(mcubes_root, "test")  # the reference's "val" = test.txt
    assert [s.id for s in ds.samples] == read_list(mcubes_root / "list_folder" / "test.txt")
    parent = MCubeSDataset(mcubes_root.parent, "test")  # the folder above is accepted too
    assert parent.root == mcubes_root
    with pytest.raises(ConfigError, match="split 'validation'"):
        MCubeSDataset(mcubes_root, "validation")
    with pytest.raises(ConfigError, match="no conditions"):
        MCubeSDataset(mcubes_root, "train", conditions=["fog"])
    with pytest.raises(ConfigError, match="MCubeS has no modality \\['depth'\\]"):
        MCubeSDataset(mcubes_root, "train", modalities=("rgb", "depth"))


def test_left_columns_are_dropped(mcubes_root: Path) -> None:
    full = MCubeSDataset(mcubes_root, "train", modalities=("nir",), left_offset=0)[0]
    crop = MCubeSDataset(mcubes_root, "train", modalities=("nir",))[0]
    assert full["label"].shape == (H, LEFT_OFFSET + W) and crop["label"].shape == (H, W)
    assert torch.equal(full["label"][:, LEFT_OFFSET:], crop["label"])
    assert torch.equal(full["modalities"]["nir"][..., LEFT_OFFSET:], crop["modalities"]["nir"])
    assert full["modalities"]["nir"][..., :LEFT_OFFSET // 2].abs().sum() == 0  # invalid NIR


def test_missing_modality_is_zero_and_not_read(mcubes_copy: Path) -> None:
    for f in (mcubes_copy / "polL_dolp").glob("*.npy"):
        f.unlink()
    item = MCubeSDataset(mcubes_copy, "val", missing=("dolp",))[0]
    assert not item["present"]["dolp"] and torch.all(item["modalities"]["dolp"] == 0)
    assert item["present"]["aolp"]


def test_sixteen_bit_colour_is_divided_by_65535(mcubes_copy: Path) -> None:
    stem = _stem(mcubes_copy)
    img = np.arange(H * (LEFT_OFFSET + W) * 3, dtype=np.uint16).reshape(H, -1, 3) * 7
    write_png16(mcubes_copy / "polL_color" / f"{stem}.png", img)
    ds = MCubeSDataset(mcubes_copy, "train", modalities=("rgb",))
    rgb = get_modality("rgb").denormalize(ds[_index(ds, stem)]["modalities"]["rgb"])
    expect = torch.from_numpy(img[:, LEFT_OFFSET:].transpose(2, 0, 1) / 65535.0).float()
    assert torch.allclose(rgb, expect, atol=1e-5)


def test_missing_file_is_named_at_construction(mcubes_copy: Path) -> None:
    victim = mcubes_copy / "polL_aolp_cos" / f"{_stem(mcubes_copy, 'val')}.npy"
    victim.unlink()
    with pytest.raises(DataError, match="missing file for AoLP cosine") as exc:
        MCubeSDataset(mcubes_copy, "val")
    assert str(victim) in str(exc.value)
    MCubeSDataset(mcubes_copy, "val", modalities=("rgb", "nir"))  # not needed: no error


def test_nan_in_npy_is_named_when_read(mcubes_copy: Path) -> None:
    stem = _stem(mcubes_copy, "val")
    victim = mcubes_copy / "polL_dolp" / f"{stem}.npy"
    arr = np.load(victim)
    arr[3, LEFT_OFFSET + 5] = np.nan  # in the part the loader keeps
    np.save(victim, arr)
    ds = MCubeSDataset(mcubes_copy, "val")  # header-only check passes
    with pytest.raises(DataError, match="non-finite values \\(1 NaN, 0 inf\\)") as exc:
        ds[_index(ds, stem)]
    assert str(victim) in str(exc.value)


def test_nan_in_the_cropped_columns_is_no_error(mcubes_copy: Path) -> None:
    """The reference drops the left 192 columns without looking at them; so does the loader."""
    from mmsam.data.check import check_dataset

    stem = _stem(mcubes_copy, "val")
    ds = MCubeSDataset(mcubes_copy, "val")
    clean = ds[_index(ds, stem)]
    for folder in ("polL_dolp", "polL_aolp_sin", "polL_aolp_cos"):
        victim = mcubes_copy / folder / f"{stem}.npy"
        arr = np.load(victim)
        arr[:, :LEFT_OFFSET] = np.nan
        arr[0, LEFT_OFFSET - 1] = np.inf
        np.save(victim, arr)
    item = ds[_index(ds, stem)]
    for m in MODS:
        assert torch.equal(item["modalities"][m], clean["modalities"][m]), m
    assert check_dataset("mcubes", mcubes_copy).ok
    arr[5, LEFT_OFFSET] = np.nan  # the first kept column of the AoLP cosine
    np.save(victim, arr)
    with pytest.raises(DataError, match=rf"{victim}: contains non-finite values \(1 NaN"):
        ds[_index(ds, stem)]
    report = check_dataset("mcubes", mcubes_copy, splits=["val"])
    assert report.problems and all(p.kind == "unreadable" and str(victim) in p.message
                                   for p in report.problems)  # via aolp and aolp_cos


def test_wrong_npy_shape_is_named_with_both_shapes(mcubes_copy: Path) -> None:
    victim = mcubes_copy / "polL_aolp_sin" / f"{_stem(mcubes_copy, 'test')}.npy"
    np.save(victim, np.zeros((H, LEFT_OFFSET + W - 4), np.float32))
    with pytest.raises(DataError) as exc:
        MCubeSDataset(mcubes_copy, "test")
    msg = str(exc.value)
    assert str(victim) in msg and f"{H}x{LEFT_OFFSET + W - 4}" in msg
    assert f"{H}x{LEFT_OFFSET + W}" in msg


def test_npy_that_is_not_a_plane_is_named(mcubes_copy: Path) -> None:
    stem = _stem(mcubes_copy, "test")
    victim = mcubes_copy / "polL_dolp" / f"{stem}.npy"
    victim.write_bytes(b"not an npy file")
    with pytest.raises(DataError, match="cannot read .npy header") as exc:
        MCubeSDataset(mcubes_copy, "test")
    assert str(victim) in str(exc.value)


def test_unknown_label_id_is_named(mcubes_copy: Path) -> None:
    stem = _stem(mcubes_copy, "val", 2)
    victim = mcubes_copy / "GT" / f"{stem}.png"
    lab = np.array(Image.open(victim))
    lab[0, LEFT_OFFSET:LEFT_OFFSET + 3] = [20, 37, 255]
    Image.fromarray(lab).save(victim)
    ds = MCubeSDataset(mcubes_copy, "val")
    with pytest.raises(DataError, match=r"label ids \[20, 37\] outside 0..19") as exc:
        ds[_index(ds, stem)]
    assert str(victim) in str(exc.value)


def test_missing_or_empty_list_file(mcubes_copy: Path) -> None:
    (mcubes_copy / "list_folder" / "val.txt").unlink()
    with pytest.raises(DataError, match="val.txt: split list file not found"):
        MCubeSDataset(mcubes_copy, "val")
    (mcubes_copy / "list_folder" / "test.txt").write_text("\n\n")
    with pytest.raises(DataError, match="test.txt: split list is empty"):
        MCubeSDataset(mcubes_copy, "test")


def test_list_lines_keep_their_first_token(mcubes_copy: Path) -> None:
    stems = read_list(mcubes_copy / "list_folder" / "val.txt")
    (mcubes_copy / "list_folder" / "val.txt").write_text(
        "".join(f"{s} extra tokens\n" for s in stems) + "\n")
    assert [s.id for s in MCubeSDataset(mcubes_copy, "val").samples] == stems


def test_list_file_with_a_utf8_bom(mcubes_copy: Path) -> None:
    path = mcubes_copy / "list_folder" / "train.txt"
    stems = read_list(path)
    path.write_bytes(b"\xef\xbb\xbf" + "".join(f"{s}\r\n" for s in stems).encode())
    assert read_list(path) == stems
    assert [s.id for s in MCubeSDataset(mcubes_copy, "train").samples] == stems
