"""Preflight: check every file of the splits a run will read before its first step.

``fit`` / ``validate`` / ``test`` / ``predict`` call :func:`preflight` from the data module's
``setup`` with exactly the splits they read. It runs the checks of ``mmsam data check``
(:class:`mmsam.data.check._SplitChecker`: existence, decoding, sizes named by the odd file,
label ids) and refuses, in one line naming the file, on the first problem; it also refuses a
split whose labels hold no labelled pixel and, in a synthetic set whose marker lists the files
it wrote, a file the generator did not write (a stale sample of an earlier, larger synthesis).

Modes (``data.preflight``): ``full`` decodes every file; ``sample`` reads every header and
decodes an evenly spaced sample of each split (all labels when the sample has no labelled
pixel); ``off`` keeps only the loaders' own header check. Facts of good files are cached,
keyed by path, size and modification time, in ``<root>/.mmsam_preflight.json`` (or, when the
data folder is read-only, under ``~/.cache/mmsam/preflight/``), so a second run re-reads only
files that changed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from mmsam.data.check import CheckReport, FileFacts, Problem, _SplitChecker
from mmsam.data.synthetic.common import read_manifest
from mmsam.errors import ConfigError, DataError

#: Values of ``data.preflight``.
PREFLIGHT_MODES = ("full", "sample", "off")
#: The cache file written next to the data.
CACHE_NAME = ".mmsam_preflight.json"
_CACHE_VERSION = 1
#: ``sample`` mode decodes this many samples per split, or 1 in 20 when that is more.
SAMPLE_MIN = 16


def check_mode(mode: Any) -> str:
    """``mode`` if it is one of :data:`PREFLIGHT_MODES`; ConfigError naming the key otherwise."""
    if mode not in PREFLIGHT_MODES:
        raise ConfigError(f"data.preflight: expected one of {', '.join(PREFLIGHT_MODES)}, "
                          f"got {mode!r}")
    return str(mode)


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mmsam`` (default ``~/.cache/mmsam``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmsam"


class PreflightCache:
    """File facts keyed by path + size + mtime, one table per checking context.

    The context (data set, its options, class count) changes how a label decodes, so each has
    its own table. Only good files are stored; a bad one is read again every time.
    """

    def __init__(self, root: Union[str, Path], context: str) -> None:
        self.root = Path(root)
        self.context = context
        self.path = self._location()
        self.data: dict[str, Any] = {"version": _CACHE_VERSION, "contexts": {}}
        try:
            loaded = json.loads(self.path.read_text())
            if isinstance(loaded, dict) and loaded.get("version") == _CACHE_VERSION:
                self.data = loaded
        except (OSError, ValueError):
            pass  # no cache yet, or an unreadable one: start afresh
        self.table: dict[str, list] = self.data["contexts"].setdefault(context, {})
        self.dirty = False

    def _location(self) -> Path:
        local = self.root / CACHE_NAME
        if os.access(self.root, os.W_OK) and (not local.exists() or os.access(local, os.W_OK)):
            return local
        digest = hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:16]
        return user_cache_dir() / "preflight" / f"{digest}.json"

    @staticmethod
    def _stamp(path: Path) -> Optional[tuple[int, int]]:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def get(self, path: Path, decoded: bool) -> Optional[FileFacts]:
        row = self.table.get(str(path))
        if row is None or self._stamp(path) != (row[0], row[1]) or (decoded and not row[2]):
            return None
        return FileFacts((row[3], row[4]), decoded=bool(row[2]),
                         hist=None if row[5] is None else tuple(row[5]))

    def put(self, path: Path, facts: FileFacts) -> None:
        stamp = self._stamp(path)
        old = self.table.get(str(path))
        if stamp is None or (old is not None and old[2] and not facts.decoded
                             and (old[0], old[1]) == stamp):
            return  # never replace decoded facts by a header-only read of the same file
        self.table[str(path)] = [stamp[0], stamp[1], facts.decoded, facts.shape[0],
                                 facts.shape[1], None if facts.hist is None else list(facts.hist)]
        self.dirty = True

    def save(self) -> None:
        """Write the cache atomically (a read-only place is skipped: the cache is an optimisation)."""
        if not self.dirty:
            return
        from mmsam.fileio import atomic_write

        try:
            with atomic_write(self.path, "w") as f:
                json.dump(self.data, f, separators=(",", ":"))
        except OSError:
            return
        self.dirty = False


def _decode_indices(n: int, mode: str) -> set[int]:
    if mode == "full":
        return set(range(n))
    k = min(n, max(SAMPLE_MIN, n // 20))
    return set(np.linspace(0, n - 1, k).round().astype(int).tolist()) if k else set()


def _manifest_problem(files: Iterable[Path], manifest: Optional[tuple[Path, set[str]]]
                      ) -> Optional[str]:
    if manifest is None:
        return None
    base, listed = manifest
    for f in files:
        f = Path(f)
        rel = f.relative_to(base).as_posix() if f.is_relative_to(base) else None
        if f.is_file() and rel is not None and rel not in listed:
            return (f"{f}: not written by the synthetic generator of {base} (its "
                    f"mmsam_synthetic.json does not list it): a stale sample of an earlier, larger "
                    f"synthesis or a file added by hand; delete it, or re-run mmsam data synth "
                    f"--overwrite")
    return None


def _find_manifest(roots: Iterable[Path]) -> Optional[tuple[Path, set[str]]]:
    for r in roots:
        listed = read_manifest(r)
        if listed is not None:
            return Path(r), listed
    return None


def preflight(
    datasets: dict[str, Any],
    *,
    dataset: str,
    root: Union[str, Path],
    num_classes: int,
    mode: str = "full",
    context: str = "",
    progress: bool = True,
) -> CheckReport:
    """Check the splits ``datasets`` (split -> built loader) will be read from.

    Raises one :class:`DataError` naming the file of the first problem (and how many more
    there are); returns the report when all is well. ``context`` names what else decides how
    files decode (the data set's options): the cache keeps one table per context.
    """
    check_mode(mode)
    root = Path(root)
    report = CheckReport(dataset, str(root), tuple(str(i) for i in range(num_classes)))
    if mode == "off" or not datasets:
        return report
    cache = PreflightCache(root, f"{dataset}|{num_classes}|{context}")
    try:
        for split, ds in datasets.items():
            _check_split(ds, split, dataset, root, num_classes, mode, cache, report, progress)
            if report.problems:
                break
    finally:
        cache.save()
    if report.problems:
        first = report.problems[0]
        more = len(report.problems) - 1
        tail = (f" (and {more} more problem(s) in split {first.split}: mmsam data check "
                f"--dataset {dataset} --root {root} lists them all)") if more else ""
        raise DataError(f"{first.message}{tail}")
    return report


def _check_split(ds: Any, split: str, dataset: str, root: Path, num_classes: int, mode: str,
                 cache: PreflightCache, report: CheckReport, progress: bool) -> None:
    checker = _SplitChecker(ds, split, num_classes, report, cache=cache)
    manifest = _find_manifest(dict.fromkeys([Path(getattr(ds, "root", root)), root]))
    samples = list(ds.samples)
    decode = _decode_indices(len(samples), mode)
    items: Iterable[tuple[int, Any]] = enumerate(samples)
    if progress and samples:
        from tqdm.auto import tqdm

        items = tqdm(items, total=len(samples), desc=f"preflight {dataset} {split}",
                     unit="sample", leave=False, disable=None)
    for i, sample in items:
        stale = _manifest_problem((sample.files[k] for k in checker.keys(sample)), manifest)
        if stale is not None:
            report.problems.append(_problem(split, "stale", stale))
            return
        checker.run(sample, decode=i in decode)
        if report.problems:
            return
    labelled = [s for s in samples if "label" in checker.keys(s)]
    if not labelled:
        return
    if checker.hist[:-1].sum() == 0 and checker.labels_read < len(labelled):
        for s in labelled:  # ``sample`` mode found none yet: read the other labels until one has
            checker.run(s, decode=True, only={"label"})
            if report.problems or checker.hist[:-1].sum() > 0:
                break
    if not report.problems and checker.hist[:-1].sum() == 0:
        first = Path(labelled[0].files["label"])
        report.problems.append(_problem(split, "nolabel", (
            f"{first}: no labelled pixel in any of the {len(labelled)} {split} labels of "
            f"{root} (all are 255 = unlabeled / ignore): training would run with loss 0 and "
            f"the metrics would be empty; check the label files or the data set's label "
            f"encoding")))


def _problem(split: str, kind: str, message: str) -> Problem:
    return Problem(split, kind, message.split(": ", 1)[0], message)
