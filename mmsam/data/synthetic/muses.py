"""Write a synthetic adverse-weather driving set in MUSES' layouts and encodings.

One root serves both layouts the MUSES loader reads (the SAM-style ``multimodal`` one and the
official root with SDK projections), since their camera and label folders coincide:
```
frame_camera/<split>/<weather>/<tod>/<stem>_frame_camera.png   8-bit RGB
event_camera/<split>/<weather>/<tod>/<stem>_event_camera.png   8-bit events (R on, G off, B any)
lidar/<split>/<weather>/<tod>/<stem>_lidar.png                 8-bit inverse depth on scan lines
gt_semantic/<split>/<weather>/<tod>/<stem>_gt_labelTrainIds.png  Cityscapes trainIds, 255 ignore
projected_to_rgb/lidar/<split>/<weather>/<tod>/<stem>_lidar.png  uint16 (v + 100) * 150,
    channels [range m, intensity, height m] in cv2 order (so the PNG's R plane holds height)
projected_to_rgb/event_camera/.../<stem>_event_camera.png   uint8 [pos, neg, 0] counts, cv2 order
```
Scenes are the DELIVER generator's driving scenes (:mod:`mmsam.data.synthetic.driving`) under
MUSES' 4 weathers x 2 times of day; images are ``size`` tall with MUSES' 16:9 aspect. Unlike the
real benchmark, the test split has labels (``test_labels=False`` leaves them out, as MUSES does).
Deterministic from the seed; a marker ``mmsam_synthetic.json`` records the parameters.
"""
from __future__ import annotations

import struct
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from mmsam.data.datasets.muses import (
    CAMERA,
    LABEL_FOLDER,
    LABEL_TAG,
    MUSES_TIMES,
    MUSES_WEATHERS,
    PROJECTED,
)
from mmsam.data.modalities import MUSES_CODEC_SCALE, MUSES_CODEC_SHIFT
from mmsam.data.synthetic import driving as d
from mmsam.data.synthetic.sensors import apply_fog, camera, events, lidar, radiance
from mmsam.data.synthetic.common import MARKER, Synthesis, check_generate_args, written_by  # noqa: F401  (MARKER: re-exported)

GENERATOR = "mmsam.synthetic.muses"
SPLITS = ("train", "val", "test")
CONDITIONS = tuple((w, t) for w in MUSES_WEATHERS for t in MUSES_TIMES)
#: DELIVER disk id (driving scenes) -> Cityscapes trainId; everything else 255.
TRAIN_ID = {d.BUILDING: 2, d.PEDESTRIAN: 11, d.POLE: 5, d.ROADLINE: 0, d.ROAD: 0,
            d.SIDEWALK: 1, d.VEGETATION: 8, d.CARS: 13, d.TRAFFICSIGN: 7, d.SKY: 10,
            d.TERRAIN: 9}
_LUT = np.full(256, 255, np.uint8)
for _k, _v in TRAIN_ID.items():
    _LUT[_k] = _v
#: weather -> sensors' lighting condition by day; at night the "night" lighting is used.
DAY_LIGHT = {"clear": "sun", "fog": "fog", "rain": "rain", "snow": "cloud"}
LIDAR_WEATHER = {"clear": "sun", "fog": "fog", "rain": "rain", "snow": "rain"}
NIGHT_FOG = np.array([0.04, 0.04, 0.05])


def stem_for(split: str, j: int) -> str:
    """MUSES-like stem ``REC####_frame_######``; unique per split and index."""
    s = SPLITS.index(split)
    return f"REC{1 + 100 * s + j // 8:04d}_frame_{100000 + 7 * j:06d}"


def write_png16(path: Union[str, Path], array: np.ndarray) -> None:
    """Write an HxW or HxWx3/4 uint16 array as a 16-bit PNG (PIL cannot write 16-bit colour)."""
    a = np.ascontiguousarray(array, dtype=np.uint16)
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    rows = a.reshape(h, w * c).astype(">u2")
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n"
                           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _precipitation(img: np.ndarray, weather: str, rng: np.random.Generator) -> np.ndarray:
    """Rain streaks or snow flakes on an 8-bit image (rain by day is the sensors' own)."""
    H, W = img.shape[:2]
    out = img.astype(np.float64)
    n = max(1, H * W // 250)
    ys, xs = rng.integers(0, H, n), rng.integers(0, W, n)
    if weather == "snow":
        for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            out[np.clip(ys + dy, 0, H - 1), np.clip(xs + dx, 0, W - 1)] = 235.0
    else:
        for i in range(max(3, H // 20)):
            yy, xx = np.clip(ys + i, 0, H - 1), np.clip(xs + i // 3, 0, W - 1)
            out[yy, xx] += 40.0
    return np.clip(out, 0, 255).astype(np.uint8)


def _radiance(lay: d.Layout, r: dict, weather: str, tod: str, vis: float) -> np.ndarray:
    light = "night" if tod == "night" else DAY_LIGHT[weather]
    if weather == "snow":  # snow cover on the ground, more on sidewalk and terrain than on road
        r = dict(r)
        cover = np.isin(r["label"], (d.SIDEWALK, d.TERRAIN)) * 0.8 + (r["label"] == d.ROAD) * 0.3
        r["albedo"] = r["albedo"] * (1 - cover[..., None]) + 0.9 * cover[..., None]
    rad = radiance(lay, r, light)
    if weather == "fog":
        if tod == "day":
            rad = apply_fog(rad, r["depth"], vis)
        else:
            with np.errstate(over="ignore"):
                T = np.exp(-np.where(np.isfinite(r["depth"]), r["depth"], 1e9) / vis)[..., None]
            rad = rad * T + NIGHT_FOG * (1 - T)
    return rad


def render_muses(rng: np.random.Generator, H: int, W: int, weather: str, tod: str) -> dict:
    """All files of one synthetic MUSES scene as arrays (see the module docstring)."""
    lay = d.sample_layout(rng, H, W)
    dz = rng.uniform(0.5, 1.2)
    vis = rng.uniform(12.0, 30.0)
    r_a = d.render(lay, ego_z=0.0, t=0.0, cy_shift=rng.uniform(-0.4, 0.4) * H / 128)
    r_b = d.render(lay, ego_z=dz, t=1.0)
    rad_a, rad_b = (_radiance(lay, r, weather, tod, vis) for r in (r_a, r_b))
    light = "night" if tod == "night" else DAY_LIGHT[weather]
    rgb = camera(rad_b, light, "normal", rng)
    if weather == "snow" or (weather == "rain" and tod == "night"):
        rgb = _precipitation(rgb, weather, rng)
    ev = events(rad_a, rad_b, light, "normal", rng)
    li = lidar(lay, r_b, LIDAR_WEATHER[weather], "normal", rng)

    hit = li > 0
    rng_m = np.where(hit, np.where(np.isfinite(r_b["depth"]), r_b["depth"], 0.0), 0.0)
    intensity = np.where(hit, 100.0 * r_b["albedo"].mean(-1), 0.0)
    height = np.where(hit, r_b["height"] - lay.hc, 0.0)
    values = np.stack([rng_m, intensity, height], -1)          # SDK channel order
    codes = np.round((values + MUSES_CODEC_SHIFT) * MUSES_CODEC_SCALE)
    lidar_proj = np.clip(codes, 0, 65535).astype(np.uint16)[:, :, ::-1]  # cv2 writes BGR
    on = ev[..., 0].astype(np.int64)
    off = ev[..., 1].astype(np.int64)
    pos = np.where(on > 0, 1 + (on - 64) // 48, 0)
    neg = np.where(off > 0, 1 + (off - 64) // 48, 0)
    event_proj = np.stack([pos, neg, np.zeros_like(pos)], -1).astype(np.uint8)[:, :, ::-1]
    return {
        "frame_camera": rgb, "event_camera": ev, "lidar": li,
        "label": _LUT[r_b["label"]],
        "lidar_projected": np.ascontiguousarray(lidar_proj),
        "event_projected": np.ascontiguousarray(event_proj),
    }


def is_generated(root: Union[str, Path]) -> bool:
    """True if ``root`` holds a complete set written by :func:`generate_muses`."""
    return written_by(root, GENERATOR)


def generate_muses(
    root: Union[str, Path],
    *,
    num_train: int = 160,
    num_val: int = 40,
    num_test: int = 40,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
    test_labels: bool = True,
    overwrite: bool = False,
) -> dict:
    """Generate the synthetic MUSES-layout set under ``root``; return a summary dict.

    Samples cycle through the 8 (weather, time of day) pairs. ``root`` must be empty or new
    unless ``overwrite`` (see :class:`Synthesis`).
    """
    counts = check_generate_args(num_train, num_val, num_test, size)
    root = Path(root)
    start = time.perf_counter()
    H, W = size, int(round(size * 16 / 9))
    plans = [(split, j) for split in SPLITS for j in range(counts[split])]

    def paths(split: str, j: int) -> dict[str, Path]:
        rel = Path(split, *CONDITIONS[j % len(CONDITIONS)])
        stem = stem_for(split, j)
        out = {folder: root / folder / rel / f"{stem}_{folder}.png"
               for folder in (CAMERA, "event_camera", "lidar")}
        if split != "test" or test_labels:
            out["label"] = root / LABEL_FOLDER / rel / f"{stem}_{LABEL_TAG}.png"
        out["lidar_projected"] = root / PROJECTED / "lidar" / rel / f"{stem}_lidar.png"
        out["event_projected"] = root / PROJECTED / "event_camera" / rel / f"{stem}_event_camera.png"
        return out

    run = Synthesis(root, GENERATOR, [p for split, j in plans for p in paths(split, j).values()],
                    overwrite)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc=f"synthetic MUSES -> {root}", unit="sample")
    cond_count: Counter = Counter()
    files = 0
    for split, j in plans:
        weather, tod = CONDITIONS[j % len(CONDITIONS)]
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), j, 11]))
        a = render_muses(rng, H, W, weather, tod)
        out = paths(split, j)
        for folder in (CAMERA, "event_camera", "lidar"):
            _save(out[folder], a[folder])
        if "label" in out:
            _save(out["label"], a["label"])
            files += 1
        write_png16(out["lidar_projected"], a["lidar_projected"])
        _save(out["event_projected"], a["event_projected"])
        files += 5
        cond_count[f"{weather}_{tod}"] += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    info = {
        "generator": GENERATOR, "version": 1, "seed": seed, "size": size, "width": W,
        "splits": counts, "test_labels": test_labels,
        "conditions": dict(sorted(cond_count.items())), "files": files + 1,
    }
    run.finish(info)
    return {**info, "root": str(root), "seconds": round(time.perf_counter() - start, 3)}
