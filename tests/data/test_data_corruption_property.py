"""Property: any corruption of one file of a small synthetic set is refused before the first step
in one line naming that file, or the set still reads correctly (hypothesis, derandomized)."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmsam.data.datamodule import MultiModalDataModule
from mmsam.errors import MMSamError

KINDS = ("truncate", "zeros", "wrong_size", "wrong_mode", "garbage")
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Path]]]:
    """dataset -> (pristine root, the files its samples read), one tiny set per layout."""
    from mmsam.data.synthetic import generate_deliver
    from mmsam.data.synthetic.mcubes import generate_mcubes

    out = {}
    base = tmp_path_factory.mktemp("pristine")
    for name, gen, root in (("deliver", generate_deliver, base / "deliver"),
                            ("mcubes", generate_mcubes, base / "multimodal_dataset")):
        gen(root, num_train=2, num_val=1, num_test=1, size=24, seed=0, progress=False)
        dm = _datamodule(name, root)
        dm._build_keys(SPLITS)
        files = sorted({Path(p) for ds in dm.datasets.values() for s in ds.samples
                        for p in s.files.values()})
        out[name] = (root, files)
    return out


def _datamodule(name: str, root: Path) -> MultiModalDataModule:
    return MultiModalDataModule(dataset=name, root=str(root), train_size=24, eval_size=24,
                                scale_range=None, batch_size=1, num_workers=0)


def _corrupt(path: Path, kind: str, x: float, blob: bytes) -> None:
    data = path.read_bytes()
    if kind == "truncate":
        path.write_bytes(data[: int(x * (len(data) - 1))])
    elif kind == "zeros":
        start = int(x * (len(data) - 1))
        path.write_bytes(data[:start] + bytes(min(64, len(data) - start)) + data[start + 64:])
    elif kind == "garbage":
        path.write_bytes(blob)
    elif path.suffix == ".npy":
        arr = np.load(path)
        if kind == "wrong_size":
            arr = arr[: max(1, int(x * arr.shape[0])), 1:]
        else:
            arr = np.stack([arr, arr], -1) if x < 0.5 else arr.astype(np.int64)
        np.save(path, arr)
    else:
        with Image.open(path) as img:
            img.load()
            if kind == "wrong_size":
                img = img.resize((img.width + 1 + int(x * 7), img.height))
            else:
                modes = ["L", "RGB", "RGBA", "I;16", "1", "P"]
                img = img.convert(modes[int(x * len(modes)) % len(modes)]) if img.mode != "I;16" \
                    else Image.fromarray((np.array(img) >> 8).astype(np.uint8))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        path.write_bytes(buf.getvalue())


@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(["deliver", "mcubes"]), pick=st.floats(0, 1, exclude_max=True),
       kind=st.sampled_from(KINDS), x=st.floats(0, 1), blob=st.binary(max_size=64))
@example(name="deliver", pick=0.9, kind="wrong_mode", x=0.3, blob=b"")   # a label saved as RGB
@example(name="deliver", pick=0.1, kind="wrong_mode", x=0.0, blob=b"")   # an image saved as L
@example(name="mcubes", pick=0.3, kind="wrong_mode", x=0.2, blob=b"")    # a 3-D / int .npy
@example(name="mcubes", pick=0.5, kind="wrong_mode", x=0.7, blob=b"")
@example(name="deliver", pick=0.95, kind="wrong_size", x=0.5, blob=b"")  # the odd label is named
def test_a_corrupted_file_is_named_in_one_line_or_reads(sets, tmp_path_factory, name, pick, kind,
                                                         x, blob) -> None:
    pristine, files = sets[name]
    root = tmp_path_factory.mktemp("case") / pristine.name
    shutil.copytree(pristine, root)
    victim = root / files[int(pick * len(files))].relative_to(pristine)
    _corrupt(victim, kind, x, blob)
    dm = _datamodule(name, root)
    try:
        dm.preflight(SPLITS)
    except MMSamError as e:
        msg = str(e)
        assert "\n" not in msg and str(victim) in msg, (kind, msg)
        return
    for ds in dm.datasets.values():  # preflight passed: every item reads
        for i in range(len(ds)):
            item = ds[i]
            assert item["label"].shape[-2:] == item["modalities"][dm.modalities[0]].shape[-2:]
