"""Atomic file writes and pickle-free checkpoint reads.

Every file mmsam writes goes through :func:`atomic_write`: the bytes land in
``<target>.tmp-<pid>`` in the target's own folder (same file system, so the final rename is
atomic), are flushed and fsync'ed, then ``os.replace``'d onto the target and the folder is
fsync'ed. A process killed at any moment leaves either the old file or the new one, never a
truncated one; the temporary file it may leave behind is removed by :func:`clean_orphans` at the
next start.

Every file a user hands over is read with :func:`load_torch_file` (``weights_only=True``, never
pickle); a file that needs pickle, or is truncated, or is not a torch file, gives one
:class:`~mmsam.errors.CheckpointError` naming it. Whether a loaded state dict fits a model is
:func:`compare_state_dicts`, for every loader's error message.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Collection, Iterator, Mapping

from mmsam.errors import CheckpointError

#: ``<name>.tmp-<pid>``: the temporary files of :func:`atomic_write`.
_TMP_RE = re.compile(r"^(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def temp_path(path: str | Path) -> Path:
    """The temporary file :func:`atomic_write` writes before renaming it onto ``path``."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``<path>.tmp-<pid>`` for writing; on success fsync it and rename it onto ``path``.

    On any error (or a kill) ``path`` keeps its previous content; the temporary file is removed
    when the error is raised here, or by :func:`clean_orphans` after a kill.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_with(path: str | Path, writer: Any) -> None:
    """Atomically write ``path`` with ``writer(tmp_path)`` (for libraries that want a file name,
    e.g. ``safetensors.torch.save_file``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        writer(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had our pid: we are not writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_orphans(folder: str | Path) -> list[Path]:
    """Remove ``*.tmp-<pid>`` files of :func:`atomic_write` left in ``folder`` by dead processes."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if m and p.is_file() and not _alive(int(m.group("pid"))):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_torch_file(path: str | Path, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one ``CheckpointError`` naming ``path``.

    A file that needs pickle (arbitrary Python objects) is refused without running any of it.
    """
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if not zipfile.is_zipfile(path):  # torch.save's archive ends with a zip directory: torn / empty / foreign files lack it
        size = path.stat().st_size
        raise CheckpointError(f"{path}: not a readable checkpoint: {'empty file' if size == 0 else f'{size} bytes'} without "
                              "the archive torch.save writes (truncated, or another format)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            culprit = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            what = f" ({culprit.group(1)})" if culprit else ""
            raise CheckpointError(
                f"{path}: refused: the file holds pickled Python objects{what} that mmsam does not load "
                "(only tensors and plain values are read, weights_only=True)"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({_first_line(e)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint, truncated or not a torch file ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001  (foreign bytes fail with many types: one line naming the file)
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_first_line(e)})") from None


@dataclass(frozen=True)
class StateDictMismatch:
    """How a file's state dict fails to fit a model's; false when it fits. Lists in the model's
    (missing) or the file's (unexpected, shapes) key order."""

    missing: list[str]  # required keys the file lacks
    unexpected: list[str]  # file keys the model lacks
    shapes: list[str]  # "key: file (..) vs model (..)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)


def compare_state_dicts(model: Mapping[str, Any], file: Mapping[str, Any], *,
                        required: Collection[str] | None = None) -> StateDictMismatch:
    """Compare key sets and shapes of ``file`` (tensors read from disk) with ``model``'s; ``required``
    (default: all of ``model``'s keys) are the keys the file must hold."""
    need = model.keys() if required is None else required
    return StateDictMismatch(
        missing=[k for k in need if k not in file],
        unexpected=[k for k in file if k not in model],
        shapes=[f"{k}: file {tuple(file[k].shape)} vs model {tuple(model[k].shape)}"
                for k in file if k in model and tuple(file[k].shape) != tuple(model[k].shape)],
    )
