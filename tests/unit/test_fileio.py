"""Atomic writes (temp file in the target's folder, fsync, rename), orphan clean-up, weights_only reads."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from mmsam.errors import CheckpointError
from mmsam.fileio import atomic_write, atomic_write_with, clean_orphans, load_torch_file, temp_path


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as f:
        f.write(b"new")
        assert temp_path(target).parent == tmp_path and temp_path(target).exists()
        assert target.read_bytes() == b"old"  # nothing visible until the rename
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_failure_mid_write_keeps_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4.0)}}, target)
    good = target.read_bytes()

    class Boom(RuntimeError):
        pass

    real_write = torch.serialization._open_zipfile_writer

    def half_then_fail(f):  # torch.save writes part of the archive, then the disk "fails"
        f.write(b"PK\x03\x04 partial bytes")
        raise Boom("disk full")

    monkeypatch.setattr(torch.serialization, "_open_zipfile_writer", half_then_fail)
    from mmsam.engine.checkpointing import AtomicCheckpointIO

    with pytest.raises(Boom):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(4)}}, target)
    monkeypatch.setattr(torch.serialization, "_open_zipfile_writer", real_write)
    assert target.read_bytes() == good  # intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # temp removed
    assert torch.equal(load_torch_file(target)["state_dict"]["w"], torch.arange(4.0))


def test_temp_file_is_in_the_targets_folder_whatever_tmpdir_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    seen: list[Path] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    from mmsam.engine.checkpointing import AtomicCheckpointIO

    ckpts = tmp_path / "run" / "checkpoints"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, ckpts / "last.ckpt")
    atomic_write_with(ckpts / "a.safetensors", lambda p: Path(p).write_bytes(b"x"))
    assert [p.parent for p in seen] == [ckpts, ckpts] and [p.name for p in seen] == [f"last.ckpt.tmp-{os.getpid()}", f"a.safetensors.tmp-{os.getpid()}"]
    assert not any(elsewhere.iterdir())
    assert torch.equal(load_torch_file(ckpts / "last.ckpt")["state_dict"]["w"], torch.ones(2))


def test_orphans_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f"last.ckpt.tmp-{dead_pid}"
    orphan.write_bytes(b"torn")
    live = tmp_path / f"last.ckpt.tmp-{os.getppid()}"  # a live writer's file is left alone
    live.write_bytes(b"in progress")
    keep = tmp_path / "notes.tmp-x"
    keep.write_bytes(b"not ours")
    assert clean_orphans(tmp_path) == [orphan]
    assert live.exists() and keep.exists() and not orphan.exists()


def test_checkpoint_callback_cleans_orphans_at_setup(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from mmsam.engine.checkpointing import ResumableCheckpoint

    (tmp_path / "ck").mkdir()
    orphan = tmp_path / "ck" / "last.ckpt.tmp-999999999"
    orphan.write_bytes(b"torn")
    cb = ResumableCheckpoint(dirpath=str(tmp_path / "ck"))
    trainer = pl.Trainer(logger=False, callbacks=[cb], enable_progress_bar=False, accelerator="cpu")
    cb.setup(trainer, None, "fit")  # type: ignore[arg-type]
    assert not orphan.exists()


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_bearing_file_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "x": _Touch(marker)}, bad)
    with pytest.raises(CheckpointError, match=r"bad\.ckpt: refused: the file holds pickled Python objects") as info:
        load_torch_file(bad)
    assert not marker.exists() and "\n" not in str(info.value)
    pickle.loads(pickle.dumps(_Touch(marker)))  # the payload does work when unpickled
    assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n", "truncated"])
def test_torn_or_foreign_files_give_one_line(tmp_path: Path, content) -> None:
    bad = tmp_path / "x.ckpt"
    if content == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(10000)}}, bad)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:
        bad.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"x\.ckpt: not a readable checkpoint") as info:
        load_torch_file(bad)
    assert "\n" not in str(info.value)



def test_compare_state_dicts_names_missing_unexpected_and_shapes():
    from mmsam.fileio import compare_state_dicts

    model = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}
    assert not compare_state_dicts(model, {"a": torch.ones(2, 3), "b": torch.ones(4), "c": torch.ones(1)})
    diff = compare_state_dicts(model, {"b": torch.zeros(5), "a": torch.zeros(2, 3), "x": torch.zeros(1)})
    assert diff and diff.missing == ["c"] and diff.unexpected == ["x"]  # model order, file order
    assert diff.shapes == ["b: file (5,) vs model (4,)"]
    # only the required keys must be present (a file of the changed tensors only)
    partial = compare_state_dicts(model, {"a": torch.zeros(2, 3)}, required=["a"])
    assert not partial and partial.missing == []
