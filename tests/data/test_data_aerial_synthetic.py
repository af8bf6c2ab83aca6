"""Synthetic aerial scenes in the Vaihingen layout: determinism, layout, and height's value."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsam.cli import main
from mmsam.data.check import check_dataset
from mmsam.data.datasets.isprs import VaihingenDataset
from mmsam.data.synthetic.aerial import boundary_mask, generate_aerial, is_generated
from mmsam.errors import ConfigError

SIZE = 96
IMP, BUILDING, LOW_VEG, TREE = 0, 1, 2, 3


@pytest.fixture(scope="module")
def aerial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aerial") / "synthetic_vaihingen"
    generate_aerial(root, size=SIZE, seed=0, progress=False)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.tif"))}


def test_byte_deterministic_per_seed(aerial: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_aerial(again, size=SIZE, seed=0, progress=False)
    assert _files(again) == _files(aerial) and len(_files(aerial)) == 64
    other = tmp_path / "other"
    generate_aerial(other, size=SIZE, seed=1, progress=False)
    assert _files(other) != _files(aerial)


def test_layout_reads_back_with_varied_tile_sizes(aerial: Path) -> None:
    assert is_generated(aerial)
    report = check_dataset("vaihingen", aerial)
    assert report.ok, report.format()
    info = json.loads((aerial / "mmsam_synthetic.json").read_text())
    sizes = {tuple(v) for v in info["tile_sizes"].values()}
    assert len(sizes) > 8 and all(SIZE <= s <= SIZE * 5 // 4 for hw in sizes for s in hw)
    test = VaihingenDataset(aerial, "test")
    assert [s.id for s in test.samples] == ["area5", "area21", "area15", "area30"]
    # every class appears in the training tiles
    assert all(n > 0 for n in report.class_pixels["train"][:6])


def test_eroded_gt_blacks_out_exactly_the_class_boundaries(aerial: Path) -> None:
    full = VaihingenDataset(aerial, "test", eroded_test_labels=False)[0]["label"].numpy()
    eroded = VaihingenDataset(aerial, "test")[0]["label"].numpy()
    band = boundary_mask(full, 2)
    assert band.any() and np.array_equal(eroded == 255, band)
    assert np.array_equal(eroded[~band], full[~band])


def _pixels(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    feats, labels = [], []
    for item in VaihingenDataset(root, split, eroded_test_labels=False):
        x = torch.cat([item["modalities"]["irrg"], item["modalities"]["dsm"][:1]])
        feats.append(x.flatten(1).T.numpy())
        labels.append(item["label"].flatten().numpy())
    return np.concatenate(feats), np.concatenate(labels)


def _pair_accuracy(train: tuple, test: tuple, a: int, b: int, cols: list[int]) -> float:
    """Nearest class mean (standardised features) between classes a and b."""
    (xtr, ytr), (xte, yte) = train, test
    mu, sd = xtr[:, cols].mean(0), xtr[:, cols].std(0)
    ztr, zte = (xtr[:, cols] - mu) / sd, (xte[:, cols] - mu) / sd
    ma, mb = ztr[ytr == a].mean(0), ztr[ytr == b].mean(0)
    keep = (yte == a) | (yte == b)
    z = zte[keep]
    pred = np.where(((z - ma) ** 2).sum(1) < ((z - mb) ** 2).sum(1), a, b)
    return float((pred == yte[keep]).mean())


def test_height_separates_what_colour_does_not(aerial: Path) -> None:
    train, test = _pixels(aerial, "train"), _pixels(aerial, "test")
    x, y = train
    height = x[:, 3]
    assert height[y == BUILDING].mean() > height[y == IMP].mean() + 0.25
    assert height[y == TREE].mean() > height[y == LOW_VEG].mean() + 0.15
    for a, b in ((IMP, BUILDING), (LOW_VEG, TREE)):
        optical = _pair_accuracy(train, test, a, b, [0, 1, 2])
        fused = _pair_accuracy(train, test, a, b, [0, 1, 2, 3])
        assert optical < 0.8, (a, b, optical)  # colour alone is ambiguous
        assert fused > optical + 0.15 and fused > 0.9, (a, b, optical, fused)


def test_counts_are_fixed_by_the_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="12 train"):
        generate_aerial(tmp_path / "x", num_train=160, progress=False)
    generate_aerial(tmp_path / "y", num_train=12, num_val=4, num_test=4, size=32, progress=False)
    with pytest.raises(ConfigError, match="size"):
        generate_aerial(tmp_path / "z", size=8, progress=False)


def test_cli_kind_aerial(tmp_path: Path, capsys) -> None:
    root = tmp_path / "v"
    assert main(["data", "synth", "--kind", "aerial", "--root", str(root), "--size", "40"]) == 0
    assert "synthetic vaihingen" in capsys.readouterr().out
    assert (root / "top" / "top_mosaic_09cm_area37.tif").is_file()
    assert (root / "gts_eroded_for_participants" / "top_mosaic_09cm_area5_noBoundary.tif").is_file()
    assert main(["data", "synth", "--kind", "aerial", "--dataset", "deliver",
                 "--root", str(tmp_path / "w")]) != 0
    assert not (tmp_path / "w").exists()
