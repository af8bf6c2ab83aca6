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


# -- remote sensing additions (issue #6): vertical flip, native-resolution crops -------------
def _index_sample(h: int = 30, w: int = 44) -> dict:
    """Every pixel holds its own index (image and label), so any crop can be located."""
    idx = torch.arange(h * w).view(h, w)
    return {"modalities": {"a": idx.float().expand(3, h, w).clone()}, "label": idx.long()}


def test_vertical_flip_is_exact_and_joint() -> None:
    from mmsam.data.transforms import JointRandomVerticalFlip

    s = _sample()
    out = JointRandomVerticalFlip(1.0)(s)
    assert torch.equal(out["label"], s["label"].flip(0))
    assert torch.equal(out["modalities"]["b"], s["modalities"]["b"].flip(-2))
    assert JointRandomVerticalFlip(0.0)(s) is s
    torch.manual_seed(0)
    flipped = sum(not torch.equal(JointRandomVerticalFlip(0.5)(s)["label"], s["label"])
                  for _ in range(200))
    assert 70 < flipped < 130
    with pytest.raises(ConfigError, match="vertical"):
        JointRandomVerticalFlip(-0.1)


def test_plain_crop_is_a_window_of_the_native_image() -> None:
    s = _index_sample()
    for seed in range(5):
        torch.manual_seed(seed)
        out = train_transform(16, scale=None, flip_p=0.0)(s)
        lab = out["label"]
        top, left = divmod(int(lab[0, 0]), 44)
        assert torch.equal(lab, s["label"][top:top + 16, left:left + 16])
        assert torch.equal(out["modalities"]["a"][0].long(), lab)
    small = train_transform(64, scale=None, flip_p=0.0)(s)  # padded, not resized
    assert small["label"].shape == (64, 64) and torch.all(small["label"][30:] == 255)
    assert torch.equal(small["label"][:30, :44], s["label"])


def test_resized_crop_with_unit_scale_is_not_a_plain_crop() -> None:
    # scale (1, 1) rescales the short side to the crop size: why scale_range null exists
    torch.manual_seed(0)
    out = JointRandomResizedCrop(16, scale=(1.0, 1.0))(_index_sample())
    top, left = divmod(int(out["label"][0, 0]), 44)
    assert not torch.equal(out["label"], _index_sample()["label"][top:top + 16, left:left + 16])


def test_train_transform_vflip_and_native_eval() -> None:
    from mmsam.data.transforms import JointRandomVerticalFlip, eval_transform

    names = [type(t).__name__ for t in train_transform(8, None, 0.5, 0.5).transforms]
    assert names == ["JointRandomCrop", "JointRandomHorizontalFlip", "JointRandomVerticalFlip"]
    assert not any(isinstance(t, JointRandomVerticalFlip)
                   for t in train_transform(8, (0.5, 2.0), 0.5).transforms)
    s = _sample(h=37, w=51)
    out = eval_transform(None)(s)
    assert out["label"].shape == (37, 51)
    assert torch.equal(out["modalities"]["a"], s["modalities"]["a"])
