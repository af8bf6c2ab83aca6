"""Write a synthetic materials set in MCubeS' own layout and encodings.

``multimodal_dataset/`` is the root: ``polL_color/<stem>.png`` (8-bit RGB),
``polL_aolp_sin|polL_aolp_cos|polL_dolp/<stem>.npy`` (float32 HxW), ``NIR_warped/<stem>.png``
(16-bit grey), ``NIR_warped_mask/<stem>.png`` (255 = invalid NIR), ``GT/<stem>.png`` (material
ids 0..19, 255 ignore), ``SS/<stem>.png`` (Cityscapes trainIds) and
``list_folder/{train,val,test,all}.txt``. Images are ``size`` tall and ``192 + size * 1032 / 1024``
wide, so that dropping the left 192 columns (as the reference loaders do) leaves the MCubeS
aspect ratio. Deterministic from the seed (byte-identical files); a marker
``mmsam_synthetic.json`` records the parameters.
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from mmsam.data.datasets.mcubes import (
    AOLP_COS,
    EXTRA_FOLDERS,
    LABEL_FOLDER,
    LEFT_OFFSET,
    LIST_FOLDER,
    MCUBES_FOLDERS,
)
from mmsam.data.synthetic.materials import render_materials
from mmsam.data.synthetic.common import MARKER, Synthesis, check_generate_args, written_by  # noqa: F401  (MARKER: re-exported)

GENERATOR = "mmsam.synthetic.mcubes"
SPLITS = ("train", "val", "test")
#: array key (render_materials) -> (folder, suffix)
FILES: dict[str, tuple[str, str]] = {
    "color": MCUBES_FOLDERS["rgb"], "aolp_sin": MCUBES_FOLDERS["aolp"], "aolp_cos": AOLP_COS,
    "dolp": MCUBES_FOLDERS["dolp"], "nir": MCUBES_FOLDERS["nir"],
    "nir_mask": EXTRA_FOLDERS["nir_mask"], "gt": LABEL_FOLDER, "ss": EXTRA_FOLDERS["ss"],
}


def stem_for(split: str, j: int) -> str:
    """MCubeS-like stem, e.g. ``outscene1100_0_0000000150``; unique per split and index."""
    s = SPLITS.index(split)
    return f"outscene{1100 + 100 * s + j // 5:04d}_{s}_{(j % 5 + 1) * 150:010d}"


def crop_width(size: int) -> int:
    """Width left after the reference's crop: the 1032:1024 aspect of MCubeS."""
    return int(round(size * 1032 / 1024))


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, array, allow_pickle=False)
    else:
        Image.fromarray(array).save(path, format="PNG", compress_level=6)


def is_generated(root: Union[str, Path]) -> bool:
    """True if ``root`` holds a complete set written by :func:`generate_mcubes`."""
    return written_by(root, GENERATOR)


def generate_mcubes(
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
    """Generate the synthetic MCubeS-layout set under ``root``; return a summary dict.

    ``root`` must be empty or new unless ``overwrite`` (see :class:`Synthesis`).
    """
    counts = check_generate_args(num_train, num_val, num_test, size)
    root = Path(root)
    start = time.perf_counter()
    H, W = size, LEFT_OFFSET + crop_width(size)
    plans = [(split, j) for split in SPLITS for j in range(counts[split])]
    lists_out = [root / LIST_FOLDER / f"{name}.txt" for name in (*SPLITS, "all")]
    run = Synthesis(root, GENERATOR, [root / folder / f"{stem_for(split, j)}{suffix}"
                                      for split, j in plans for folder, suffix in FILES.values()]
                    + lists_out, overwrite)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plans), desc=f"synthetic MCubeS -> {root}", unit="sample")
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    pixels: Counter = Counter()
    for split, j in plans:
        rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), j, 7]))
        arrays = render_materials(rng, H, W, LEFT_OFFSET)
        stem = stem_for(split, j)
        for key, (folder, suffix) in FILES.items():
            _write(root / folder / f"{stem}{suffix}", arrays[key])
        lists[split].append(stem)
        ids, n = np.unique(arrays["gt"][:, LEFT_OFFSET:], return_counts=True)
        pixels.update(dict(zip(ids.tolist(), n.tolist())))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    (root / LIST_FOLDER).mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (root / LIST_FOLDER / f"{split}.txt").write_text("".join(f"{s}\n" for s in lists[split]))
    (root / LIST_FOLDER / "all.txt").write_text(
        "".join(f"{s}\n" for split in SPLITS for s in lists[split]))
    info = {
        "generator": GENERATOR, "version": 1, "seed": seed, "size": size, "width": W,
        "splits": counts, "class_pixels": {str(k): v for k, v in sorted(pixels.items())},
        "files": len(plans) * len(FILES) + len(SPLITS) + 1,
    }
    run.finish(info)
    return {**info, "root": str(root), "seconds": round(time.perf_counter() - start, 3)}
