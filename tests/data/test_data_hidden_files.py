"""Hidden files (macOS AppleDouble ``._x.png``, ``.DS_Store``) are never samples nor problems."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from mmsam.data.check import check_dataset
from mmsam.data.datasets import DeliverDataset, MCubeSDataset, MusesDataset, create_dataset
from mmsam.data.datasets.common import find_file, is_hidden, visible_glob
from mmsam.data.datasets.mmhunan import MMHunanDataset

#: What a macOS copy leaves beside each file: resource-fork bytes, not an image.
APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(64)


def _litter(folders: list[Path], names: list[str]) -> int:
    """Write ``._<name>`` for each name plus a ``.DS_Store`` into every folder; count them."""
    n = 0
    for folder in folders:
        for name in names:
            (folder / f"._{name}").write_bytes(APPLEDOUBLE)
            n += 1
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        n += 1
    return n


def _litter_tree(root: Path, suffix: str) -> int:
    """AppleDouble twins of every ``suffix`` file under ``root`` (and a .DS_Store per folder)."""
    n = 0
    for folder in sorted({p.parent for p in root.rglob(f"*{suffix}")}):
        n += _litter([folder], [p.name for p in folder.glob(f"*{suffix}")])
    (root / ".DS_Store").write_bytes(b"Bud1")
    return n


def test_helpers() -> None:
    assert is_hidden("a/b/._x.png") and is_hidden(".DS_Store") and not is_hidden("a/.b/x.png")
    assert is_hidden("r/.Trashes/x.png", below="r") and not is_hidden("r/img/x.png", below="r")


def test_visible_glob_and_find_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for name in ("a.png", "._a.png", ".DS_Store", "B.TIF"):
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "c.png").write_bytes(b"x")
    assert [p.name for p in visible_glob(tmp_path, "*/*.png")] == ["a.png"]
    assert find_file([tmp_path / "d"], "b", (".tif", ".tiff")).name == "B.TIF"
    assert find_file([tmp_path / "d"], "._a", (".png",)) is None
    assert find_file([tmp_path / "nope", tmp_path / "d"], "a", (".png",)) == tmp_path / "d" / "a.png"


def test_deliver_counts_unchanged(synth_copy: Path) -> None:
    before = {s: len(DeliverDataset(synth_copy, s)) for s in ("train", "val", "test")}
    assert _litter_tree(synth_copy, ".png") > 0
    after = {s: len(DeliverDataset(synth_copy, s)) for s in ("train", "val", "test")}
    assert after == before
    report = check_dataset("deliver", synth_copy)
    assert report.ok, report.format()


def test_mcubes_check_ignores_them(mcubes_copy: Path) -> None:
    n = len(MCubeSDataset(mcubes_copy, "train"))
    _litter_tree(mcubes_copy, ".png")
    _litter_tree(mcubes_copy, ".npy")
    assert len(MCubeSDataset(mcubes_copy, "train")) == n
    report = check_dataset("mcubes", mcubes_copy)
    assert report.ok, report.format()


def test_muses_counts_unchanged(muses_copy: Path) -> None:
    before = len(MusesDataset(muses_copy, "train"))
    _litter_tree(muses_copy, ".png")
    assert len(MusesDataset(muses_copy, "train")) == before
    assert check_dataset("muses", muses_copy, splits=["train"]).ok


def test_trans10k_and_binary_folder(tmp_path: Path) -> None:
    from test_data_trans10k import write_v2

    root = tmp_path / "trans10k"
    write_v2(root)
    n = len(create_dataset("trans10k_v2", root=root, split="train"))
    _litter_tree(root, ".jpg")
    assert len(create_dataset("trans10k_v2", root=root, split="train")) == n

    task = tmp_path / "polyp"
    inner = task / "polyp"
    (inner / "images").mkdir(parents=True)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(inner / "images" / "1.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(inner / "images" / "1_mask.png")
    with open(inner / "train.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["image", "label"], ["images/1.png", "images/1_mask.png"]])
    (task / "._train.csv").write_bytes(APPLEDOUBLE)  # must not make the outer folder the CSV one
    _litter([inner, inner / "images"], ["train.csv", "1.png"])
    ds = create_dataset("binary_folder", root=task, split="train")
    assert len(ds) == 1


def test_mmhunan_check_ignores_them(tmp_path: Path) -> None:
    from test_data_mmhunan import write_tile
    from mmsam.data.datasets.mmhunan_splits import MMHUNAN_TEST_IDS, MMHUNAN_TRAIN_IDS

    root = tmp_path / "Hunan"
    rng = np.random.default_rng(0)
    for t in MMHUNAN_TRAIN_IDS + MMHUNAN_TEST_IDS:
        write_tile(root, t, rng)
    _litter([root / "images_png", root / "masks_png"], ["10434.png", "10434.tif"])
    assert len(MMHunanDataset(root, "test")) == len(MMHUNAN_TEST_IDS)
    report = check_dataset("mmhunan", root)
    assert report.ok, report.format()
