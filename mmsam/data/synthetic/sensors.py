"""Sensors for the synthetic driving scenes: lighting, RGB camera, HHA, events, LiDAR.

Each modality misses something on purpose:
- RGB: dark and noisy at night, washed out with distance in fog, wet low-contrast ground in
  rain, clipped or crushed under over/under exposure, smeared with motion blur.
- HHA (depth): exact geometry, but road, road line, sidewalk and terrain are one plane.
- Events: log-intensity change between two ego poses; only edges and moving things, works
  in the dark (log response), weakened by fog, noisy at night / in rain; in
  ``eventlowres`` scenes at 512/1042 of the image size (a non-integer ratio, as in DELIVER).
- LiDAR: depth on H/4 (8..64) sparse scan lines; drop-outs in rain/fog, jitter in ``lidarjitter``.
"""
from __future__ import annotations

import numpy as np

from mmsam.data.datasets.deliver import eventlowres_hw
from mmsam.data.synthetic.driving import UNLABELED, Layout, render, sample_layout, value_noise

# sky top / bottom colour, ground & vertical irradiance, light colour, camera gain, noise,
# rate of noise events.
CONDITIONS: dict[str, dict] = {
    "sun": dict(sky=((0.35, 0.55, 0.90), (0.70, 0.80, 0.95)), ground=1.05, vert=0.8,
                light=(1.0, 0.98, 0.92), gain=1.0, noise=0.01, ev_noise=0.002),
    "cloud": dict(sky=((0.72, 0.74, 0.78), (0.82, 0.84, 0.86)), ground=0.85, vert=0.72,
                  light=(0.95, 0.97, 1.0), gain=1.1, noise=0.01, ev_noise=0.002),
    "rain": dict(sky=((0.42, 0.44, 0.48), (0.52, 0.54, 0.57)), ground=0.6, vert=0.5,
                 light=(0.9, 0.93, 1.0), gain=1.3, noise=0.02, ev_noise=0.01),
    "fog": dict(sky=((0.80, 0.82, 0.85), (0.80, 0.82, 0.85)), ground=0.85, vert=0.75,
                light=(1.0, 1.0, 1.0), gain=1.0, noise=0.012, ev_noise=0.003),
    "night": dict(sky=((0.01, 0.012, 0.03), (0.03, 0.03, 0.05)), ground=0.015, vert=0.015,
                  light=(0.7, 0.75, 1.0), gain=2.0, noise=0.04, ev_noise=0.02),
}
EXPOSURE = {"overexposure": 3.5, "underexposure": 0.12}
FOG_COLOR = np.array([0.76, 0.78, 0.81])
EVENT_THRESHOLD = 0.25


def _night_light(lay: Layout, r: dict) -> np.ndarray:
    """Headlights (ego-anchored) and sodium street lamps (world-anchored)."""
    X, Zw, depth = r["X"], r["Zw"], r["depth"]
    with np.errstate(invalid="ignore", over="ignore"):
        cone = np.exp(-np.maximum(0.0, np.abs(X) - (1.0 + 0.3 * depth)) ** 2)
        head = np.where(np.isfinite(depth), 0.45 * np.exp(-depth / 10.0) * cone, 0.0)
    lrng = np.random.default_rng(lay.salt)
    lamps = np.zeros_like(depth)
    z = lrng.uniform(0.0, 25.0)
    while z < 150.0:
        xl = lay.road_x + lrng.choice([-1.0, 1.0]) * (lay.road_hw + 0.4)
        d2 = (X - xl) ** 2 + np.where(np.isfinite(Zw), Zw - z, 1e6) ** 2
        lamps += 0.35 * np.exp(-d2 / (2 * 4.0 ** 2))
        z += lrng.uniform(20.0, 35.0)
    return (head[..., None] * np.array([1.0, 1.0, 0.95])
            + lamps[..., None] * np.array([1.0, 0.75, 0.42]))


def radiance(lay: Layout, r: dict, condition: str) -> np.ndarray:
    """Scene radiance (HxWx3, linear) under ``condition``; sky is emissive."""
    c = CONDITIONS[condition]
    surf = np.isfinite(r["depth"])
    vert = r["vertical"]
    albedo = r["albedo"].copy()
    if condition == "rain":  # wet ground: darker and greyer, road and sidewalk look alike
        gnd = surf & ~vert
        grey = albedo[gnd].mean(-1, keepdims=True)
        albedo[gnd] = 0.35 * albedo[gnd] + 0.65 * (0.6 * grey + 0.12)
    k = np.where(vert, c["vert"], c["ground"])
    if condition == "sun":  # cast shadows of the facades on one side of the street
        side = 1.0 if lay.salt % 2 else -1.0
        jag = value_noise(r["Zw"], np.zeros_like(r["X"]), 9.0, lay.salt + 5)
        edge = lay.road_hw * (2.0 * jag - 1.0)
        shadow = surf & ~vert & (side * (r["X"] - lay.road_x) > edge)
        k = np.where(shadow, 0.45 * k, k)
    illum = k[..., None] * np.array(c["light"])
    if condition == "night":
        illum = illum + _night_light(lay, r)
    rad = albedo * illum
    top, bottom = (np.array(s) for s in c["sky"])
    frac = np.clip(r["v"] / max(lay.cy, 1.0), 0, 1)[..., None]
    sky = top * (1 - frac) + bottom * frac
    return np.where(surf[..., None], rad, sky)


def apply_fog(rad: np.ndarray, depth: np.ndarray, visibility: float) -> np.ndarray:
    """Blend towards the fog colour with transmittance exp(-depth / visibility)."""
    with np.errstate(over="ignore"):
        T = np.exp(-np.where(np.isfinite(depth), depth, 1e9) / visibility)[..., None]
    return rad * T + FOG_COLOR * (1 - T)


def _box_blur_rows(img: np.ndarray, k: int) -> np.ndarray:
    pad = np.pad(img, ((0, 0), (k // 2, k // 2), (0, 0)), mode="edge")
    cs = np.cumsum(np.pad(pad, ((0, 0), (1, 0), (0, 0))), axis=1)
    return (cs[:, k:] - cs[:, :-k]) / k


def camera(rad: np.ndarray, condition: str, case: str, rng: np.random.Generator) -> np.ndarray:
    """RGB camera: exposure, motion blur, rain streaks, noise, 8-bit quantisation."""
    c = CONDITIONS[condition]
    H, W = rad.shape[:2]
    img = rad * c["gain"] * EXPOSURE.get(case, 1.0)
    if case == "motionblur":
        img = _box_blur_rows(img, max(3, (W // 16) | 1))
    if condition == "rain":
        n = max(1, H * W // 300)
        ys, xs = rng.integers(0, H, n), rng.integers(0, W, n)
        length = max(3, H // 20)
        for i in range(length):
            yy, xx = np.clip(ys + i, 0, H - 1), np.clip(xs + i // 3, 0, W - 1)
            img[yy, xx] += 0.2
    img = img + rng.normal(0.0, c["noise"], img.shape)
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def _lowres_max(img: np.ndarray) -> np.ndarray:
    """Max over the source block of each pixel of the :func:`eventlowres_hw` grid (blocks of
    floor / ceil of a non-integer ratio), so no event is lost; deterministic."""
    H, W = img.shape[:2]
    h, w = eventlowres_hw((H, W))
    rows = np.maximum.reduceat(img, (np.arange(h) * H) // h, axis=0)
    return np.maximum.reduceat(rows, (np.arange(w) * W) // w, axis=1)


def events(rad_a: np.ndarray, rad_b: np.ndarray, condition: str, case: str,
           rng: np.random.Generator) -> np.ndarray:
    """Event frame from the log-luminance change A -> B: R = ON, G = OFF, B = any event."""
    w = np.array([0.299, 0.587, 0.114])
    e = np.log(rad_b @ w + 0.005) - np.log(rad_a @ w + 0.005)
    noise = rng.random(e.shape) < CONDITIONS[condition]["ev_noise"]
    e = np.where(noise, rng.choice([-1.0, 1.0], e.shape) * 0.5, e)
    mag = np.clip(64 + 191 * np.abs(e) / 2.0, 0, 255)
    on, off = e > EVENT_THRESHOLD, e < -EVENT_THRESHOLD
    img = np.stack([np.where(on, mag, 0), np.where(off, mag, 0), (on | off) * 255.0], -1)
    img = np.round(img).astype(np.uint8)
    return _lowres_max(img) if case == "eventlowres" else img


def encode_inverse_depth(depth: np.ndarray) -> np.ndarray:
    """uint8 255 * 3 / depth (clipped), at least 1 where depth is finite, 0 where not."""
    with np.errstate(divide="ignore"):
        val = np.clip(np.round(255.0 * 3.0 / depth), 1, 255)
    return np.where(np.isfinite(depth), val, 0).astype(np.uint8)


def hha(r: dict, rng: np.random.Generator) -> np.ndarray:
    """HHA-like 3 channels: disparity 255*3/Z, height 255*Y/20 m, angle with up (0 = no depth).

    Angle channel: 40 for horizontal surfaces, 200 for vertical ones.
    """
    finite = np.isfinite(r["depth"])
    c0 = encode_inverse_depth(r["depth"]).astype(np.float64)
    c1 = np.clip(r["height"] / 20.0 * 255.0, 0, 255)
    c2 = np.where(r["vertical"], 200.0, 40.0)
    img = np.stack([c0, c1, c2], -1) + rng.normal(0.0, 0.8, (*c0.shape, 3))
    img = np.where(finite[..., None], np.clip(np.round(img), 1, 255), 0)
    return img.astype(np.uint8)


def lidar(lay: Layout, r: dict, condition: str, case: str, rng: np.random.Generator) -> np.ndarray:
    """1-channel LiDAR image: inverse depth on H/4 scan lines (8..64), 0 = no return."""
    H, W = lay.H, lay.W
    el = np.deg2rad(np.linspace(-24.0, 4.0, max(8, min(64, H // 4))))
    rows = np.unique(np.round(lay.cy - lay.f * np.tan(el) - 0.5).astype(int))
    rows = rows[(rows >= 0) & (rows < H)]
    rr, cc = np.meshgrid(rows, np.arange(W), indexing="ij")
    rr, cc = rr.ravel(), cc.ravel()
    z = r["depth"][rr, cc]
    keep = np.isfinite(z) & (z < 120.0) & (r["label"][rr, cc] != UNLABELED)
    drop = {"rain": 0.15, "fog": 0.05}.get(condition, 0.02)
    keep &= rng.random(z.shape) >= drop
    if condition == "fog":
        keep &= rng.random(z.shape) < np.exp(-np.where(np.isfinite(z), z, 0.0) / 80.0)
    rr, cc, z = rr[keep], cc[keep], z[keep]
    if case == "lidarjitter":
        j = max(1, round(2 * H / 128))
        rr = np.clip(rr + rng.integers(-j, j + 1, rr.shape), 0, H - 1)
        cc = np.clip(cc + rng.integers(-j, j + 1, cc.shape), 0, W - 1)
        z = z * (1.0 + rng.normal(0.0, 0.08, z.shape))
    img = np.zeros((H, W), np.uint8)
    np.maximum.at(img, (rr, cc), encode_inverse_depth(np.maximum(z, 0.1)))
    return img


def render_sample(rng: np.random.Generator, size: int, condition: str, case: str) -> dict:
    """All DELIVER files of one synthetic sample as uint8 arrays (semantic holds disk ids)."""
    lay = sample_layout(rng, size, size)
    dz = rng.uniform(0.5, 1.2)
    shake = rng.uniform(-0.4, 0.4) * size / 128
    vis = rng.uniform(12.0, 30.0)
    r_a = render(lay, ego_z=0.0, t=0.0, cy_shift=shake)
    r_b = render(lay, ego_z=dz, t=1.0)
    rad_a, rad_b = radiance(lay, r_a, condition), radiance(lay, r_b, condition)
    if condition == "fog":
        rad_a, rad_b = apply_fog(rad_a, r_a["depth"], vis), apply_fog(rad_b, r_b["depth"], vis)
    return {
        "rgb": camera(rad_b, condition, case, rng),
        "hha": hha(r_b, rng),
        "event": events(rad_a, rad_b, condition, case, rng),
        "lidar": lidar(lay, r_b, condition, case, rng),
        "semantic": r_b["label"].copy(),
    }
