"""Readers added for MCubeS and MUSES: .npy planes, AoLP pairs, 16-bit colour, SDK codecs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.data.modalities import get_modality, list_modalities
from mmsam.data.readers import npy_shape, read_aolp, read_image, read_npy
from mmsam.data.synthetic.muses import write_png16
from mmsam.errors import DataError


def test_registered_names_and_statistics() -> None:
    assert {"aolp", "dolp", "nir", "radar", "muses_lidar_projected",
            "muses_event_projected", "muses_radar_projected"} <= set(list_modalities())
    for name in ("aolp", "dolp", "nir"):  # not mean/std normalised in the reference
        assert get_modality(name).mean == (0.0,) * 3 and get_modality(name).std == (1.0,) * 3
    assert get_modality("muses_lidar_projected").mean[0] == pytest.approx(4.91737)


def test_read_npy_checks_the_array(tmp_path: Path) -> None:
    good = tmp_path / "good.npy"
    np.save(good, np.arange(6, dtype=np.float64).reshape(2, 3))
    arr = read_npy(good)
    assert arr.shape == (2, 3, 1) and arr.dtype == np.float32 and npy_shape(good) == (2, 3)
    for name, value, match in (
        ("inf.npy", np.array([[1.0, np.inf]]), r"non-finite values \(0 NaN, 1 inf\)"),
        ("cube.npy", np.zeros((2, 2, 2)), r"expected an HxW array, got shape \(2, 2, 2\)"),
        ("text.npy", np.array([["a"]]), "expected a numeric array"),
    ):
        np.save(tmp_path / name, value)
        with pytest.raises(DataError, match=match) as exc:
            read_npy(tmp_path / name)
        assert str(tmp_path / name) in str(exc.value)
    with pytest.raises(DataError, match="file not found"):
        read_npy(tmp_path / "absent.npy")


def test_aolp_reads_its_cosine_twin(tmp_path: Path) -> None:
    (tmp_path / "polL_aolp_sin").mkdir()
    (tmp_path / "polL_aolp_cos").mkdir()
    sin, cos = np.full((2, 3), 0.5, np.float32), np.full((2, 3), -0.25, np.float32)
    np.save(tmp_path / "polL_aolp_sin" / "a.npy", sin)
    np.save(tmp_path / "polL_aolp_cos" / "a.npy", cos)
    img = get_modality("aolp").load(tmp_path / "polL_aolp_sin" / "a.npy")
    assert img.shape == (3, 2, 3)
    assert img[:, 0, 0].tolist() == [0.5, -0.25, 0.5]  # [sin, cos, sin]
    np.save(tmp_path / "polL_aolp_cos" / "a.npy", np.zeros((3, 3), np.float32))
    with pytest.raises(DataError, match="AoLP cosine is 3x3 .* sine a.npy is 2x3") as exc:
        read_aolp(tmp_path / "polL_aolp_sin" / "a.npy")
    assert str(tmp_path / "polL_aolp_cos" / "a.npy") in str(exc.value)


def test_sixteen_bit_colour_png_keeps_all_bits(tmp_path: Path) -> None:
    arr = (np.arange(2 * 3 * 3).reshape(2, 3, 3) * 3001).astype(np.uint16)
    write_png16(tmp_path / "c.png", arr)
    out = read_image(tmp_path / "c.png")
    assert out.dtype == np.uint16 and np.array_equal(out, arr)
    data = (tmp_path / "c.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(data[:40])
    with pytest.raises(DataError, match="bad.png: cannot decode image"):
        read_image(tmp_path / "bad.png")
    grey = (np.arange(6).reshape(2, 3) * 9000).astype(np.uint16)  # 16-bit grey: PIL path
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(read_image(tmp_path / "g.png")[..., 0], grey)


def test_muses_sdk_projection_codecs(tmp_path: Path) -> None:
    values = np.array([[[12.5, 30.0, -1.2], [0.0, 0.0, 0.0]]])  # [range, intensity, height]
    codes = np.round((values + 100) * 150).astype(np.uint16)
    write_png16(tmp_path / "l.png", codes[:, :, ::-1])  # cv2 stores channel 0 as blue
    spec = get_modality("muses_lidar_projected")
    img = spec.load(tmp_path / "l.png")
    assert torch.allclose(img.permute(1, 2, 0), torch.from_numpy(values).float(), atol=1e-4)
    counts = np.zeros((1, 2, 3), np.uint8)
    counts[0, 0] = [3, 1, 0]  # positive, negative, 0 (cv2 order)
    Image.fromarray(counts[:, :, ::-1]).save(tmp_path / "e.png")
    ev = get_modality("muses_event_projected").load(tmp_path / "e.png")
    assert ev[:, 0, 0].tolist() == [3.0, 1.0, 0.0]
    Image.fromarray(np.zeros((1, 2, 3), np.uint8)).save(tmp_path / "8bit.png")
    with pytest.raises(DataError, match="uint16 MUSES projection"):
        spec.load(tmp_path / "8bit.png")
