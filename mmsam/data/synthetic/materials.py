"""Procedural material scenes for the MCubeS stand-in: RGB, AoLP, DoLP and NIR, with numpy.

A street seen from the pavement: sky, facades (brick / concrete / plaster / ceramic tiles with
glass windows) down to the horizon, a road (asphalt, road markings, water puddles) between
pavements (cobblestone / concrete / brick / gravel) and verges (grass / sand / gravel), and in
front cars (metal, glass, rubber), people (fabric, skin), trees (wood, leaves), plastic bins
and wooden benches. Each pixel gets one of MCubeS' 20 material ids and an orientation.

Built so that colour alone confuses materials that the other sensors separate:
- dark greys (asphalt, rubber, water, dark plastic): water has high DoLP and no NIR return,
  rubber little NIR, asphalt a rough texture and low DoLP;
- light greys (concrete, plaster, ceramic, grey-painted metal): plaster is bright in NIR,
  ceramic and metal are glossy (high DoLP), metal rotates the AoLP;
- greens (grass, leaf, green plastic): vegetation is bright in NIR, plastic is dark and glossy;
- glass reflects the sky colour but is strongly polarised and dark in NIR.
AoLP is set by the surface orientation (horizontal ~ 0, vertical ~ pi/2, metal pi/4) and gets
noisier where DoLP is low, as a real polarisation camera's does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmsam.data.synthetic.driving import value_noise

(ASPHALT, CONCRETE, METAL, ROAD_MARKING, FABRIC, GLASS, PLASTER, PLASTIC, RUBBER, SAND,
 GRAVEL, CERAMIC, COBBLESTONE, BRICK, GRASS, WOOD, LEAF, WATER, HUMAN, SKY) = range(20)
IGNORE = 255
# Cityscapes trainIds for the SS/ folder (semantic guidance); 255 = none.
SS_ROAD, SS_SIDEWALK, SS_BUILDING, SS_VEGETATION, SS_TERRAIN, SS_SKY = 0, 1, 2, 8, 9, 10
SS_PERSON, SS_CAR = 11, 13
HORIZONTAL, VERTICAL, SKYWARD = 0, 1, 2


@dataclass(frozen=True)
class Material:
    """Appearance of one material: albedo (RGB), NIR reflectance, DoLP, texture."""

    rgb: tuple[float, float, float]
    nir: float
    dolp: float
    texture: float = 0.1   # amplitude of the albedo noise
    cell: float = 2.0      # noise cell size in pixels (scaled with the image height / 128)


MATERIALS: dict[int, Material] = {
    ASPHALT: Material((0.23, 0.23, 0.24), 0.22, 0.10, 0.25, 1.0),
    CONCRETE: Material((0.56, 0.55, 0.52), 0.50, 0.08, 0.10, 3.0),
    METAL: Material((0.55, 0.55, 0.56), 0.35, 0.38, 0.03, 4.0),
    ROAD_MARKING: Material((0.86, 0.86, 0.82), 0.80, 0.10, 0.05, 2.0),
    FABRIC: Material((0.52, 0.31, 0.22), 0.45, 0.03, 0.12, 1.0),
    GLASS: Material((0.55, 0.66, 0.82), 0.08, 0.70, 0.03, 6.0),
    PLASTER: Material((0.57, 0.56, 0.52), 0.78, 0.05, 0.08, 3.0),
    PLASTIC: Material((0.24, 0.44, 0.15), 0.12, 0.45, 0.03, 4.0),
    RUBBER: Material((0.19, 0.19, 0.20), 0.07, 0.25, 0.05, 2.0),
    SAND: Material((0.70, 0.62, 0.46), 0.62, 0.05, 0.12, 1.0),
    GRAVEL: Material((0.48, 0.46, 0.43), 0.42, 0.06, 0.35, 1.5),
    CERAMIC: Material((0.56, 0.55, 0.52), 0.55, 0.45, 0.04, 3.0),
    COBBLESTONE: Material((0.45, 0.42, 0.40), 0.40, 0.10, 0.20, 3.0),
    BRICK: Material((0.55, 0.30, 0.22), 0.60, 0.06, 0.10, 2.0),
    GRASS: Material((0.25, 0.45, 0.15), 0.82, 0.15, 0.25, 1.0),
    WOOD: Material((0.50, 0.33, 0.21), 0.70, 0.10, 0.15, 2.0),
    LEAF: Material((0.22, 0.42, 0.14), 0.88, 0.20, 0.30, 1.5),
    WATER: Material((0.22, 0.23, 0.25), 0.02, 0.65, 0.03, 8.0),
    HUMAN: Material((0.75, 0.56, 0.46), 0.65, 0.10, 0.05, 3.0),
    SKY: Material((0.55, 0.68, 0.88), 0.30, 0.40, 0.00, 8.0),
}
_PAINTS = np.array([[0.55, 0.55, 0.56], [0.60, 0.08, 0.08], [0.10, 0.15, 0.50],
                    [0.85, 0.85, 0.85], [0.06, 0.06, 0.07]])
_CLOTHES = np.array([[0.52, 0.31, 0.22], [0.15, 0.18, 0.35], [0.25, 0.45, 0.15],
                     [0.56, 0.55, 0.52], [0.10, 0.10, 0.10]])
_BIN_COLOURS = np.array([[0.24, 0.44, 0.15], [0.55, 0.55, 0.56], [0.20, 0.20, 0.21]])


class Canvas:
    """Per-pixel material id, semantic id, orientation, instance id and albedo override."""

    def __init__(self, H: int, W: int) -> None:
        self.H, self.W = H, W
        self.mat = np.full((H, W), SKY, np.uint8)
        self.sem = np.full((H, W), SS_SKY, np.uint8)
        self.orient = np.full((H, W), SKYWARD, np.uint8)
        self.inst = np.zeros((H, W), np.int32)
        self.tint = np.zeros((H, W, 3))      # albedo override where any channel > 0
        self.v, self.u = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
        self._next = 1

    def paint(self, mask: np.ndarray, mat: int, sem: int, orient: int,
              color: np.ndarray | None = None, instance: bool = False) -> None:
        self.mat[mask] = mat
        self.sem[mask] = sem
        self.orient[mask] = orient
        self.tint[mask] = 0.0 if color is None else color
        if instance:
            self.inst[mask] = self._next
            self._next += 1
        else:
            self.inst[mask] = 0

    def rect(self, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
        return (self.u >= x0) & (self.u < x1) & (self.v >= y0) & (self.v < y1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((self.u - cx) / rx) ** 2 + ((self.v - cy) / ry) ** 2 <= 1.0


def _facades(c: Canvas, rng: np.random.Generator, hy: float, s: float) -> None:
    x = -rng.uniform(0, 40) * s
    while x < c.W:
        w = rng.uniform(40, 140) * s
        if rng.random() < 0.8:
            top = hy - rng.uniform(0.25, 1.2) * c.H
            mat = int(rng.choice([BRICK, CONCRETE, PLASTER, CERAMIC]))
            c.paint(c.rect(x, x + w, top, hy), mat, SS_BUILDING, VERTICAL)
            wx, wy = rng.uniform(10, 16) * s, rng.uniform(10, 16) * s
            frac = rng.uniform(0.35, 0.6)
            win = (((c.u - x) % wx) < frac * wx) & (((c.v - top) % wy) < frac * wy)
            win &= c.rect(x + 3 * s, x + w - 3 * s, top + 3 * s, hy - 6 * s)
            c.paint(win, GLASS, SS_BUILDING, VERTICAL)
        x += w


def _ground(c: Canvas, rng: np.random.Generator, hy: float, s: float) -> None:
    below = c.v >= hy
    d = np.maximum(c.v - hy, 1e-3) / (c.H - hy)          # 0 at the horizon, 1 at the bottom
    cx = c.W * rng.uniform(0.55, 0.8)
    half = (0.05 + rng.uniform(0.3, 0.45) * d) * c.W        # road half width grows with d
    side = half * rng.uniform(1.25, 1.5)
    ax = np.abs(c.u - cx)
    pav = int(rng.choice([COBBLESTONE, CONCRETE, BRICK, GRAVEL]))
    verge = int(rng.choice([GRASS, SAND, GRAVEL, GRASS]))
    c.paint(below, verge, SS_TERRAIN, HORIZONTAL)
    c.paint(below & (ax < side), pav, SS_SIDEWALK, HORIZONTAL)
    c.paint(below & (ax < half), ASPHALT, SS_ROAD, HORIZONTAL)
    dash = (np.log(d + 0.05) * 6.0 % 2.0) < 1.0
    c.paint(below & (ax < 0.012 * c.W * (0.3 + d)) & dash, ROAD_MARKING, SS_ROAD, HORIZONTAL)
    for _ in range(int(rng.integers(0, 3))):  # puddles on the road
        py = rng.uniform(hy + 0.2 * (c.H - hy), c.H)
        dd = (py - hy) / (c.H - hy)
        px = cx + rng.uniform(-0.8, 0.8) * (0.05 + 0.35 * dd) * c.W
        m = c.ellipse(px, py, rng.uniform(8, 25) * s, rng.uniform(2, 5) * s) & below
        c.paint(m & (c.mat == ASPHALT), WATER, SS_ROAD, HORIZONTAL)


def _car(c: Canvas, rng: np.random.Generator, x: float, yb: float, k: float) -> None:
    w, h = 70 * k, 28 * k
    paint = _PAINTS[rng.integers(len(_PAINTS))] * rng.uniform(0.9, 1.1)
    body = c.rect(x - w / 2, x + w / 2, yb - h, yb - 0.15 * h)
    cabin = c.rect(x - 0.32 * w, x + 0.28 * w, yb - 1.7 * h, yb - h + 1)
    c.paint(body | cabin, METAL, SS_CAR, VERTICAL, np.clip(paint, 0, 1), instance=True)
    for wx0, wx1 in ((-0.28, -0.03), (0.0, 0.24)):
        c.paint(c.rect(x + wx0 * w, x + wx1 * w, yb - 1.6 * h, yb - 1.08 * h), GLASS, SS_CAR,
                VERTICAL, instance=True)
    for dx in (-0.3 * w, 0.3 * w):
        c.paint(c.ellipse(x + dx, yb - 0.2 * h, 0.11 * w, 0.25 * h), RUBBER, SS_CAR, VERTICAL,
                instance=True)


def _person(c: Canvas, rng: np.random.Generator, x: float, yb: float, k: float) -> None:
    h = 60 * k
    shirt, trousers = (_CLOTHES[rng.integers(len(_CLOTHES))] for _ in range(2))
    c.paint(c.rect(x - 0.1 * h, x + 0.1 * h, yb - 0.48 * h, yb), FABRIC, SS_PERSON, VERTICAL,
            trousers, instance=True)
    c.paint(c.rect(x - 0.14 * h, x + 0.14 * h, yb - 0.85 * h, yb - 0.48 * h), FABRIC, SS_PERSON,
            VERTICAL, shirt, instance=True)
    skin = np.clip(np.array(MATERIALS[HUMAN].rgb) * rng.uniform(0.5, 1.1), 0, 1)
    c.paint(c.ellipse(x, yb - 0.93 * h, 0.08 * h, 0.08 * h), HUMAN, SS_PERSON, VERTICAL, skin,
            instance=True)


def _tree(c: Canvas, rng: np.random.Generator, x: float, yb: float, k: float) -> None:
    h = 110 * k
    c.paint(c.rect(x - 0.04 * h, x + 0.04 * h, yb - 0.6 * h, yb), WOOD, SS_VEGETATION, VERTICAL,
            instance=True)
    crown = c.ellipse(x, yb - 0.75 * h, 0.3 * h, 0.28 * h)
    crown &= value_noise(c.u, c.v, 3.0 * k, int(x)) < 0.9
    c.paint(crown, LEAF, SS_VEGETATION, VERTICAL, instance=True)


def _bin(c: Canvas, rng: np.random.Generator, x: float, yb: float, k: float) -> None:
    h = 22 * k
    colour = _BIN_COLOURS[rng.integers(len(_BIN_COLOURS))]
    c.paint(c.rect(x - 0.35 * h, x + 0.35 * h, yb - h, yb), PLASTIC, IGNORE, VERTICAL, colour,
            instance=True)


def _bench(c: Canvas, rng: np.random.Generator, x: float, yb: float, k: float) -> None:
    w = 45 * k
    c.paint(c.rect(x - w / 2, x + w / 2, yb - 0.4 * w, yb - 0.25 * w) |
            c.rect(x - w / 2, x + w / 2, yb - 0.7 * w, yb - 0.55 * w), WOOD, IGNORE, VERTICAL,
            instance=True)
    for dx in (-0.42 * w, 0.42 * w):
        c.paint(c.rect(x + dx - 0.03 * w, x + dx + 0.03 * w, yb - 0.25 * w, yb), METAL, IGNORE,
                VERTICAL, instance=True)


def sample_scene(rng: np.random.Generator, H: int, W: int, left: int) -> Canvas:
    """Draw one street scene on an HxW canvas whose first ``left`` columns get cropped."""
    c = Canvas(H, W)
    s = H / 128.0
    hy = H * rng.uniform(0.3, 0.45)
    _facades(c, rng, hy, s)
    _ground(c, rng, hy, s)
    objects = []
    for _ in range(int(rng.integers(4, 10))):
        kind = rng.choice(["car", "person", "tree", "bin", "bench"], p=[.3, .25, .2, .15, .1])
        yb = rng.uniform(hy + 0.15 * (H - hy), H + 0.1 * H)
        x = rng.uniform(left - 0.1 * (W - left), W)
        objects.append((yb, kind, x))
    draw = {"car": _car, "person": _person, "tree": _tree, "bin": _bin, "bench": _bench}
    for yb, kind, x in sorted(objects):                     # far (small yb) first
        k = s * (0.4 + 1.2 * (yb - hy) / (H - hy))           # nearer = larger
        draw[kind](c, rng, x, yb, k)
    return c


def render_materials(rng: np.random.Generator, H: int, W: int, left: int) -> dict:
    """One MCubeS image set as arrays in the benchmark's encodings.

    ``color`` HxWx3 uint8 (RGB), ``aolp_sin`` / ``aolp_cos`` / ``dolp`` HxW float32,
    ``nir`` HxW uint16, ``nir_mask`` HxW uint8 (255 = invalid NIR), ``gt`` HxW uint8
    (material ids, 255 ignore), ``ss`` HxW uint8 (Cityscapes trainIds, 255 none).
    """
    c = sample_scene(rng, H, W, left)
    s = H / 128.0
    salt = int(rng.integers(0, 2**31))
    albedo = np.zeros((H, W, 3))
    nir_ref = np.zeros((H, W))
    dolp = np.zeros((H, W))
    for mid, m in MATERIALS.items():
        sel = c.mat == mid
        if not sel.any():
            continue
        n = value_noise(c.u[sel], c.v[sel], m.cell * s, salt + mid) - 0.5
        base = np.where(c.tint[sel].max(-1, keepdims=True) > 0, c.tint[sel], np.array(m.rgb))
        albedo[sel] = base * (1.0 + 2 * m.texture * n)[:, None]
        nir_ref[sel] = m.nir * (1.0 + m.texture * n)
        dolp[sel] = m.dolp * (1.0 + 0.5 * n)
    # sky: vertical gradient in colour, Rayleigh-like DoLP rising away from a sun position
    sky = c.mat == SKY
    frac = np.clip(c.v / H, 0, 1)[..., None]
    albedo = np.where(sky[..., None], np.array([0.50, 0.64, 0.88]) * (1 - frac)
                      + np.array([0.78, 0.84, 0.93]) * frac, albedo)
    sun_u, sun_v = rng.uniform(0, W), -rng.uniform(0.2, 1.0) * H
    dist = np.hypot(c.u - sun_u, c.v - sun_v) / max(H, W)
    dolp = np.where(sky, np.clip(0.15 + 0.5 * dist, 0, 0.7), dolp)

    light = rng.uniform(0.75, 1.1) * (1.0 + rng.uniform(-0.05, 0.05, 3))
    shade = np.where(c.orient == VERTICAL, 0.8, 1.0)[..., None]
    mirror = (c.orient == SKYWARD) | (c.mat == GLASS)            # glass shows the sky
    shade = np.where(mirror[..., None], 1.0, shade * light)
    rgb = albedo * shade + rng.normal(0.0, 0.01, (H, W, 3))
    color = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)

    dolp = np.clip(dolp + rng.normal(0.0, 0.02, (H, W)), 0.0, 1.0)
    angle = np.select([c.orient == HORIZONTAL, c.orient == VERTICAL],
                      [np.zeros((H, W)), np.full((H, W), np.pi / 2)],
                      np.arctan2(c.v - sun_v, c.u - sun_u) + np.pi / 2)
    angle = np.where(c.mat == METAL, np.pi / 4, angle)
    angle = angle + rng.normal(0.0, 1.0, (H, W)) * 0.05 / np.maximum(dolp, 0.05)
    angle = np.mod(angle, np.pi)

    nir = np.clip(nir_ref * shade.mean(-1) + rng.normal(0.0, 0.01, (H, W)), 0, 1)
    invalid = c.u < left * rng.uniform(0.8, 1.05)
    invalid |= c.v >= H - int(rng.integers(0, max(1, round(3 * s)) + 1))
    nir = np.where(invalid, 0.0, nir)

    gt = c.mat.copy()
    edge = np.zeros((H, W), bool)
    edge[:, 1:] |= c.inst[:, 1:] != c.inst[:, :-1]
    edge[1:, :] |= c.inst[1:, :] != c.inst[:-1, :]
    gt[edge & (c.inst > 0)] = IGNORE                       # unlabelled object outlines
    return {
        "color": color,
        "aolp_sin": np.sin(angle).astype(np.float32),
        "aolp_cos": np.cos(angle).astype(np.float32),
        "dolp": dolp.astype(np.float32),
        "nir": np.round(nir * 65535.0).astype(np.uint16),
        "nir_mask": np.where(invalid, 255, 0).astype(np.uint8),
        "gt": gt,
        "ss": c.sem.copy(),
    }
