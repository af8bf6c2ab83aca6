"""Modality registry, readers and the 3-channel conversion."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data import modalities as mod
from mmsam.data.modalities import (
    ModalitySpec,
    get_modality,
    list_modalities,
    register_modality,
    to_three_channels,
)
from mmsam.data.readers import check_finite, image_size, read_image
from mmsam.errors import ConfigError, DataError


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_builtin_modalities_and_their_normalisation() -> None:
    assert {"rgb", "depth", "event", "lidar"} <= set(list_modalities())
    assert get_modality("rgb").mean == (0.485, 0.456, 0.406)
    assert get_modality("rgb").std == (0.229, 0.224, 0.225)
    for name in ("depth", "event", "lidar"):  # DELIVER divides by 255 only
        assert get_modality(name).mean == (0.0, 0.0, 0.0)
        assert get_modality(name).std == (1.0, 1.0, 1.0)


def test_unknown_modality_lists_known_names() -> None:
    with pytest.raises(ConfigError) as exc:
        get_modality("thermal")
    msg = str(exc.value)
    assert "thermal" in msg and "rgb" in msg and "lidar" in msg


def test_new_modality_is_one_register_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mod, "_REGISTRY", dict(mod._REGISTRY))
    register_modality(ModalitySpec("thermal", read_image, to_three_channels,
                                   (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "thermal camera"))
    assert "thermal" in list_modalities()
    img = get_modality("thermal").load(_png(tmp_path / "t.png", np.full((4, 5), 255, np.uint8)))
    assert img.shape == (3, 4, 5) and torch.all(img == 1.0)
    assert torch.allclose(get_modality("thermal").normalize(img), torch.full((3, 4, 5), 2.0))
    with pytest.raises(ConfigError, match="already registered"):
        register_modality(ModalitySpec("thermal", read_image, to_three_channels,
                                       (0.0,) * 3, (1.0,) * 3))


def test_to_three_follows_the_reference_loader(tmp_path: Path) -> None:
    grey = read_image(_png(tmp_path / "g.png", np.arange(12, dtype=np.uint8).reshape(3, 4)))
    assert grey.shape == (3, 4, 1)
    out = to_three_channels(grey)
    assert out.shape == (3, 4, 3) and out.dtype == np.float32
    assert np.allclose(out[..., 2], np.arange(12).reshape(3, 4) / 255.0)

    rgba = np.dstack([np.full((2, 2), v, np.uint8) for v in (10, 20, 30, 255)])
    out = to_three_channels(read_image(_png(tmp_path / "a.png", rgba)))
    assert np.allclose(out[0, 0], np.array([10, 20, 30]) / 255.0)  # alpha dropped

    deep = np.array([[0, 65535], [32768, 1000]], np.uint16)
    arr = read_image(_png(tmp_path / "d.png", deep))
    assert arr.dtype == np.uint16
    assert np.allclose(to_three_channels(arr)[..., 0], deep / 65535.0)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.png: file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match="nope.png"):
        image_size(tmp_path / "nope.png")


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = _png(tmp_path / "x_depth_front.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert image_size(path) == (64, 64)  # header intact: the cheap check passes...
    with pytest.raises(DataError, match=r"x_depth_front\.png: cannot decode"):
        read_image(path)  # ...decoding does not


def test_garbage_bytes_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.png"
    path.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="junk.png"):
        read_image(path)
    with pytest.raises(DataError, match="junk.png"):
        image_size(path)


@pytest.mark.parametrize("bad, word", [(np.nan, "1 NaN"), (np.inf, "1 inf")])
def test_float_tiff_with_non_finite_values_is_rejected(tmp_path: Path, bad: float,
                                                       word: str) -> None:
    arr = np.ones((4, 4), np.float32)
    arr[1, 2] = bad
    path = tmp_path / "depth.tiff"
    Image.fromarray(arr).save(path)
    with pytest.raises(DataError, match=rf"depth\.tiff: contains non-finite values.*{word}"):
        get_modality("depth").reader(path)


def test_finite_float_tiff_reads_as_float32(tmp_path: Path) -> None:
    arr = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "ok.tiff"
    Image.fromarray(arr).save(path)
    out = read_image(path)
    assert out.dtype == np.float32 and out.shape == (3, 4, 1)
    assert np.allclose(out[..., 0], arr)


def test_check_finite_on_arrays() -> None:
    ok = np.zeros((2, 2), np.float32)
    assert check_finite(ok) is ok
    assert check_finite(np.zeros((2, 2), np.uint8)) is not None
    with pytest.raises(DataError, match="depth.npy: contains non-finite"):
        check_finite(np.array([0.0, np.nan]), "depth.npy")
    with pytest.raises(DataError):
        to_three_channels(np.array([[[np.inf]]], np.float32))


def test_load_and_normalise_round_trip(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    spec = get_modality("rgb")
    img = spec.load(_png(tmp_path / "c.png", rgb))
    assert img.shape == (3, 5, 6) and img.dtype == torch.float32
    assert torch.allclose(img, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    norm = spec.normalize(img)
    assert torch.allclose(norm[0], (img[0] - 0.485) / 0.229)
    assert torch.allclose(spec.denormalize(norm), img, atol=1e-6)
