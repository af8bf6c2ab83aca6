"""Write a synthetic driving set in DELIVER's official layout and encodings.

``{img,hha,event,lidar,semantic}/<condition>/<split>/<scene>/<frame>_<tag>_front.png``:
RGB 3-ch, HHA 3-ch, event 3-ch (512/1042 of the size in ``*_eventlowres`` scenes), LiDAR 1-ch,
semantic 1-ch with DELIVER ids 1..25 (0 = unlabeled). Deterministic from the seed: the same
seed gives byte-identical files. A marker ``mmsam_synthetic.json`` records the parameters.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from mmsam.data.datasets.deliver import (
    DELIVER_CONDITIONS,
    DELIVER_FOLDERS,
    DELIVER_SPLITS,
    LABEL_FOLDER,
)
from mmsam.data.synthetic.sensors import render_sample
from mmsam.data.synthetic.common import MARKER, Synthesis, check_generate_args, written_by  # noqa: F401  (MARKER: re-exported)

CONDITIONS = DELIVER_CONDITIONS
#: Scene suffix cycle: half the scenes normal, the rest one sensor-failure case each.
CASE_CYCLE = ("", "motionblur", "", "overexposure", "", "underexposure", "", "lidarjitter",
              "", "eventlowres")
FRAMES_PER_SCENE = 2
SPLITS = DELIVER_SPLITS
#: modality -> the array of :func:`render_sample` written for it
_RENDERED = {"rgb": "rgb", "depth": "hha", "event": "event", "lidar": "lidar"}
#: folder -> (array of :func:`render_sample`, file tag), from the loader's layout.
FILES = {**{DELIVER_FOLDERS[m][0]: (key, DELIVER_FOLDERS[m][1]) for m, key in _RENDERED.items()},
         LABEL_FOLDER[0]: ("semantic", LABEL_FOLDER[1])}


def plan_split(split: str, n: int) -> list[tuple[str, str, str, str]]:
    """(condition, scene, case, frame) for each of the ``n`` samples of ``split``.

    Samples cycle through the 5 conditions; within a condition consecutive samples share a
    scene folder (2 frames each); each condition's scenes cycle through ``CASE_CYCLE``
    (offset by condition), so every case appears once a split has 20 samples.
    """
    s = SPLITS.index(split)
    out = []
    for j in range(n):
        ci = j % len(CONDITIONS)
        k = j // len(CONDITIONS)
        scene_in_cond = k // FRAMES_PER_SCENE
        case = CASE_CYCLE[(scene_in_cond + 2 * ci) % len(CASE_CYCLE)]
        scene = f"MAP_{1 + scene_in_cond % 10}_point{scene_in_cond}" + (f"_{case}" if case else "")
        frame = f"{100000 + 50000 * s + 10 * j:06d}"
        out.append((CONDITIONS[ci], scene, case or "normal", frame))
    return out


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def is_generated(root: Union[str, Path]) -> bool:
    """True if ``root`` holds a complete synthetic set written by :func:`generate_deliver`."""
    return written_by(root, "mmsam.synthetic.deliver")


def generate_deliver(
    root: Union[str, Path],
    *,
    num_train: int = 160,
    num_val: int = 40,
    num_test: int = 40,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Generate the synthetic DELIVER-layout set under ``root``; return a summary dict.

    ``root`` must be empty or new unless ``overwrite`` (see :class:`Synthesis`).
    """
    counts = check_generate_args(num_train, num_val, num_test, size)
    root = Path(root)
    start = time.perf_counter()
    plans = [(split, j, p) for split in SPLITS
             for j, p in enumerate(plan_split(split, counts[split]))]
    path = lambda folder, split, cond, scene, frame, tag: (  # noqa: E731
        root / folder / cond / split / scene / f"{frame}_{tag}_front.png")
    run = Synthesis(root, "mmsam.synthetic.deliver", [
        path(folder, split, cond, scene, frame, tag) for split, _, (cond, scene, _, frame) in plans
        for folder, (_, tag) in FILES.items()], overwrite)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc=f"synthetic DELIVER -> {root}", unit="sample")
    cond_count: Counter = Counter()
    case_count: Counter = Counter()
    for split, j, (cond, scene, case, frame) in plans:
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), j]))
        arrays = render_sample(rng, size, cond, case)
        for folder, (key, tag) in FILES.items():
            _save(path(folder, split, cond, scene, frame, tag), arrays[key])
        cond_count[cond] += 1
        case_count[case] += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    info = {
        "generator": "mmsam.synthetic.deliver", "version": 2, "seed": seed, "size": size,
        "splits": counts, "conditions": dict(sorted(cond_count.items())),
        "cases": dict(sorted(case_count.items())), "files": len(plans) * len(FILES),
    }
    run.finish(info)
    return {**info, "root": str(root), "seconds": round(time.perf_counter() - start, 3)}
