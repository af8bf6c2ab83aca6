"""Write synthetic top-down aerial scenes (IRRG + DSM) in ISPRS Vaihingen's layout.

The 16 labelled Vaihingen tiles are written (MFNet's 12 train + 4 test areas), with the
official names and encodings the loader reads (:mod:`mmsam.data.datasets.isprs`)::

    top/top_mosaic_09cm_area{N}.tif                  8-bit IRRG (NIR, R, G) TIFF
    dsm/dsm_09cm_matching_area{N}.tif                float32 TIFF, absolute heights in metres
    gts_for_participants/top_mosaic_09cm_area{N}.tif                   ISPRS colour GT
    gts_eroded_for_participants/top_mosaic_09cm_area{N}_noBoundary.tif  eroded GT (black band)

Scenes: roads and paved plazas (impervious, ground level), buildings (6-15 m, flat or ridged
roofs), trees (4-12 m domes), low vegetation (ground), cars (1.5 m, on paved ground) and
clutter patches. The optical image is ambiguous where height is not: roofs and plazas draw
their colours from one distribution, and trees and low vegetation from two that overlap
heavily, so the DSM is what separates building from impervious and tree from low vegetation.
Tile sides vary per tile in ``[size, 1.25 * size]`` (default 300-375 px, not multiples of the
256 px training window). Deterministic from the seed (byte-identical files); a marker
``mmsam_synthetic.json`` records the parameters.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from mmsam.data.datasets.isprs import VAIHINGEN_TILES, ids_to_colours
from mmsam.errors import ConfigError
from mmsam.data.synthetic.common import MARKER, Synthesis, written_by  # noqa: F401  (MARKER: re-exported)

GENERATOR = "mmsam.synthetic.aerial"
IMPERVIOUS, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)
#: Vaihingen areas written: MFNet's split (train, test); val is served from the test tiles.
TRAIN_TILES = VAIHINGEN_TILES["mfnet"]["train"]
TEST_TILES = VAIHINGEN_TILES["mfnet"]["test"]

# Per-patch colour ranges (NIR, R, G) as (low, high). Roofs and plazas share one mixture.
_PAVED_GREY = ((95, 165), (95, 160), (95, 160))
_PAVED_TILED = ((120, 160), (150, 190), (95, 125))
_LOW_VEG = ((165, 215), (90, 128), (85, 122))
_TREE = ((160, 210), (87, 125), (82, 119))
_CLUTTER = ((60, 110), (75, 120), (85, 130))


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int = 6) -> np.ndarray:
    """Bilinearly upsampled Gaussian noise on a ``cells`` grid: HxW float64, about unit std."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    ys, xs = np.linspace(0, cells, h), np.linspace(0, cells, w)
    y0, x0 = np.minimum(ys.astype(int), cells - 1), np.minimum(xs.astype(int), cells - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _colour(rng: np.random.Generator, ranges: tuple) -> np.ndarray:
    return np.array([rng.uniform(lo, hi) for lo, hi in ranges])


def _paved_colour(rng: np.random.Generator) -> np.ndarray:
    return _colour(rng, _PAVED_TILED if rng.random() < 0.3 else _PAVED_GREY)


class _Scene:
    """Label, object height and colour planes being painted."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.label = np.full((h, w), LOW_VEG, np.uint8)
        self.height = np.zeros((h, w), np.float64)
        self.colour = np.zeros((h, w, 3), np.float64)
        self.texture = np.zeros((h, w), np.float64)  # std of per-pixel texture noise

    def paint(self, mask: np.ndarray, cls: int, colour: np.ndarray,
              height: Union[float, np.ndarray],
              texture: float, box: tuple[slice, slice]) -> None:
        """Paint ``mask`` (within ``box``) with a class, a flat colour, a height, a texture."""
        for plane, value in ((self.label, cls), (self.height, height), (self.texture, texture)):
            region = plane[box]
            region[mask] = value[mask] if isinstance(value, np.ndarray) else value
        self.colour[box][mask] = colour


def _rect(scene: _Scene, top: int, left: int, hh: int, ww: int) -> tuple[np.ndarray, tuple]:
    box = (slice(max(top, 0), min(top + hh, scene.h)), slice(max(left, 0), min(left + ww, scene.w)))
    mask = np.ones((box[0].stop - box[0].start, box[1].stop - box[1].start), bool)
    return mask, box


def _disc(scene: _Scene, cy: float, cx: float, r: float) -> tuple[np.ndarray, tuple, np.ndarray]:
    cy, cx = min(max(cy, 0.0), scene.h - 1.0), min(max(cx, 0.0), scene.w - 1.0)
    box = (slice(max(int(cy - r), 0), min(int(cy + r) + 2, scene.h)),
           slice(max(int(cx - r), 0), min(int(cx + r) + 2, scene.w)))
    yy, xx = np.mgrid[box[0], box[1]]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
    return d <= 1.0, box, d


def render_aerial(rng: np.random.Generator, h: int, w: int) -> dict[str, np.ndarray]:
    """One scene: ``label`` (HxW ids), ``irrg`` (HxWx3 uint8), ``dsm`` (HxW float32 metres)."""
    s = _Scene(h, w)
    side = min(h, w)
    ground = _colour(rng, _LOW_VEG)
    s.colour[:] = ground
    s.texture[:] = 6.0
    # Roads: long bands of impervious ground.
    for axis in (0, 1):
        for _ in range(int(rng.integers(1, 3))):
            width = int(rng.integers(max(3, side // 22), max(4, side // 11)))
            pos = int(rng.integers(0, (h if axis == 0 else w) - width))
            top, left, hh, ww = (pos, 0, width, w) if axis == 0 else (0, pos, h, width)
            mask, box = _rect(s, top, left, hh, ww)
            s.paint(mask, IMPERVIOUS, _colour(rng, _PAVED_GREY), 0.0, 4.0, box)
    # Buildings and plazas: rectangles of the same sizes and colours; only height differs.
    wanted, placed = int(rng.integers(7, 12)), 0
    for _ in range(80):
        if placed == wanted:
            break
        hh = int(rng.integers(side // 10, side // 4))
        ww = int(rng.integers(side // 10, side // 4))
        top, left = int(rng.integers(0, h - hh)), int(rng.integers(0, w - ww))
        box = (slice(top, top + hh), slice(left, left + ww))
        if (s.label[box] != LOW_VEG).mean() > 0.05:
            continue  # keep blocks off the roads and off each other
        placed += 1
        mask = np.ones((hh, ww), bool)
        colour = _paved_colour(rng)
        if rng.random() < 0.65:
            base, ridge = rng.uniform(6.0, 12.0), rng.uniform(0.0, 3.0)
            t = np.abs(np.linspace(-1, 1, hh if hh < ww else ww))
            profile = ridge * (1 - t)
            roof = base + (profile[:, None] if hh < ww else profile[None, :])
            s.paint(mask, BUILDING, colour, np.broadcast_to(roof, (hh, ww)).copy(), 5.0, box)
        else:
            s.paint(mask, IMPERVIOUS, colour, 0.0, 5.0, box)
    # Cars on paved ground.
    car_len, car_w = max(4, round(0.035 * side)), max(2, round(0.016 * side))
    ys, xs = np.nonzero(s.label == IMPERVIOUS)
    for _ in range(int(rng.integers(6, 14)) if ys.size else 0):
        k = int(rng.integers(0, ys.size))
        hh, ww = (car_len, car_w) if rng.random() < 0.5 else (car_w, car_len)
        mask, box = _rect(s, ys[k] - hh // 2, xs[k] - ww // 2, hh, ww)
        mask &= s.label[box] == IMPERVIOUS
        colour = rng.uniform(30, 240, 3)
        s.paint(mask, CAR, colour, 1.5, 4.0, box)
    # Clutter patches on the ground.
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(0.03, 0.06) * side
        mask, box, _ = _disc(s, rng.uniform(0, h), rng.uniform(0, w), radius)
        mask &= s.label[box] == LOW_VEG
        s.paint(mask, CLUTTER, _colour(rng, _CLUTTER), rng.uniform(0.0, 1.0), 8.0, box)
    # Low-vegetation lawns of a second shade (same class, same height).
    for _ in range(int(rng.integers(2, 5))):
        radius = rng.uniform(0.06, 0.14) * side
        mask, box, _ = _disc(s, rng.uniform(0, h), rng.uniform(0, w), radius)
        mask &= s.label[box] == LOW_VEG
        s.paint(mask, LOW_VEG, _colour(rng, _LOW_VEG), 0.0, 6.0, box)
    # Trees in clusters, over ground, lawns and road edges (never over buildings or cars).
    for _ in range(int(rng.integers(3, 7))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        for _ in range(int(rng.integers(2, 6))):
            r = rng.uniform(0.025, 0.06) * side
            ty, tx = cy + rng.normal(0, 1.5 * r), cx + rng.normal(0, 1.5 * r)
            mask, box, d = _disc(s, ty, tx, r)
            mask &= ~np.isin(s.label[box], (BUILDING, CAR))
            crown = rng.uniform(5.0, 12.0) * np.sqrt(np.clip(1 - d ** 2, 0, 1)) + 1.0
            s.paint(mask, TREE, _colour(rng, _TREE), np.maximum(s.height[box], crown), 14.0, box)
    # Optical image: patch colours + soft illumination + per-pixel texture.
    light = 8.0 * smooth_noise(rng, h, w, 4)[:, :, None]
    noise = rng.standard_normal((h, w, 3)) * s.texture[:, :, None]
    irrg = np.clip(np.rint(s.colour + light + noise), 0, 255).astype(np.uint8)
    # DSM: absolute heights = terrain (offset, slope, bumps) + objects + sensor noise.
    yy, xx = np.mgrid[0:h, 0:w] / side
    terrain = (rng.uniform(250.0, 270.0) + rng.uniform(-1.5, 1.5) * yy + rng.uniform(-1.5, 1.5) * xx
               + 0.5 * smooth_noise(rng, h, w, 3))
    dsm = terrain + s.height + rng.normal(0.0, 0.15, (h, w))
    return {"label": s.label, "irrg": irrg, "dsm": dsm.astype(np.float32)}


def boundary_mask(label: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (a disc) of a pixel of another class: the eroded GT's band."""
    h, w = label.shape
    padded = np.pad(label, radius, mode="edge")
    mask = np.zeros((h, w), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy or dx) and dy * dy + dx * dx <= radius * radius:
                mask |= padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w] != label
    return mask


def tile_paths(root: Path, area: str) -> dict[str, Path]:
    """The four files of Vaihingen area ``area`` under ``root``."""
    name = f"top_mosaic_09cm_area{area}"
    return {"irrg": root / "top" / f"{name}.tif",
            "dsm": root / "dsm" / f"dsm_09cm_matching_area{area}.tif",
            "label": root / "gts_for_participants" / f"{name}.tif",
            "eroded": root / "gts_eroded_for_participants" / f"{name}_noBoundary.tif"}


def _write_tiff(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="TIFF")


def is_generated(root: Union[str, Path]) -> bool:
    """True if ``root`` holds a complete set written by :func:`generate_aerial`."""
    return written_by(root, GENERATOR)


def _check_counts(num_train: Optional[int], num_val: Optional[int],
                  num_test: Optional[int]) -> None:
    fixed = {"num_train": len(TRAIN_TILES), "num_val": len(TEST_TILES),
             "num_test": len(TEST_TILES)}
    given = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
    bad = {k: v for k, v in given.items() if v is not None and v != fixed[k]}
    if bad:
        raise ConfigError(f"the Vaihingen layout fixes the tiles (MFNet split: "
                          f"{len(TRAIN_TILES)} train, {len(TEST_TILES)} test = val); got {bad}. "
                          f"Leave the counts unset (null) and change size instead")


def generate_aerial(
    root: Union[str, Path],
    *,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    num_test: Optional[int] = None,
    size: int = 300,
    seed: int = 0,
    progress: bool = True,
    erosion_radius: int = 2,
    overwrite: bool = False,
) -> dict:
    """Generate the synthetic Vaihingen-layout set under ``root``; return a summary dict.

    Args:
        root: output folder (the Vaihingen root: ``top/``, ``dsm/``, ``gts_*``).
        num_train, num_val, num_test: must be None (or 12 / 4 / 4): the layout fixes the tiles.
        size: shortest possible tile side; each side is drawn from ``[size, 1.25 * size]``.
        seed: generator seed (same seed, same bytes).
        progress: show a progress bar.
        erosion_radius: radius in pixels of the eroded GT's boundary band.
        overwrite: write into a non-empty ``root`` (replacing an earlier synthetic set there;
            see :class:`Synthesis`).
    """
    _check_counts(num_train, num_val, num_test)
    if not isinstance(size, int) or size < 32:
        raise ConfigError(f"size must be an int >= 32, got {size!r}")
    if not isinstance(erosion_radius, int) or erosion_radius < 0:
        raise ConfigError(f"erosion_radius must be an int >= 0, got {erosion_radius!r}")
    root = Path(root)
    start = time.perf_counter()
    areas = sorted(TRAIN_TILES + TEST_TILES, key=int)
    run = Synthesis(root, GENERATOR, [p for a in areas for p in tile_paths(root, a).values()],
                    overwrite)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(areas), desc=f"synthetic Vaihingen -> {root}", unit="tile")
    pixels: Counter = Counter()
    sizes = {}
    for area in areas:
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(area), 6]))
        h, w = (size + int(rng.integers(0, size // 4 + 1)) for _ in range(2))
        scene = render_aerial(rng, h, w)
        colours = ids_to_colours(scene["label"])
        eroded = colours.copy()
        eroded[boundary_mask(scene["label"], erosion_radius)] = 0
        paths = tile_paths(root, area)
        _write_tiff(paths["irrg"], scene["irrg"])
        _write_tiff(paths["dsm"], scene["dsm"])
        _write_tiff(paths["label"], colours)
        _write_tiff(paths["eroded"], eroded)
        sizes[area] = [h, w]
        ids, n = np.unique(scene["label"], return_counts=True)
        pixels.update(dict(zip(ids.tolist(), n.tolist())))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    info = {
        "generator": GENERATOR, "version": 1, "seed": seed, "size": size,
        "erosion_radius": erosion_radius, "train": list(TRAIN_TILES), "test": list(TEST_TILES),
        "tile_sizes": sizes, "class_pixels": {str(k): v for k, v in sorted(pixels.items())},
        "files": 4 * len(areas) + 1,
    }
    run.finish(info)
    return {**info, "root": str(root), "seconds": round(time.perf_counter() - start, 3)}
