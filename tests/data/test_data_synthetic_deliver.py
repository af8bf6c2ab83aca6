"""The synthetic DELIVER generator: layout, encodings, determinism, fusion-relevant physics."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsam.data.datasets.deliver import DELIVER_CONDITIONS, DELIVER_FAILURES
from mmsam.data.synthetic import generate_deliver, is_generated
from mmsam.data.synthetic.deliver import MARKER
from mmsam.errors import ConfigError

FOLDERS = {"img": "rgb", "hha": "depth", "event": "event", "lidar": "lidar", "semantic": "semantic"}
ROAD, SIDEWALK, CARS, SKY, BUILDING = 7, 8, 10, 13, 1


def _arr(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def _sibling(rgb: Path, folder: str) -> Path:
    root = rgb.parents[4]
    rel = rgb.relative_to(root / "img")
    return root / folder / rel.parent / rel.name.replace("_rgb_", f"_{FOLDERS[folder]}_")


def _samples(root: Path, split: str = "*") -> list[Path]:
    return sorted(root.glob(f"img/*/{split}/*/*_rgb_front.png"))


def test_layout_and_file_names(synth_root: Path, synth_info: dict) -> None:
    counts = synth_info["counts"]
    for split, key in (("train", "num_train"), ("val", "num_val"), ("test", "num_test")):
        assert len(_samples(synth_root, split)) == counts[key]
    rgbs = _samples(synth_root)
    for folder, tag in FOLDERS.items():
        files = sorted(synth_root.glob(f"{folder}/*/*/*/*.png"))
        assert len(files) == len(rgbs), folder
        assert all(f.name.endswith(f"_{tag}_front.png") for f in files), folder
    for rgb in rgbs:
        cond, split, scene, _ = rgb.relative_to(synth_root / "img").parts
        assert cond in DELIVER_CONDITIONS and split in ("train", "val", "test")
        for folder in FOLDERS:
            assert _sibling(rgb, folder).is_file()
    train_scenes = {p.parent.name for p in _samples(synth_root, "train")}
    assert {c for c in DELIVER_FAILURES if any(s.endswith("_" + c) for s in train_scenes)} == set(
        DELIVER_FAILURES)  # 20 training samples cover every sensor-failure case
    assert {p.parts[-4] for p in _samples(synth_root, "train")} == set(DELIVER_CONDITIONS)
    assert is_generated(synth_root)


def test_encodings(synth_root: Path, synth_info: dict) -> None:
    size = synth_info["size"]
    ids: set[int] = set()
    for rgb in _samples(synth_root):
        assert Image.open(rgb).mode == "RGB" and Image.open(rgb).size == (size, size)
        assert Image.open(_sibling(rgb, "hha")).mode == "RGB"
        assert Image.open(_sibling(rgb, "lidar")).mode == "L"
        sem = Image.open(_sibling(rgb, "semantic"))
        assert sem.mode == "L" and sem.size == (size, size)
        event = Image.open(_sibling(rgb, "event"))
        expected = size * 512 // 1042 if rgb.parent.name.endswith("_eventlowres") else size
        assert event.mode == "RGB" and event.size == (expected, expected)
        assert expected == size or size % expected != 0  # a non-integer ratio, as in DELIVER
        ids |= set(np.unique(_arr(_sibling(rgb, "semantic"))).tolist())
    assert ids <= set(range(26))  # DELIVER ids 1..25 plus 0 = unlabeled
    assert {ROAD, SIDEWALK, CARS, SKY, BUILDING} <= ids and len(ids - {0}) >= 8


def _tree_bytes(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    kw = dict(num_train=5, num_val=1, num_test=1, size=32, progress=False)
    generate_deliver(tmp_path / "a", seed=3, **kw)
    generate_deliver(tmp_path / "b", seed=3, **kw)
    generate_deliver(tmp_path / "c", seed=4, **kw)
    a, b, c = (_tree_bytes(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 7 * 5 + 1  # 5 files per sample + the marker
    assert a.keys() == c.keys()  # same layout...
    pngs = [k for k in a if k.endswith(".png")]
    assert sum(a[k] != c[k] for k in pngs) > len(pngs) // 2  # ...different content


def test_summary_and_marker(tmp_path: Path) -> None:
    assert not is_generated(tmp_path / "x")
    out = generate_deliver(tmp_path / "x", num_train=5, num_val=0, num_test=0, size=32,
                           progress=False)
    assert out["splits"] == {"train": 5, "val": 0, "test": 0} and out["files"] == 25
    assert set(out["conditions"]) == set(DELIVER_CONDITIONS)
    assert (tmp_path / "x" / MARKER).is_file() and is_generated(tmp_path / "x")
    with pytest.raises(ConfigError):
        generate_deliver(tmp_path / "y", size=4, progress=False)


def _normal(rgb: Path) -> bool:
    return not any(c in rgb.parent.name for c in DELIVER_FAILURES)


def test_fusion_matters_by_construction(synth_root: Path) -> None:
    """Colour separates road/sidewalk by day but barely at night; depth never does;
    depth puts every car in front of what is just above it."""
    contrast: dict[str, list[float]] = {"sun": [], "night": []}
    hha_gap, car_front = [], []
    for rgb_path in _samples(synth_root):
        cond = rgb_path.parts[-4]
        lab = _arr(_sibling(rgb_path, "semantic"))
        hha = _arr(_sibling(rgb_path, "hha")).astype(float)
        rgb = _arr(rgb_path).astype(float)
        road, side = lab == ROAD, lab == SIDEWALK
        if _normal(rgb_path) and cond in contrast and road.sum() > 10 and side.sum() > 10:
            contrast[cond].append(np.abs(rgb[road].mean(0) - rgb[side].mean(0)).mean())
        for r in range(lab.shape[0]):  # same image row = same distance on the ground plane
            if road[r].any() and side[r].any():
                hha_gap.append(np.abs(hha[r][road[r]].mean(0) - hha[r][side[r]].mean(0)).max())
        car = lab == CARS
        for c in np.flatnonzero(car.any(0)):
            top = int(np.argmax(car[:, c]))
            if top > 0:
                car_front.append(hha[top - 1, c, 0] < hha[top, c, 0])  # channel 0 = disparity
    day, night = np.mean(contrast["sun"]), np.mean(contrast["night"])
    assert day > 25 and night < 0.5 * day, (day, night)
    assert np.mean(hha_gap) < 2.0  # HHA cannot tell road from sidewalk
    assert len(car_front) > 20 and np.mean(car_front) > 0.95


def test_events_and_lidar_are_sparse(synth_root: Path) -> None:
    on_building, on_sky = [], []
    for rgb_path in _samples(synth_root, "train"):
        lab = _arr(_sibling(rgb_path, "semantic"))
        lidar = _arr(_sibling(rgb_path, "lidar"))
        assert 0.02 < (lidar > 0).mean() < 0.5  # scan lines, not a dense image
        assert not lidar[lab == 0].any() if (lab == 0).any() else True  # no returns off the hood
        if "eventlowres" in rgb_path.parent.name:
            continue
        ev = _arr(_sibling(rgb_path, "event"))[..., 2] > 0
        assert ev.mean() < 0.4  # edges and motion only
        if rgb_path.parts[-4] != "fog":
            on_building += ev[lab == BUILDING].tolist()
            on_sky += ev[lab == SKY].tolist()
    assert np.mean(on_building) > 2 * np.mean(on_sky)  # textured, moving facades vs flat sky
