"""Pieces the synthetic generators share: argument checks, the marker and its manifest.

Each generator writes into an empty or new folder only (``overwrite=True``, the CLI's
``--overwrite``, lets it write where an earlier synthetic set lies). The marker it writes last,
``mmsam_synthetic.json``, names the generator and lists every file it wrote (``manifest``): a
re-synthesis removes the files of the earlier set it does not write again (a smaller set leaves
no stale samples), never a file no generator wrote, and refuses to write over one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from mmsam.errors import ConfigError, DataError

#: file each generator writes last, naming itself: its presence marks a complete set
MARKER = "mmsam_synthetic.json"


def _read_marker(root: Union[str, Path]) -> Optional[dict]:
    try:
        info = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def written_by(root: Union[str, Path], generator: str) -> bool:
    """True if ``root`` holds a complete set whose marker names ``generator``."""
    info = _read_marker(root)
    return info is not None and info.get("generator") == generator and info.get("complete", True)


def read_manifest(root: Union[str, Path]) -> Optional[set[str]]:
    """The files (POSIX paths relative to ``root``) the marker of ``root`` lists, or None when
    there is no marker or it predates manifests."""
    info = _read_marker(root)
    files = info.get("manifest") if info is not None else None
    return set(files) if isinstance(files, list) else None


def check_generate_args(num_train: int, num_val: int, num_test: int,
                        size: int) -> dict[str, int]:
    """Split -> sample count; ConfigError on a negative/non-int count or a size below 16."""
    counts = {"train": num_train, "val": num_val, "test": num_test}
    if any(not isinstance(v, int) or v < 0 for v in counts.values()):
        raise ConfigError(f"sample counts must be non-negative ints, got {counts}")
    if not isinstance(size, int) or size < 16:
        raise ConfigError(f"size must be an int >= 16, got {size!r}")
    return counts


def visible_entries(root: Union[str, Path]) -> list[Path]:
    """Entries of ``root`` whose names do not start with '.', sorted ([] if it is no folder)."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


class Synthesis:
    """One run of a generator over ``root``: refuses what it must, then cleans up and marks.

    ``Synthesis(root, generator, planned, overwrite)`` checks before anything is written:
    ``root`` is empty or new (unless ``overwrite``), and no planned file is one an earlier
    synthesis did not write. It then marks the set incomplete (the marker keeps the earlier
    manifest, so a killed run can still be cleaned up). :meth:`finish` removes the earlier
    set's files not written again and writes the marker with the new manifest.
    """

    def __init__(self, root: Union[str, Path], generator: str, planned: Iterable[Path],
                 overwrite: bool = False) -> None:
        self.root = Path(root)
        self.generator = generator
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder; the synthetic set needs a folder")
        entries = visible_entries(self.root)
        if entries and not overwrite:
            raise DataError(
                f"{self.root}: folder is not empty ({len(entries)} entries, e.g. "
                f"{entries[0].name!r}); a synthetic set is written only into an empty or new "
                f"folder (mmsam data synth --overwrite replaces an earlier synthetic set)")
        marker = _read_marker(self.root)
        previous = read_manifest(self.root)
        self.previous: set[str] = previous or set()
        #: an earlier mmsam set without a manifest: its files may be rewritten
        legacy = marker is not None and previous is None
        self.planned = [Path(p) for p in planned]
        self.rel = [p.relative_to(self.root).as_posix() for p in self.planned]
        for path, rel in zip(self.planned, self.rel):
            if path.exists() and rel not in self.previous and not legacy:
                raise DataError(f"{path}: exists and was not written by a synthetic generator; "
                                f"the synthetic set would overwrite it: move it away or pick "
                                f"another root")
        if marker is not None:
            self._write_marker({"generator": generator, "complete": False,
                                "manifest": sorted(self.previous)})

    def _write_marker(self, info: dict) -> None:
        from mmsam.fileio import atomic_write

        with atomic_write(self.root / MARKER, "w") as f:
            f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")

    def finish(self, info: dict[str, Any]) -> dict[str, Any]:
        """Remove stale files of the earlier set, write the marker; return ``info``."""
        keep = set(self.rel)
        folders: set[Path] = set()
        for rel in sorted(self.previous - keep):
            path = self.root / rel
            if path.is_file():
                path.unlink()
                folders.update(path.parents)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder.is_relative_to(self.root) and folder != self.root:
                try:
                    os.rmdir(folder)  # only folders the removal emptied
                except OSError:
                    pass
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_marker({**info, "manifest": sorted(keep)})
        return info
