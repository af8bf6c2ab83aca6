"""docs/errors.md: every row of its tables is reproduced here and its message matches exactly.

The doc's rows carry an id (``D01``, ``G01``, ``C01``); ``REPRO[id]`` provokes the error through
the library (or ``mmsam.cli.main`` in process where the CLI itself speaks) and returns the line
the CLI prints. ``<...>`` in the doc's message stands for a value (a path, a count); ``...`` for
any text.
"""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from mmsam.errors import MMSamError

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
ROW = re.compile(r"^\|\s*([A-Z]\d\d)\s*\|(.*)\|\s*$")


def doc_rows() -> list[tuple[str, str]]:
    """(id, message template) of every table row of docs/errors.md that has an id."""
    out = []
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            cells = m.group(2).split("|")
            code = re.search(r"`([^`]+)`", cells[-1])
            assert code, f"row {m.group(1)}: no `message` in its last cell"
            out.append((m.group(1), code.group(1)))
    return out


def template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(<[a-z_ /]+>|\.\.\.)", template)
    return re.compile("".join(".*" if p == "..." else ".+?" if p.startswith("<") and p.endswith(">")
                              else re.escape(p) for p in parts), re.S)


# -- reproducers ---------------------------------------------------------------------------------
REPRO: dict[str, Callable[["Ctx"], str]] = {}


def case(row: str) -> Callable:
    def deco(fn: Callable) -> Callable:
        assert row not in REPRO
        REPRO[row] = fn
        return fn
    return deco


def line(fn: Callable[[], Any]) -> str:
    """The line ``mmsam`` prints for the MMSamError ``fn`` raises."""
    try:
        fn()
    except MMSamError as e:
        return f"mmsam: error: {e}"
    raise AssertionError("no error raised")


class Ctx:
    """Tiny synthetic sets built once; ``fresh(name)`` is a private copy to damage."""

    def __init__(self, base: Path, capsys: Any) -> None:
        from mmsam.data.synthetic import generate_deliver
        from mmsam.data.synthetic.mcubes import generate_mcubes

        self.base, self.capsys, self.n = base, capsys, 0
        self.sets = {"deliver": base / "pristine" / "deliver",
                     "mcubes": base / "pristine" / "multimodal_dataset"}
        kw = dict(num_train=2, num_val=1, num_test=1, size=24, seed=0, progress=False)
        generate_deliver(self.sets["deliver"], **kw)
        generate_mcubes(self.sets["mcubes"], **kw)

    def tmp(self) -> Path:
        self.n += 1
        path = self.base / f"case{self.n}"
        path.mkdir()
        return path

    def fresh(self, name: str) -> Path:
        dst = self.tmp() / self.sets[name].name
        shutil.copytree(self.sets[name], dst)
        return dst

    def dm(self, name: str, root: Path, **kw: Any) -> Any:
        from mmsam.data.datamodule import MultiModalDataModule

        kw = {"train_size": 24, "eval_size": 24, "num_workers": 0, **kw}
        return MultiModalDataModule(dataset=name, root=str(root), **kw)

    def preflight(self, name: str, root: Path, **kw: Any) -> str:
        return line(lambda: self.dm(name, root, **kw).preflight(("train", "val", "test")))

    def cli(self, args: list[str]) -> str:
        from mmsam.cli import main

        self.capsys.readouterr()
        assert main(args) == 2
        return self.capsys.readouterr().err.strip().splitlines()[-1]


def _one(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _png(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())


# data sets -------------------------------------------------------------------------------------
@case("D01")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.tmp() / "nowhere").setup("fit"))


@case("D02")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    _one(root, "event/*/val/*/*.png").unlink()
    return c.preflight("deliver", root)


@case("D03")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    f = _one(root, "hha/*/val/*/*.png")
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return c.preflight("deliver", root)


@case("D04")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    _one(root, "lidar/*/test/*/*.png").write_bytes(b"")
    return c.preflight("deliver", root)


@case("D05")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    _one(root, "img/*/train/*/*.png").write_text("not an image\n")
    return c.preflight("deliver", root)


@case("D06")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    _png(_one(root, "hha/*/train/*/*.png"), np.zeros((20, 24, 3), np.uint8))
    return c.preflight("deliver", root)


@case("D07")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    label = _one(root, "semantic/*/val/*/*.png")
    _png(label, np.ones((24, 30), np.uint8))
    msg = c.preflight("deliver", root)
    assert msg.startswith(f"mmsam: error: {label}:"), msg  # the odd file, not the four that agree
    return msg


@case("D08")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    _png(_one(root, "semantic/*/test/*/*.png"), np.full((24, 24), 40, np.uint8))
    return c.preflight("deliver", root)


@case("D09")
def _(c: Ctx) -> str:
    root = c.fresh("mcubes")
    gt = _one(root, "GT/*.png")
    ids = np.array(Image.open(gt))
    _png(gt, np.stack([ids, ids, (ids + 1) % 20], -1).astype(np.uint8))
    return c.preflight("mcubes", root)


@case("D10")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    Image.fromarray(np.zeros((24, 24), np.uint16)).save(_one(root, "lidar/*/train/*/*.png"))
    return c.preflight("deliver", root)


@case("D11")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    for f in root.glob("semantic/*/train/*/*.png"):
        _png(f, np.zeros((24, 24), np.uint8))  # DELIVER id 0 = unlabeled
    return c.preflight("deliver", root)


@case("D12")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    for f in root.glob("*/*/train/*/100000_*_front.png"):  # a sample no synthesis wrote
        shutil.copy(f, f.with_name(f.name.replace("100000", "100001")))
    return c.preflight("deliver", root)


@case("D13")
def _(c: Ctx) -> str:
    from mmsam.data.synthetic import generate_deliver

    root = c.tmp()
    (root / "notes.txt").write_text("mine\n")
    return line(lambda: generate_deliver(root, num_train=1, num_val=0, num_test=0, size=16,
                                         progress=False))


@case("D14")
def _(c: Ctx) -> str:
    root = c.tmp()
    (root / "notes.txt").write_text("mine\n")
    return line(lambda: c.dm("deliver", root, synthesize=True).setup("fit"))


@case("D15")
def _(c: Ctx) -> str:
    from mmsam.data.synthetic import generate_deliver

    root = c.tmp()
    mine = root / "img" / "cloud" / "train" / "MAP_1_point0" / "100000_rgb_front.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own picture")
    return line(lambda: generate_deliver(root, num_train=1, num_val=0, num_test=0, size=16,
                                         progress=False, overwrite=True))


def _npy(c: Ctx, folder: str, array_fn: Callable[[np.ndarray], Any]) -> str:
    root = c.fresh("mcubes")
    f = _one(root, f"{folder}/*.npy")
    out = array_fn(np.load(f))
    if isinstance(out, bytes):
        f.write_bytes(out)
    else:
        np.save(f, out, allow_pickle=True)
    return c.preflight("mcubes", root)


@case("D16")
def _(c: Ctx) -> str:
    def inf(a: np.ndarray) -> np.ndarray:
        a = a.copy()
        a[0, -1] = np.inf
        return a
    return _npy(c, "polL_dolp", inf)


@case("D17")
def _(c: Ctx) -> str:
    return _npy(c, "polL_aolp_sin", lambda a: np.save(buf := io.BytesIO(), a) or buf.getvalue()[:200])


@case("D18")
def _(c: Ctx) -> str:
    return _npy(c, "polL_aolp_cos", lambda a: np.stack([a, a], 0))


@case("D19")
def _(c: Ctx) -> str:
    return _npy(c, "polL_dolp", lambda a: np.array([None, 1], dtype=object))


@case("D20")
def _(c: Ctx) -> str:
    root = c.fresh("mcubes")
    lst = root / "list_folder" / "val.txt"
    lst.write_text(lst.read_text() + "outscene9999_9_0000000150\n")
    return c.preflight("mcubes", root)


@case("D21")
def _(c: Ctx) -> str:
    root = c.fresh("mcubes")
    (root / "list_folder" / "test.txt").unlink()
    return c.preflight("mcubes", root)


@case("D22")
def _(c: Ctx) -> str:
    root = c.fresh("mcubes")
    (root / "list_folder" / "train.txt").write_text("")
    return c.preflight("mcubes", root)


@case("D23")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    for f in root.glob("img/*/test/*/*.png"):
        f.unlink()
    return c.preflight("deliver", root)


def _folder(c: Ctx, layout: dict[str, np.ndarray], **kw: Any) -> str:
    root = c.tmp() / "folder"
    for rel, array in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".npy"):
            np.save(root / rel, array)
        else:
            _png(root / rel, array)
    opts = {"classes": ["background", "thing"], **kw}
    return c.preflight("folder", root, modalities=["rgb"], dataset_options=opts)


IMG = np.zeros((24, 24, 3), np.uint8)
LAB = np.ones((24, 24), np.uint8)


@case("D24")
def _(c: Ctx) -> str:
    return _folder(c, {"other/rgb/a.png": IMG})


@case("D25")
def _(c: Ctx) -> str:
    return _folder(c, {f"{s}/rgb/a.png": IMG for s in ("train", "val", "test")}
                   | {f"{s}/label/a.png": LAB for s in ("train", "val", "test")}
                   | {"train/rgb/a.npy": IMG[..., 0]})


@case("D26")
def _(c: Ctx) -> str:
    return _folder(c, {f"{s}/rgb/a.png": IMG for s in ("train", "val", "test")}
                   | {f"{s}/label/{i}.png": LAB for s in ("train", "val", "test") for i in "ab"})


@case("D27")
def _(c: Ctx) -> str:
    return _folder(c, {f"{s}/rgb/a.png": IMG for s in ("train", "val", "test")}
                   | {f"{s}/label/a.png": LAB * 7 for s in ("train", "val", "test")})


@case("D28")
def _(c: Ctx) -> str:
    from mmsam.data.synthetic import generate_deliver

    target = c.tmp() / "a_file"
    target.write_text("x")
    return line(lambda: generate_deliver(target, num_train=1, num_val=0, num_test=0, size=16,
                                         progress=False))


@case("D29")
def _(c: Ctx) -> str:
    root = c.fresh("deliver")
    return c.cli(["data", "synth", "--dataset", "deliver", "--root", str(root), "--num-train", "1"])


# configs ---------------------------------------------------------------------------------------
class _Model(dict):
    def get(self, key: str, default: Any = None) -> Any:  # a Namespace's get
        return super().get(key, default)


@case("G01")
def _(c: Ctx) -> str:
    from mmsam.cli_support import check_linked_values

    dm = c.dm("deliver", c.sets["deliver"])
    return line(lambda: check_linked_values(_Model(num_classes=10), dm))


@case("G02")
def _(c: Ctx) -> str:
    from mmsam.cli_support import check_linked_values

    dm = c.dm("deliver", c.sets["deliver"], modalities=["rgb", "depth"])
    return line(lambda: check_linked_values(_Model(modalities=["rgb"]), dm))


@case("G03")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("delivr", c.sets["deliver"]))


@case("G04")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], modalities=["rgb", "thermal"]))


@case("G05")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], modalities=["rgb", "depth"],
                             missing_modalities=["event"]))


@case("G06")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], batch_size=0))


@case("G07")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], flip_prob=1.5))


@case("G08")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], num_workers=-1))


@case("G09")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("mcubes", c.sets["mcubes"], dataset_options={"left": 0}))


@case("G10")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], dataset_options={"root": "x"}))


@case("G11")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], preflight="quick"))


@case("G12")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("potsdam", c.tmp(), synthesize=True))


@case("G13")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], conditions=["snow"]).setup("fit"))


@case("G14")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("folder", c.tmp()).num_classes)


@case("G15")
def _(c: Ctx) -> str:
    return c.cli(["data", "check", "--dataset", "deliver", "--root", str(c.sets["deliver"]),
                  "--option", "novalue"])


@case("G16")
def _(c: Ctx) -> str:
    return c.cli(["data", "synth", "--kind", "aerial", "--dataset", "deliver",
                  "--root", str(c.tmp())])


@case("G17")
def _(c: Ctx) -> str:
    from mmsam.data.synthetic import generate_deliver

    return line(lambda: generate_deliver(c.tmp(), size=4, progress=False))


@case("G18")
def _(c: Ctx) -> str:
    from mmsam.data.synthetic import generate_deliver

    return line(lambda: generate_deliver(c.tmp(), num_train=-1, progress=False))


@case("G19")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], modalities=["rgb"],
                             missing_modalities=["rgb"]).setup("validate"))


@case("G20")
def _(c: Ctx) -> str:
    from mmsam.data.check import check_dataset

    return line(lambda: check_dataset("deliver", c.sets["deliver"], splits=["all"]))


@case("G21")
def _(c: Ctx) -> str:
    from mmsam.data.synthetic.aerial import generate_aerial

    return line(lambda: generate_aerial(c.tmp(), num_train=160, progress=False))


@case("G22")
def _(c: Ctx) -> str:
    return c.cli(["data", "stats", "--config", str(c.tmp() / "missing.yaml")])


@case("G23")
def _(c: Ctx) -> str:
    cfg = c.tmp() / "bad.yaml"
    cfg.write_text("data: [unclosed\n")
    return c.cli(["data", "stats", "--config", str(cfg)])


@case("G24")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], train_size=0))


@case("G25")
def _(c: Ctx) -> str:
    return line(lambda: c.dm("deliver", c.sets["deliver"], cases=["blurry"]).setup("fit"))


# checkpoints -----------------------------------------------------------------------------------
def _load(path: Path) -> str:
    from mmsam.engine.checkpointing import check_checkpoint

    return line(lambda: check_checkpoint(path))


@case("C01")
def _(c: Ctx) -> str:
    import os

    path = c.tmp() / "evil.ckpt"
    torch.save({"state_dict": {}, "hook": os.getcwd}, path)
    return _load(path)


@case("C02")
def _(c: Ctx) -> str:
    path = c.tmp() / "torn.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(64)}}, path)
    path.write_bytes(path.read_bytes()[:100])
    return _load(path)


@case("C03")
def _(c: Ctx) -> str:
    path = c.tmp() / "empty.ckpt"
    path.write_bytes(b"")
    return _load(path)


@case("C04")
def _(c: Ctx) -> str:
    path = c.tmp() / "notes.ckpt"
    path.write_text("weights: none\n")
    return _load(path)


@case("C05")
def _(c: Ctx) -> str:
    path = c.tmp() / "bare.pt"
    torch.save({"w": torch.zeros(2)}, path)
    return _load(path)


@case("C06")
def _(c: Ctx) -> str:
    return _load(c.tmp() / "absent.ckpt")


@case("C07")
def _(c: Ctx) -> str:
    from torch import nn

    from mmsam.engine import SegmentationTask
    from mmsam.engine.report import load_checkpoint_weights

    class Tiny(nn.Module):
        def __init__(self, k: int, mods: list[str]) -> None:
            super().__init__()
            self.modalities, self.head = tuple(mods), nn.Conv2d(3, k, 1)

        def param_groups(self) -> dict[str, list[nn.Parameter]]:
            return {"heads": list(self.head.parameters())}

    task = SegmentationTask(lambda k, m: Tiny(k, m), num_classes=3, modalities=["rgb"], loss="ce")
    path = c.tmp() / "other.ckpt"
    torch.save({"state_dict": {"method.other.weight": torch.zeros(1)}}, path)
    return line(lambda: load_checkpoint_weights(task, path))


@case("C08")
def _(c: Ctx) -> str:
    from mmsam.engine.report import load_checkpoint_weights

    path = c.tmp() / "list.ckpt"
    torch.save([torch.zeros(1)], path)
    return line(lambda: load_checkpoint_weights(None, path))


# -- the tests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    return Ctx(tmp_path_factory.mktemp("errors_doc"), None)


def test_the_doc_lists_at_least_40_reproduced_rows() -> None:
    ids = [i for i, _ in doc_rows()]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    assert {i[0] for i in ids} == {"D", "G", "C"}  # data sets, configs, checkpoints
    assert set(ids) == set(REPRO), set(ids) ^ set(REPRO)


@pytest.mark.parametrize("row,template", doc_rows(), ids=[i for i, _ in doc_rows()])
def test_row_message_is_exact(ctx: Ctx, capsys: pytest.CaptureFixture, row: str,
                              template: str) -> None:
    ctx.capsys = capsys
    got = REPRO[row](ctx)
    assert "\n" not in got
    assert template_regex(template).fullmatch(got), f"{row}:\n doc: {template}\n got: {got}"
