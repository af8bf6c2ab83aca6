"""The synthetic MUSES stand-in: both layouts' files, determinism, weather and daylight."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsam.data.synthetic.muses import (
    MARKER,
    TRAIN_ID,
    generate_muses,
    is_generated,
    render_muses,
)
from mmsam.errors import ConfigError

PER_SAMPLE = ("frame_camera/{r}/{s}_frame_camera.png", "event_camera/{r}/{s}_event_camera.png",
              "lidar/{r}/{s}_lidar.png", "gt_semantic/{r}/{s}_gt_labelTrainIds.png",
              "projected_to_rgb/lidar/{r}/{s}_lidar.png",
              "projected_to_rgb/event_camera/{r}/{s}_event_camera.png")


def test_layout_and_encodings(muses_root: Path, muses_info: dict) -> None:
    cams = sorted(muses_root.glob("frame_camera/*/*/*/*.png"))
    assert len(cams) == sum(muses_info["counts"].values())
    H, W = muses_info["size"], int(round(muses_info["size"] * 16 / 9))
    for cam in cams:
        split, weather, tod, name = cam.relative_to(muses_root / "frame_camera").parts
        stem = name[: -len("_frame_camera.png")]
        assert stem.startswith("REC") and "_frame_" in stem
        for pattern in PER_SAMPLE:
            assert (muses_root / pattern.format(r=f"{split}/{weather}/{tod}", s=stem)).is_file()
    cam = cams[0]
    assert Image.open(cam).mode == "RGB" and Image.open(cam).size == (W, H)
    label = np.array(Image.open(str(cam).replace("/frame_camera", "/gt_semantic")
                                .replace("frame_camera", "gt_labelTrainIds")))
    assert label.dtype == np.uint8 and set(np.unique(label)) <= set(TRAIN_ID.values()) | {255}
    conds = {c.parts[-3] + "_" + c.parts[-2] for c in cams if c.parts[-4] == "train"}
    assert len(conds) == 8  # every weather x time of day
    assert is_generated(muses_root)
    assert json.loads((muses_root / MARKER).read_text())["conditions"]["fog_night"] >= 1


def test_deterministic_and_test_labels_optional(tmp_path: Path) -> None:
    kw = dict(num_train=2, num_val=0, num_test=2, size=16, progress=False)
    generate_muses(tmp_path / "a", seed=1, **kw)
    generate_muses(tmp_path / "b", seed=1, **kw)
    generate_muses(tmp_path / "c", seed=1, test_labels=False, **kw)

    def tree(root: Path) -> dict:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.png")}

    a, b, c = (tree(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 4 * 6
    assert set(a) - set(c) == {k for k in a if k.startswith("gt_semantic/test")}
    assert len(set(a) - set(c)) == 2
    with pytest.raises(ConfigError):
        generate_muses(tmp_path / "d", num_train=-1, progress=False)


def test_weather_and_daylight_change_what_the_camera_sees() -> None:
    def mean_rgb(weather: str, tod: str) -> float:
        return float(np.mean([render_muses(np.random.default_rng(s), 48, 85, weather, tod)
                              ["frame_camera"].mean() for s in range(3)]))

    def contrast(weather: str) -> float:
        return float(np.mean([render_muses(np.random.default_rng(s), 48, 85, weather, "day")
                              ["frame_camera"].std() for s in range(3)]))

    assert mean_rgb("clear", "night") < 0.4 * mean_rgb("clear", "day")
    assert contrast("fog") < contrast("clear")
    a = render_muses(np.random.default_rng(0), 48, 85, "snow", "day")
    b = render_muses(np.random.default_rng(0), 48, 85, "clear", "day")
    terrain = np.isin(a["label"], (1, 9))  # sidewalk, terrain: snow-covered
    if terrain.any():
        assert a["frame_camera"][terrain].mean() > b["frame_camera"][terrain].mean()
    lidar = a["lidar_projected"]
    assert lidar.dtype == np.uint16 and lidar.shape == (48, 85, 3)
    empty = lidar[..., 2] == 15000  # range channel (cv2 order: stored in the blue plane)
    assert 0.3 < empty.mean() < 0.99
