"""Preflight: bad data stops before the first step; the cache; sample mode; safe re-synthesis."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsam.data import preflight as pf
from mmsam.data.datamodule import MultiModalDataModule
from mmsam.data.synthetic import generate_deliver
from mmsam.data.synthetic.common import MARKER, read_manifest
from mmsam.errors import DataError

KW = dict(num_train=4, num_val=2, num_test=2, size=24, seed=0, progress=False)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pf") / "deliver"
    generate_deliver(root, **KW)
    return root


@pytest.fixture()
def root(pristine: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "deliver"
    shutil.copytree(pristine, dst)
    return dst


def _dm(root: Path, **kw) -> MultiModalDataModule:
    return MultiModalDataModule(dataset="deliver", root=str(root), train_size=24, eval_size=24,
                                num_workers=0, **kw)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Patch the checker's decoders to record every file decoded."""
    from mmsam.data import check

    seen: list[Path] = []
    real = check._reader

    def reader(ds, key, path):
        fn = real(ds, key, path)
        return lambda p, **kw: (seen.append(Path(p)), fn(p, **kw))[1]

    monkeypatch.setattr(check, "_reader", reader)
    real_label = check._label_reader
    monkeypatch.setattr(check, "_label_reader", lambda ds: (
        lambda p, f=real_label(ds): (seen.append(Path(p)), f(p))[1]))
    return seen


def test_a_bad_test_file_stops_fit_before_the_first_step(root: Path) -> None:
    victim = sorted(root.glob("img/*/test/*/*.png"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # header intact
    dm = _dm(root)
    dm.setup("fit")  # train + val are fine
    with pytest.raises(DataError, match=f"^{victim}: cannot decode image"):
        dm.preflight(("train", "val", "test"))  # what `mmsam fit` checks when it tests after fit
    with pytest.raises(DataError, match=str(victim)):
        _dm(root).setup("test")
    off = _dm(root, preflight="off")
    off.setup("test")  # the loaders' header check alone lets it through to the first read


def test_the_cache_skips_unchanged_files_and_rereads_changed_ones(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _count_reads(monkeypatch)
    _dm(root).setup("validate")
    first = len(seen)
    assert first == 2 * 5  # 2 val samples x 5 files
    table = json.loads((root / pf.CACHE_NAME).read_text())["contexts"]
    assert len(next(iter(table.values()))) == first
    seen.clear()
    _dm(root).setup("validate")
    assert seen == []  # nothing changed: nothing decoded
    label = sorted(root.glob("semantic/*/val/*/*.png"))[0]
    Image.fromarray(np.array(Image.open(label))).save(label)  # rewritten: new mtime
    _dm(root).setup("validate")
    assert seen == [label]


def test_a_read_only_data_folder_caches_under_the_user_cache(
        root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(pf.os, "access", lambda path, mode: False)
    _dm(root).setup("test")
    assert not (root / pf.CACHE_NAME).exists()
    assert len(list((tmp_path / "cache" / "mmsam" / "preflight").glob("*.json"))) == 1


def test_sample_mode_reads_headers_of_all_and_decodes_a_sample(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf, "SAMPLE_MIN", 2)
    seen = _count_reads(monkeypatch)
    victim = sorted(root.glob("hha/*/train/*/*.png"))[1]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    _dm(root, preflight="sample").setup("fit")  # samples 0 and 3 of train decoded: victim missed
    assert len({p for p in seen if "/train/" in str(p)}) == 2 * 5
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(victim)  # a wrong size: headers tell
    with pytest.raises(DataError, match=f"^{victim}: 20x24"):
        _dm(root, preflight="sample").setup("fit")


def test_unlabelled_split_is_refused_even_when_the_sample_misses_the_labels(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pf, "SAMPLE_MIN", 1)
    labels = sorted(root.glob("semantic/*/train/*/*.png"))
    for f in labels:
        Image.fromarray(np.zeros((24, 24), np.uint8)).save(f)
    with pytest.raises(DataError, match="no labelled pixel in any of the 4 train labels"):
        _dm(root, preflight="sample").setup("fit")
    Image.fromarray(np.full((24, 24), 3, np.uint8)).save(labels[-1])  # one labelled label, unsampled
    _dm(root, preflight="sample").setup("fit")


def test_resynthesis_removes_its_stale_samples_and_keeps_user_files(tmp_path: Path) -> None:
    root = tmp_path / "d"
    generate_deliver(root, **KW)
    mine = root / "README.txt"
    mine.write_text("my notes\n")
    with pytest.raises(DataError, match="folder is not empty"):
        generate_deliver(root, **KW)
    before = {p for p in root.rglob("*.png")}
    generate_deliver(root, **{**KW, "num_train": 2}, overwrite=True)
    after = {p for p in root.rglob("*.png")}
    assert len(before) - len(after) == 2 * 5 and after < before
    assert mine.read_text() == "my notes\n"
    assert read_manifest(root) == {p.relative_to(root).as_posix() for p in after}
    dm = _dm(root)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2


def test_a_killed_resynthesis_still_knows_the_earlier_files(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from mmsam.data.synthetic import deliver

    root = tmp_path / "d"
    generate_deliver(root, **KW)
    calls = {"n": 0}
    real = deliver.render_sample

    def dies(*a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(deliver, "render_sample", dies)
    with pytest.raises(KeyboardInterrupt):
        generate_deliver(root, **{**KW, "num_train": 1}, overwrite=True)
    info = json.loads((root / MARKER).read_text())
    assert info["complete"] is False and len(info["manifest"]) == 8 * 5
    assert not deliver.is_generated(root)
    monkeypatch.setattr(deliver, "render_sample", real)
    generate_deliver(root, **{**KW, "num_train": 1}, overwrite=True)
    assert len(list(root.glob("img/*/train/*/*.png"))) == 1


def test_fit_with_synthesize_never_writes_over_user_files(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    label = root / "semantic" / "cloud" / "train" / "MAP_1_point0" / "100000_semantic_front.png"
    label.parent.mkdir(parents=True)
    label.write_bytes(b"precious")
    with pytest.raises(DataError, match="data.synthesize is true but this data.root holds no"):
        _dm(root, synthesize=True).setup("fit")
    assert label.read_bytes() == b"precious"


def test_data_check_names_the_odd_label_not_the_files_that_agree(root: Path) -> None:
    from mmsam.data.check import check_dataset

    label = sorted(root.glob("semantic/*/train/*/*.png"))[0]
    Image.fromarray(np.ones((24, 30), np.uint8)).save(label)
    report = check_dataset("deliver", root, splits=["train"])
    assert [(p.kind, p.path) for p in report.problems] == [("size", str(label))]
