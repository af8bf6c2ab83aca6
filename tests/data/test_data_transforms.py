"""Joint transforms keep every modality and the label on the same geometry."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mmsam.data.transforms import (
    Compose,
    JointRandomHorizontalFlip,
    JointRandomResizedCrop,
    JointResize,
    train_transform,
)
from mmsam.errors import ConfigError

LEVELS = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])


def _sample(h: int = 40, w: int = 56, block: int = 8, seed: int = 0) -> dict:
    """Blocky image whose label is a function of the pixel value; a second modality is
    another function of the first, a third is a coordinate ramp."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, len(LEVELS), (h // block + 1, w // block + 1), generator=g)
    cls = cls.repeat_interleave(block, 0).repeat_interleave(block, 1)[:h, :w]
    img = LEVELS[cls].expand(3, h, w).clone()
    ramp = torch.linspace(0, 1, w).expand(3, h, w).clone()
    return {"modalities": {"a": img, "b": 1.0 - img, "ramp": ramp}, "label": cls.long(),
            "meta": {"id": "x"}}


def _decode(img: torch.Tensor) -> torch.Tensor:
    return (img[0][..., None] - LEVELS).abs().argmin(-1)


def test_flip_is_exact_and_joint() -> None:
    s = _sample()
    out = JointRandomHorizontalFlip(p=1.0)(s)
    assert torch.equal(out["label"], s["label"].flip(-1))
    for k in s["modalities"]:
        assert torch.equal(out["modalities"][k], s["modalities"][k].flip(-1))
    assert out["meta"] == s["meta"]  # other keys pass through
    assert JointRandomHorizontalFlip(p=0.0)(s) is s


def _coords(h: int = 40, w: int = 56) -> dict:
    """Modalities hold each pixel's centre coordinate; the label encodes its (row, col)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cx, cy = ((x + 0.5) / w).float(), ((y + 0.5) / h).float()
    return {"modalities": {"x": cx.expand(3, h, w).clone(), "y": cy.expand(3, h, w).clone()},
            "label": (y * 100 + x).long()}


@pytest.mark.parametrize("seed", range(8))
def test_random_resized_crop_keeps_subpixel_alignment(seed: int) -> None:
    h, w = 40, 56
    torch.manual_seed(seed)
    t = Compose([JointRandomHorizontalFlip(0.5),
                 JointRandomResizedCrop((32, 48), (0.5, 2.0), label_fill=-1)])
    out = t(_coords(h, w))
    lab = out["label"]
    assert lab.shape == (32, 48) and lab.dtype == torch.long
    valid = lab >= 0
    assert torch.all(out["modalities"]["x"][:, ~valid] == 0)  # images padded where the label is
    ly, lx = lab // 100, lab % 100
    inner = valid & (lx >= 3) & (lx < w - 3) & (ly >= 3) & (ly < h - 3)
    assert inner.sum() > 50
    # the label pixel's source pixel holds the image's source coordinate (within 0.5 px)
    sx = out["modalities"]["x"][0] * w - 0.5
    sy = out["modalities"]["y"][0] * h - 0.5
    assert (sx - lx)[inner].abs().max() <= 0.5 + 1e-3
    assert (sy - ly)[inner].abs().max() <= 0.5 + 1e-3


@pytest.mark.parametrize("seed", range(4))
def test_random_resized_crop_is_joint_over_modalities(seed: int) -> None:
    s = _sample(seed=seed)
    torch.manual_seed(seed)
    out = Compose([JointRandomHorizontalFlip(0.5), JointRandomResizedCrop((32, 48), (0.5, 2.0))])(s)
    a, b, lab = out["modalities"]["a"], out["modalities"]["b"], out["label"]
    pad = lab == 255
    assert torch.all(a[:, pad] == 0) and torch.all(b[:, pad] == 0)  # padded together
    assert torch.allclose(b[:, ~pad], 1.0 - a[:, ~pad], atol=1e-5)  # same geometry
    assert set(lab.unique().tolist()) <= set(range(len(LEVELS))) | {255}
    interior = torch.ones_like(pad)  # away from block edges the value decodes to the label
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            interior &= lab == torch.roll(lab, (dy, dx), (0, 1))
    interior &= ~pad
    assert (_decode(a)[interior] == lab[interior]).float().mean() > 0.97


def test_crop_scale_range_changes_the_zoom() -> None:
    s = _sample(h=64, w=64, block=1)
    ramp_span = []
    for seed in range(20):
        torch.manual_seed(seed)
        r = JointRandomResizedCrop(32, scale=(0.5, 2.0))(s)["modalities"]["ramp"][0, 0]
        ramp_span.append(float(r[r > 0].max() - r[r > 0].min()))
    assert max(ramp_span) > 0.9 and min(ramp_span) < 0.6  # zoomed out (padded) and zoomed in


def test_same_seed_same_crop_other_seed_differs() -> None:
    t = train_transform(24)
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outs.append(t(_sample(seed=3))["modalities"]["a"])
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_resize_uses_nearest_for_labels() -> None:
    s = _sample()
    out = JointResize(20)(s)
    assert out["label"].shape == (20, 20) and out["modalities"]["b"].shape == (3, 20, 20)
    assert set(out["label"].unique().tolist()) <= set(s["label"].unique().tolist())
    up = JointResize((80, 112))(s)  # exact 2x: nearest-exact repeats every pixel twice
    assert torch.equal(up["label"][::2, ::2], s["label"])


@pytest.mark.parametrize("bad", [
    lambda: JointResize(0), lambda: JointRandomResizedCrop((3, 4, 5)),
    lambda: JointRandomResizedCrop(8, scale=(2.0, 1.0)), lambda: JointRandomHorizontalFlip(1.5)])
def test_bad_arguments(bad) -> None:
    with pytest.raises(ConfigError):
        bad()


class _Toy(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return train_transform(16)(_sample(seed=i))


def test_worker_randomness_is_reproducible_from_the_seed() -> None:
    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        loader = DataLoader(_Toy(), batch_size=4, num_workers=1)
        return next(iter(loader))["modalities"]["a"]

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
