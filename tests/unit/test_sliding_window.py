"""Sliding-window inference: same logits as whole-image inference where it should be, every pixel
covered, bounded forward batches, images smaller than the window."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsam.engine.sliding_window import sliding_window_logits, window_starts
from mmsam.errors import ConfigError


class PixelMethod(nn.Module):
    """A per-pixel (1×1 conv) method over the summed present modalities: translation-equivariant,
    so windows of any size and stride must reproduce the whole-image logits exactly."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, k, 1)
        self.calls: list[dict] = []

    def forward(self, batch: dict) -> dict:
        x = 0
        for name, img in batch["modalities"].items():
            x = x + img * batch["present"][name].float()[:, None, None, None]
        self.calls.append(batch)
        return {"logits": self.conv(x)}


class CornerMethod(nn.Module):
    """Not translation-equivariant: logits depend on the position inside the window."""

    def forward(self, batch: dict) -> dict:
        x = batch["modalities"]["rgb"]
        n, _, h, w = x.shape
        ramp = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
        return {"logits": torch.cat([ramp, -ramp], 1).expand(n, 2, h, w) + x[:, :1]}


def make_batch(b: int, h: int, w: int) -> dict:
    torch.manual_seed(1)
    return {
        "modalities": {"rgb": torch.randn(b, 3, h, w), "depth": torch.randn(b, 3, h, w)},
        "present": {"rgb": torch.ones(b, dtype=torch.bool), "depth": torch.arange(b) % 2 == 0},
        "label": torch.randint(0, 5, (b, h, w)),
        "meta": {"id": [f"s{i}" for i in range(b)]},
    }


def test_window_starts_cover_the_axis_and_end_at_the_edge():
    assert window_starts(300, 128, 96) == [0, 96, 172]
    assert window_starts(257, 128, 96) == [0, 96, 129]
    assert window_starts(256, 256, 32) == [0]
    assert window_starts(100, 128, 64) == [0]
    assert window_starts(512, 256, 128) == [0, 128, 256]


@pytest.mark.parametrize("window,stride,window_batch", [(128, 96, 4), (64, 17, 3), (100, 100, 1), (300, 150, 2)])
def test_equivariant_method_gives_whole_image_logits(window, stride, window_batch):
    method = PixelMethod()
    batch = make_batch(2, 300, 257)
    with torch.no_grad():
        whole = method(batch)["logits"]
        tiled = sliding_window_logits(method, batch, window=window, stride=stride, num_classes=5, window_batch=window_batch)
    assert tiled.shape == whole.shape == (2, 5, 300, 257)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_window_equal_to_image_is_one_plain_forward():
    method = CornerMethod()
    batch = make_batch(3, 64, 64)
    tiled = sliding_window_logits(method, batch, window=64, stride=32, window_batch=8)
    torch.testing.assert_close(tiled, method(batch)["logits"])


def test_every_pixel_covered_and_overlaps_averaged():
    """A constant-1 method: the average over overlapping windows is 1 everywhere (0 would mean a gap)."""
    calls = []

    def ones(batch: dict) -> dict:
        x = batch["modalities"]["rgb"]
        calls.append(x.shape[0])
        return {"logits": torch.ones(x.shape[0], 2, *x.shape[-2:])}

    out = sliding_window_logits(ones, make_batch(1, 300, 257), window=128, stride=96, window_batch=4)
    assert out.shape == (1, 2, 300, 257)
    assert torch.equal(out, torch.ones_like(out))
    assert sum(calls) == 3 * 3  # rows at 0, 96, 172; columns at 0, 96, 129


def test_window_batch_bounds_the_forward_batch_and_does_not_change_results():
    batch = make_batch(3, 200, 150)
    results = []
    for window_batch in (1, 4, 7, 100):
        method = CornerMethod()
        sizes = []
        orig = method.forward
        method.forward = lambda b, orig=orig, sizes=sizes: (sizes.append(b["modalities"]["rgb"].shape[0]), orig(b))[1]
        results.append(sliding_window_logits(method, batch, window=64, stride=48, window_batch=window_batch))
        assert max(sizes) <= window_batch and sum(sizes) == 3 * 4 * 3  # 3 images × 4 rows × 3 columns
    for r in results[1:]:
        torch.testing.assert_close(r, results[0])


def test_crops_carry_presence_meta_and_label_of_their_sample():
    method = PixelMethod()
    batch = make_batch(3, 80, 80)
    sliding_window_logits(method, batch, window=64, stride=16, window_batch=5)
    for call in method.calls:
        ids = call["meta"]["id"]
        expected = torch.tensor([int(i[1:]) % 2 == 0 for i in ids])
        assert torch.equal(call["present"]["depth"], expected)
        assert call["modalities"]["rgb"].shape[-2:] == call["modalities"]["depth"].shape[-2:] == (64, 64)
        assert call["label"].shape == (len(ids), 64, 64)
    # the crops of one window are the same region in every modality and the label
    first = method.calls[0]
    assert torch.equal(first["modalities"]["depth"][0], batch["modalities"]["depth"][0, :, :64, :64])
    assert torch.equal(first["label"][0], batch["label"][0, :64, :64])


def test_image_smaller_than_window_is_padded_and_cropped_back():
    seen = []

    def method(batch: dict) -> dict:
        x = batch["modalities"]["rgb"]
        seen.append((x.shape, batch["label"].clone(), batch["present"]["rgb"].clone()))
        return PixelMethod()(batch)

    batch = make_batch(2, 40, 100)
    out = sliding_window_logits(method, batch, window=64, stride=32)
    assert out.shape == (2, 5, 40, 100)
    shape, label, present = seen[0]
    assert shape[-2:] == (64, 64)
    assert (label[:, 40:] == 255).all() and torch.equal(label[0, :40], batch["label"][0, :, :64])
    assert torch.equal(present, torch.ones_like(present))
    torch.testing.assert_close(out, PixelMethod()(batch)["logits"], rtol=1e-5, atol=1e-5)


def test_bad_window_settings_are_refused():
    batch = make_batch(1, 64, 64)
    with pytest.raises(ConfigError, match="stride"):
        sliding_window_logits(PixelMethod(), batch, window=32, stride=48)
    with pytest.raises(ConfigError, match="window"):
        sliding_window_logits(PixelMethod(), batch, window=0)
    with pytest.raises(ValueError, match="classes"):
        sliding_window_logits(PixelMethod(), batch, window=32, num_classes=3)


def test_repeat_edges_match_mfnet_official_loop() -> None:
    """``edges="repeat"``: MFNet's test loop snaps overflowing starts to the edge and sums logits."""
    starts = window_starts(2557, 256, 32, edges="repeat")
    assert len(starts) == 80 and starts.count(2557 - 256) == 8 and starts[:2] == [0, 32]
    assert window_starts(2557, 256, 32) .count(2557 - 256) == 1

    torch.manual_seed(1)
    h, w, win, stride = 45, 37, 16, 6
    batch = {"modalities": {"rgb": torch.randn(2, 3, h, w)}, "present": {"rgb": torch.ones(2, dtype=torch.bool)}}
    method = CornerMethod()
    got = sliding_window_logits(method, batch, window=win, stride=stride, window_batch=3, edges="repeat")
    # the official loop, written out: every (possibly repeated) window added once per start pair
    want = torch.zeros(2, 2, h, w)
    for y0 in range(0, h, stride):
        y = min(y0, h - win)
        for x0 in range(0, w, stride):
            x = min(x0, w - win)
            crop = {"modalities": {"rgb": batch["modalities"]["rgb"][:, :, y : y + win, x : x + win]}}
            want[:, :, y : y + win, x : x + win] += method(crop)["logits"]
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-3)
    unique = sliding_window_logits(method, batch, window=win, stride=stride, window_batch=3)
    assert not torch.allclose(unique, want)  # the default averages distinct windows
    with pytest.raises(ConfigError, match="eval_window_edges"):
        sliding_window_logits(method, batch, window=win, stride=stride, edges="snap")
