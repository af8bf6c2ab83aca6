"""Procedural driving scenes (pinhole camera over a ground plane), rendered with numpy.

World: X right, Y up, Z forward (metres); the camera sits at height ``hc`` above Y=0.
A scene is a straight road (dashed centre line) between sidewalks and terrain, bounded by
vertical facades (buildings or tree lines) on both sides, with cars, pedestrians, poles and
traffic signs as fronto-parallel boxes. ``render`` z-buffers all of it into per-pixel
depth, DELIVER class ids (1..25 on disk), albedo, surface orientation and height. The
sensors (:mod:`mmsam.data.synthetic.sensors`) turn that into RGB, HHA, events and LiDAR.

Designed so that fusion matters: road, sidewalk, road line and terrain share the ground
plane (identical depth/HHA) and differ only in colour/texture; cars and poles share the grey
range of buildings and differ in depth; vegetation vs terrain differ in orientation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# DELIVER class ids as stored on disk (train id + 1); 0 = unlabeled.
UNLABELED, BUILDING, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK = 0, 1, 4, 5, 6, 7, 8
VEGETATION, CARS, TRAFFICSIGN, SKY, TERRAIN = 9, 10, 12, 13, 22
USED_IDS = (BUILDING, PEDESTRIAN, POLE, ROADLINE, ROAD, SIDEWALK, VEGETATION, CARS,
            TRAFFICSIGN, SKY, TERRAIN)

WALL_NONE, WALL_BUILDING, WALL_VEGETATION = 0, 1, 2
_CAR_PAINTS = np.array([[0.60, 0.08, 0.08], [0.10, 0.15, 0.50], [0.85, 0.85, 0.85],
                        [0.06, 0.06, 0.07], [0.50, 0.45, 0.30]])


@dataclass
class Box:
    """A fronto-parallel rectangle standing at world (x, z), from y0 to y0 + h."""

    x: float
    z: float
    y0: float
    w: float
    h: float
    label: int
    color: np.ndarray
    vx: float = 0.0
    vz: float = 0.0


@dataclass
class Walls:
    """Facade segments along one side: [bounds[i], bounds[i+1]) has type/height/colour i."""

    x: float
    bounds: np.ndarray
    types: np.ndarray
    heights: np.ndarray
    colors: np.ndarray


@dataclass
class Layout:
    """Everything random about one scene."""

    H: int
    W: int
    f: float
    cx: float
    cy: float
    hc: float
    road_x: float
    road_hw: float
    side_w: float
    dash: float
    road_rgb: np.ndarray
    side_rgb: np.ndarray
    line_rgb: np.ndarray
    terrain_rgb: np.ndarray
    walls: list[Walls]
    boxes: list[Box] = field(default_factory=list)
    hood: int = 0
    salt: int = 0


def value_noise(a: np.ndarray, b: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Cell-constant hash noise in [0, 1) anchored to world coordinates (a, b)."""
    a = np.where(np.isfinite(a), a, 0.0)
    b = np.where(np.isfinite(b), b, 0.0)
    ia = np.floor(a / cell).astype(np.int64).astype(np.uint64)
    ib = np.floor(b / cell).astype(np.int64).astype(np.uint64)
    h = ia * np.uint64(0x9E3779B97F4A7C15) ^ ib * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= np.uint64(((salt & 0xFFFFFFFF) * 0x165667B19E3779F9) & 0xFFFFFFFFFFFFFFFF)
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return (h & np.uint64(0xFFFFFF)).astype(np.float64) / float(0x1000000)


def _walls(rng: np.random.Generator, x: float) -> Walls:
    lengths = rng.uniform(6.0, 25.0, size=40)
    bounds = np.concatenate([[-20.0], -20.0 + np.cumsum(lengths)])
    types = rng.choice([WALL_BUILDING, WALL_VEGETATION, WALL_NONE], size=40, p=[0.55, 0.3, 0.15])
    heights = np.where(types == WALL_BUILDING, rng.uniform(6, 25, 40), rng.uniform(2.5, 7, 40))
    lum = rng.uniform(0.30, 0.65, size=(40, 1))
    tint = 1.0 + rng.uniform(-0.08, 0.08, size=(40, 3))
    veg = np.array([0.20, 0.38, 0.12]) * rng.uniform(0.7, 1.3, size=(40, 1))
    colors = np.where((types == WALL_VEGETATION)[:, None], veg, lum * tint)
    return Walls(x, bounds, types, heights, np.clip(colors, 0, 1))


def _grey(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.uniform(0.30, 0.65) * (1.0 + rng.uniform(-0.08, 0.08, 3)), 0, 1)


def _add_car(rng: np.random.Generator, boxes: list[Box], x: float, z: float, vz: float) -> None:
    if rng.random() < 0.5:
        body = _grey(rng)  # same grey range as buildings: only depth tells them apart
    else:
        body = np.clip(_CAR_PAINTS[rng.integers(len(_CAR_PAINTS))] * rng.uniform(0.8, 1.2), 0, 1)
    w = rng.uniform(1.7, 2.0)
    glass = np.array([0.10, 0.12, 0.15])
    tyre = np.array([0.04, 0.04, 0.04])
    boxes.append(Box(x, z, 0.3, w, 0.75, CARS, body, vz=vz))
    boxes.append(Box(x, z + 0.01, 1.05, w * 0.8, 0.45, CARS, glass, vz=vz))
    for dx in (-0.32 * w, 0.32 * w):
        boxes.append(Box(x + dx, z - 0.01, 0.0, 0.22 * w, 0.4, CARS, tyre, vz=vz))


def _add_pedestrian(rng: np.random.Generator, boxes: list[Box], x: float, z: float) -> None:
    vx = rng.uniform(-0.3, 0.3)
    shirt = rng.uniform(0.1, 0.9, 3)
    trousers = rng.uniform(0.05, 0.4) * np.ones(3)
    skin = np.array([0.8, 0.6, 0.5]) * rng.uniform(0.5, 1.1)
    boxes.append(Box(x, z, 0.0, 0.4, 0.85, PEDESTRIAN, trousers, vx=vx))
    boxes.append(Box(x, z, 0.85, 0.5, 0.65, PEDESTRIAN, shirt, vx=vx))
    boxes.append(Box(x, z, 1.5, 0.22, 0.22, PEDESTRIAN, np.clip(skin, 0, 1), vx=vx))


def sample_layout(rng: np.random.Generator, H: int, W: int) -> Layout:
    """Draw one random scene for an HxW camera."""
    side = 1.0 if rng.random() < 0.5 else -1.0
    road_hw = rng.uniform(3.0, 5.5)
    road_x = -side * road_hw / 2 + rng.uniform(-0.5, 0.5)
    side_w = rng.uniform(1.5, 3.5)
    walls = [_walls(rng, road_x + s * (road_hw + side_w + rng.uniform(0.0, 4.0))) for s in (-1, 1)]
    lay = Layout(
        H=H, W=W, f=W * rng.uniform(0.75, 0.95), cx=W / 2 + W * rng.uniform(-0.05, 0.05),
        cy=H * rng.uniform(0.38, 0.48), hc=rng.uniform(1.5, 1.9),
        road_x=road_x, road_hw=road_hw, side_w=side_w, dash=rng.uniform(6.0, 9.0),
        road_rgb=rng.uniform(0.22, 0.32) * np.array([0.97, 0.98, 1.03]),
        side_rgb=rng.uniform(0.45, 0.6) * np.array([1.06, 0.95, 0.86]),
        line_rgb=np.array([0.9, 0.9, 0.85]) if rng.random() < 0.7 else np.array([0.9, 0.8, 0.2]),
        terrain_rgb=np.array([0.42, 0.45, 0.28]) * rng.uniform(0.8, 1.2),
        walls=walls, hood=int(round(H * rng.uniform(0.05, 0.1))) if rng.random() < 0.3 else 0,
        salt=int(rng.integers(0, 2**31)),
    )
    boxes: list[Box] = []
    for _ in range(int(rng.integers(1, 6))):
        lane = rng.choice([-1.0, 1.0])
        x = road_x + lane * road_hw / 2 + rng.uniform(-0.4, 0.4)
        z = rng.uniform(8.0 if abs(x) < 1.5 else 4.0, 45.0)
        _add_car(rng, boxes, x, z, rng.uniform(-0.8, 0.8))
    for _ in range(int(rng.integers(0, 5))):
        s = rng.choice([-1.0, 1.0])
        _add_pedestrian(rng, boxes, road_x + s * (road_hw + rng.uniform(0.3, side_w - 0.3)),
                        rng.uniform(4.0, 30.0))
    for s in (-1.0, 1.0):
        z = rng.uniform(2.0, 12.0)
        while z < 70.0:
            x = road_x + s * (road_hw + 0.4)
            h = rng.uniform(4.0, 6.5)
            boxes.append(Box(x, z, 0.0, 0.15, h, POLE, _grey(rng)))
            if rng.random() < 0.4:
                yellow = rng.random() < 0.5
                sign = np.array([0.86, 0.86, 0.0]) if yellow else np.array([0.1, 0.3, 0.8])
                boxes.append(Box(x - s * 0.3, z - 0.02, h - 1.6, 0.6, 0.6, TRAFFICSIGN, sign))
            z += rng.uniform(12.0, 22.0)
    boxes.sort(key=lambda b: -b.z)
    lay.boxes = boxes
    return lay


def render(lay: Layout, ego_z: float = 0.0, t: float = 1.0, cy_shift: float = 0.0) -> dict:
    """Z-buffer the scene seen from ego position ``ego_z`` at time ``t``.

    Returns depth (inf for sky), label (disk ids), albedo (HxWx3), vertical (bool: surface
    normal horizontal), height (Y of the surface point), X and Zw (world coordinates).
    """
    H, W, f, hc = lay.H, lay.W, lay.f, lay.hc
    cy = lay.cy + cy_shift
    v, u = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    dv, du = v - cy, u - lay.cx
    depth = np.full((H, W), np.inf)
    label = np.full((H, W), SKY, np.uint8)
    albedo = np.zeros((H, W, 3))
    vertical = np.zeros((H, W), bool)
    height = np.zeros((H, W))

    # Ground plane: road / road line / sidewalk / terrain differ only in colour and texture.
    g = dv > 1e-3
    Zg = hc * f / np.where(g, dv, 1.0)
    Xg = du * Zg / f
    Zwg = Zg + ego_z
    a = np.abs(Xg - lay.road_x)
    cls = np.where(a < lay.road_hw, ROAD, np.where(a < lay.road_hw + lay.side_w, SIDEWALK, TERRAIN))
    line = (a < 0.1) & ((Zwg % lay.dash) < lay.dash * 0.5)
    cls = np.where(line, ROADLINE, cls)
    n1 = value_noise(Xg, Zwg, 0.25, lay.salt)
    grout = ((Zwg % 1.2) < 0.1) | (((a - lay.road_hw) % 1.2) < 0.1)
    gal = np.select(
        [(cls == ROAD)[..., None], (cls == SIDEWALK)[..., None], (cls == TERRAIN)[..., None]],
        [lay.road_rgb * (0.9 + 0.2 * n1)[..., None],
         lay.side_rgb * np.where(grout, 0.85, 0.95 + 0.1 * n1)[..., None],
         lay.terrain_rgb * (0.7 + 0.6 * value_noise(Xg, Zwg, 0.5, lay.salt + 1))[..., None]],
        lay.line_rgb[None, None, :] * np.ones_like(n1)[..., None],
    )
    depth[g] = Zg[g]
    label[g] = cls[g]
    albedo[g] = gal[g]

    # Facades on both sides: buildings (windows) or tree lines (leafy texture, uneven top).
    for wall in lay.walls:
        hit = du * wall.x > 0
        Zh = wall.x * f / np.where(hit, du, 1.0)
        Yh = hc - dv * Zh / f
        Zhw = Zh + ego_z
        seg = np.clip(np.searchsorted(wall.bounds, Zhw, side="right") - 1, 0, len(wall.types) - 1)
        typ = wall.types[seg]
        bumps = np.where(typ == WALL_VEGETATION, 0.7 * np.sin(Zhw * 2.3 + seg), 0.0)
        top = wall.heights[seg] + bumps
        m = hit & (Zh > 0.2) & (Yh >= 0) & (Yh <= top) & (typ != WALL_NONE) & (Zh < depth)
        zw, yh, sg, veg = Zhw[m], Yh[m], seg[m], typ[m] == WALL_VEGETATION
        col = wall.colors[sg]
        window = ((zw % 3.0) > 0.8) & ((zw % 3.0) < 2.2) & ((yh % 3.2) > 1.1) & ((yh % 3.2) < 2.4)
        bcol = np.where((window & (yh > 2.0))[:, None], np.array([0.13, 0.16, 0.2]), col)
        vcol = col * (0.6 + 0.8 * value_noise(zw, yh, 0.35, lay.salt + 2))[:, None]
        depth[m] = Zh[m]
        label[m] = np.where(veg, VEGETATION, BUILDING)
        albedo[m] = np.where(veg[:, None], vcol, bcol)
        vertical[m] = True
        height[m] = yh

    # Objects, far to near, z-buffered.
    for b in lay.boxes:
        zc = b.z + b.vz * t - ego_z
        if zc < 0.5:
            continue
        xc = b.x + b.vx * t
        c0 = max(0, int(np.ceil(lay.cx + f * (xc - b.w / 2) / zc - 0.5)))
        c1 = min(W, int(np.ceil(lay.cx + f * (xc + b.w / 2) / zc - 0.5)))
        r0 = max(0, int(np.ceil(cy + f * (hc - b.y0 - b.h) / zc - 0.5)))
        r1 = min(H, int(np.ceil(cy + f * (hc - b.y0) / zc - 0.5)))
        if c0 >= c1 or r0 >= r1:
            continue
        sl = (slice(r0, r1), slice(c0, c1))
        m = depth[sl] > zc
        depth[sl][m] = zc
        label[sl][m] = b.label
        albedo[sl][m] = b.color
        vertical[sl][m] = True
        height[sl][m] = (hc - dv[sl] * zc / f)[m]

    if lay.hood:  # ego vehicle's hood: unlabeled, attached to the camera
        depth[H - lay.hood:] = 1.0
        label[H - lay.hood:] = UNLABELED
        albedo[H - lay.hood:] = 0.05
        height[H - lay.hood:] = 0.8
    finite = np.isfinite(depth)
    X = np.where(finite, du * np.where(finite, depth, 0.0) / f, 0.0)
    Zw = np.where(finite, depth + ego_z, np.inf)
    return {"depth": depth, "label": label, "albedo": albedo, "vertical": vertical,
            "height": height, "X": X, "Zw": Zw, "v": v}
