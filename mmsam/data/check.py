"""Verify a dataset download: counts per split and file kind, bad files by name, class histogram.

``check_dataset("mcubes", root)`` indexes every split with the dataset's own loader (without
its fail-fast check), then decodes every file a sample needs (each modality, the label and the
files the reference loader also opens, e.g. MCubeS' ``NIR_warped_mask`` and ``SS``) and lists
each problem with the file's path: missing, unreadable/corrupt, NaN/inf, wrong size, label ids
outside the class list, and files in the data folders that no sample refers to (a renamed file
shows up as one missing and one unreferenced file). Works for every registered dataset whose
samples carry ``id`` and ``files``; labels are decoded with the loader class's own
``read_label``. Data sets whose folders also hold tiles outside their split lists (ISPRS: 33 / 38
tiles, of which MFNet uses 16 / 24) set ``partial_folders`` and skip the unreferenced-file scan.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np

from mmsam.data.datasets import check_dataset_options, get_dataset_entry
from mmsam.data.datasets.base import MultiModalDataset
from mmsam.data.datasets.common import file_hw, is_hidden
from mmsam.data.readers import read_aolp, read_image, read_npy
from mmsam.data.transforms import IGNORE_INDEX
from mmsam.errors import ConfigError, DataError

#: Split sizes of the real benchmarks (docs/datasets.md); shown beside the counts.
REFERENCE_SPLIT_SIZES: dict[str, dict[str, int]] = {
    "deliver": {"train": 3983, "val": 2005, "test": 1897},
    "muses": {"train": 1500, "val": 250, "test": 750},
    "muses_sdk": {"train": 1500, "val": 250, "test": 750},
    "mcubes": {"train": 302, "val": 96, "test": 102},  # from the paper; not verified
    # MFNet's splits (official MFNet train.py / utils.py); the loaders also take split_scheme="official".
    "vaihingen": {"train": 12, "test": 4},
    "potsdam": {"train": 18, "test": 6},
    "mmhunan": {"train": 450, "test": 50},
}
#: Sample keys that repeat another key's file (never read twice).
_ALIASES = {"rgb_ref", "camera"}


@dataclass(frozen=True)
class Problem:
    """One bad or unexpected file."""

    split: str
    kind: str      # index | missing | unreadable | size | label | unreferenced
    path: str
    message: str


@dataclass
class SplitSummary:
    """What one split holds."""

    samples: int = 0
    files: dict[str, int] = field(default_factory=dict)   # file kind -> files present
    expected: Optional[int] = None                          # the real benchmark's size


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`; :meth:`format` renders it as text."""

    dataset: str
    root: str
    classes: tuple[str, ...]
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    class_pixels: dict[str, list[int]] = field(default_factory=dict)  # split -> K counts + ignore

    @property
    def ok(self) -> bool:
        """True when no problem was found and at least one sample was indexed."""
        return not self.problems and self.num_samples > 0

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.splits.values())

    @property
    def exit_code(self) -> int:
        """0: all good; 1: problems listed; 2: nothing indexed (wrong root or dataset?)."""
        if self.num_samples == 0:
            return 2
        return 0 if not self.problems else 1

    def problem_paths(self) -> list[str]:
        return [p.path for p in self.problems]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-serialisable)."""
        return {
            "dataset": self.dataset, "root": self.root, "ok": self.ok,
            "exit_code": self.exit_code, "classes": list(self.classes),
            "splits": {k: {"samples": v.samples, "files": dict(v.files), "expected": v.expected}
                       for k, v in self.splits.items()},
            "problems": [vars(p) for p in self.problems],
            "class_pixels": {k: list(v) for k, v in self.class_pixels.items()},
        }

    def format(self, max_problems: int = 50) -> str:
        """A readable report: counts table, problems (first ``max_problems``), histogram."""
        out = [f"dataset {self.dataset} at {self.root}", ""]
        kinds = sorted({k for s in self.splits.values() for k in s.files},
                       key=lambda k: (k == "label", k))
        head = ["split", "samples", "reference"] + kinds
        rows = [[name, str(s.samples), "-" if s.expected is None else str(s.expected)]
                + [str(s.files.get(k, 0)) for k in kinds] for name, s in self.splits.items()]
        out += _table(head, rows) + [""]
        if self.problems:
            out.append(f"problems ({len(self.problems)}):")
            for p in self.problems[:max_problems]:
                out.append(f"  [{p.split}] {p.kind:<12} {p.message}")
            if len(self.problems) > max_problems:
                out.append(f"  ... and {len(self.problems) - max_problems} more")
        else:
            out.append("problems: none")
        out.append("")
        out += self._histogram()
        verdict = ("OK" if self.ok else "NO SAMPLES FOUND" if self.exit_code == 2
                   else f"{len(self.problems)} problem(s)")
        out += ["", f"result: {verdict}"]
        return "\n".join(out)

    def _histogram(self) -> list[str]:
        if not self.class_pixels:
            return ["class histogram: no labels read"]
        splits = list(self.class_pixels)
        total = np.sum([self.class_pixels[s] for s in splits], axis=0)
        labelled = max(int(total[:-1].sum()), 1)
        head = ["id", "class"] + splits + ["total", "% labelled"]
        rows = []
        for i, name in enumerate(self.classes):
            rows.append([str(i), name] + [str(self.class_pixels[s][i]) for s in splits]
                        + [str(int(total[i])), f"{100.0 * total[i] / labelled:.2f}"])
        ignored = [str(self.class_pixels[s][-1]) for s in splits]
        rows.append([str(IGNORE_INDEX), "(ignore)"] + ignored + [str(int(total[-1])), "-"])
        lines = ["class histogram (pixels):"] + _table(head, rows)
        unseen = [n for i, n in enumerate(self.classes) if total[i] == 0]
        if unseen:
            lines.append(f"classes without pixels: {', '.join(unseen)}")
        return lines


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    return [fmt(head), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _path_of(message: str) -> str:
    """DataError messages start with ``<path>: ``."""
    return message.split(": ", 1)[0]


def _label_reader(ds: Any) -> Callable[[Path], np.ndarray]:
    """The loader's own label reader (``read_label`` on its class, see ``MultiModalDataset``)."""
    reader = getattr(ds, "read_label", None)
    if reader is None or getattr(type(ds), "read_label", None) is MultiModalDataset.read_label:
        raise ConfigError(f"{type(ds).__name__}: defines no read_label(path) to check labels with")
    return reader


def _reader(ds: Any, key: str, path: Path) -> Callable[[Path], np.ndarray]:
    specs = getattr(ds, "specs", {})
    reader = specs[key].reader if key in specs else (
        read_npy if path.suffix == ".npy" else read_image)
    left = int(getattr(ds, "left_offset", 0) or 0)
    if left and reader in (read_npy, read_aolp):  # NaN only matters where the loader looks
        return functools.partial(reader, left_offset=left)
    return reader


@dataclass(frozen=True)
class FileFacts:
    """What reading one file showed: its size and, for a decoded label, its class histogram."""

    shape: tuple[int, int]
    decoded: bool = True
    hist: Optional[tuple[int, ...]] = None  # label only: K pixel counts + ignore


class FactsCache(Protocol):
    """Where :class:`_SplitChecker` keeps the facts of files already read (the preflight's cache)."""

    def get(self, path: Path, decoded: bool) -> Optional[FileFacts]: ...

    def put(self, path: Path, facts: FileFacts) -> None: ...


class _SplitChecker:
    """Reads every file of one split, collecting problems, counts and the histogram."""

    def __init__(self, ds: Any, split: str, num_classes: int, report: CheckReport,
                 cache: Optional[FactsCache] = None) -> None:
        self.ds, self.split, self.report = ds, split, report
        self.read_label = _label_reader(ds)
        self.hist = np.zeros(num_classes + 1, np.int64)
        self.labels_read = 0
        self.num_classes = num_classes
        self.cache = cache
        self.counts: dict[str, int] = defaultdict(int)
        self.resizable = set(getattr(ds, "resizable", ()) or ())
        self.left_offset = int(getattr(ds, "left_offset", 0) or 0)
        #: The loader's own rule on a decoded file (e.g. DELIVER: 8-bit only), if it has one.
        self.check_array: Optional[Callable[[str, Path, np.ndarray], None]] = getattr(
            ds, "check_array", None)
        #: Sizes a loader accepts besides the label's (DELIVER: low-res events); when it names
        #: some for a key, that key's ``resizable`` no longer means "any size".
        self.accepted_sizes: Optional[Callable[..., Sequence[tuple[int, int]]]] = getattr(
            ds, "accepted_sizes", None)

    def problem(self, kind: str, path: Union[str, Path], message: str) -> None:
        self.report.problems.append(Problem(self.split, kind, str(path), message))

    def keys(self, sample: Any) -> list[str]:
        missing = set(getattr(self.ds, "missing", ()) or ())  # zeroed modalities are not read
        keys = [k for k in sample.files if k not in _ALIASES and k not in missing]
        if not getattr(self.ds, "labelled", True):
            keys = [k for k in keys if k != "label"]
        return keys

    def inspect(self, key: str, path: Path, decode: bool = True) -> FileFacts:
        """The facts of one file (decoded, or its header only); DataError naming it if bad."""
        if self.cache is not None:
            hit = self.cache.get(path, decode)
            if hit is not None:
                return hit
        if not decode:
            facts = FileFacts(file_hw(path), decoded=False)
        elif key == "label":
            ids = self.read_label(path)
            shape = tuple(ids.shape[:2])
            ids = ids[:, self.left_offset:]  # count what the loader keeps
            valid = ids[ids != IGNORE_INDEX]
            counts = np.bincount(valid.ravel(), minlength=self.num_classes)[: self.num_classes]
            facts = FileFacts(shape, hist=tuple(int(c) for c in counts)  # type: ignore[arg-type]
                              + (int((ids == IGNORE_INDEX).sum()),))
        else:
            array = _reader(self.ds, key, path)(path)
            if self.check_array is not None:
                self.check_array(key, path, array)
            facts = FileFacts(tuple(array.shape[:2]))  # type: ignore[arg-type]
        if self.cache is not None:
            self.cache.put(path, facts)
        return facts

    def run(self, sample: Any, decode: bool = True, only: Optional[set[str]] = None) -> None:
        """Check the files of ``sample`` (decoded, or headers only), then their sizes."""
        shapes: dict[str, tuple[int, int]] = {}
        for key in self.keys(sample):
            if only is not None and key not in only:
                continue
            path = Path(sample.files[key])
            if not path.is_file():
                what = "label" if key == "label" else key
                self.problem("missing", path,
                             f"{path}: missing file ({what} of sample {sample.id})")
                continue
            self.counts[key] += 1
            try:
                facts = self.inspect(key, path, decode)
            except DataError as exc:
                kind = "label" if key == "label" and "label ids" in str(exc) else "unreadable"
                self.problem(kind, path, str(exc))
                continue
            shapes[key] = facts.shape
            if facts.hist is not None:
                self.hist += np.asarray(facts.hist[: self.num_classes + 1], np.int64)
                self.labels_read += 1
        if only is None:
            self._sizes(sample, shapes)

    def _fits(self, key: str, hw: tuple[int, int], ref: tuple[int, int]) -> bool:
        others = tuple(self.accepted_sizes(key, ref)) if self.accepted_sizes else ()
        return hw == ref or hw in others or (not others and key in self.resizable)

    def _sizes(self, sample: Any, shapes: dict[str, tuple[int, int]]) -> None:
        """Size problems, naming the odd file: the size most files fit wins (ties: the label's)."""
        if not shapes:
            return
        ref_key = "label" if "label" in shapes else next(iter(shapes))
        candidates = list(dict.fromkeys([shapes[ref_key], *shapes.values()]))
        ref = max(candidates, key=lambda c: sum(self._fits(k, hw, c) for k, hw in shapes.items()))
        if shapes[ref_key] != ref:  # the reference file is the odd one: name one that fits
            ref_key = next(k for k, hw in shapes.items() if hw == ref)
        ref_file = Path(sample.files[ref_key])
        ref_name = f"{ref_file.parent.name}/{ref_file.name}"  # MCubeS: one stem in every folder
        for key, hw in shapes.items():
            if self._fits(key, hw, ref):
                continue
            others = tuple(self.accepted_sizes(key, ref)) if self.accepted_sizes else ()
            path = sample.files[key]
            also = "".join(f" (or {h}x{w} for {key})" for h, w in others)
            self.problem("size", path, f"{path}: {hw[0]}x{hw[1]} (HxW) but {ref_name} is "
                                       f"{ref[0]}x{ref[1]}{also}")
        if self.left_offset and ref[1] <= self.left_offset:
            path = sample.files[ref_key]
            self.problem("size", path, f"{path}: only {ref[1]} columns wide; the loader drops "
                                       f"the left {self.left_offset}")


def _unreferenced(root: Path, expected: set[Path], scanned_splits: Optional[set[str]],
                  report: CheckReport) -> None:
    """Files beside expected ones (same folder, same suffix) that no sample refers to."""
    by_dir: dict[Path, set[str]] = defaultdict(set)
    for p in expected:
        by_dir[p.parent].add(p.suffix)
    for folder, suffixes in sorted(by_dir.items()):
        if not folder.is_dir():
            continue
        parts = set(folder.relative_to(root).parts) if folder.is_relative_to(root) else set()
        split = next((s for s in (scanned_splits or ()) if s in parts), None)
        if scanned_splits is not None and split is None:
            continue  # a folder shared by all splits: only judged when all splits are checked
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in suffixes and f not in expected and not is_hidden(f):
                report.problems.append(Problem(
                    split or "-", "unreferenced", str(f),
                    f"{f}: not referenced by any sample (renamed, or not in a split list?)"))


def _misplaced(ds: Any, wanted: set[str], report: CheckReport) -> None:
    """Files the loader's layout does not reach (wrong folder depth), one problem each."""
    root = Path(getattr(ds, "root", "."))
    for f in ds.misplaced_files() if hasattr(ds, "misplaced_files") else []:
        parts = f.relative_to(root).parts if f.is_relative_to(root) else f.parts
        split = next((p for p in parts if p in getattr(ds, "splits", ())), "-")
        if split != "-" and split not in wanted:
            continue
        rel = "/".join(parts)
        report.problems.append(Problem(
            split, "layout", str(f), f"{f}: not at the layout's folder depth, so no sample reads "
                                     f"it ({rel}; move it or delete it)"))


def check_dataset(
    name: str,
    root: Union[str, Path],
    *,
    splits: Optional[Sequence[str]] = None,
    modalities: Optional[Sequence[str]] = None,
    options: Optional[dict[str, Any]] = None,
    progress: bool = False,
) -> CheckReport:
    """Verify the dataset ``name`` under ``root`` and return a :class:`CheckReport`.

    Args:
        name: a registered dataset (``mmsam.data.datasets.list_datasets()``).
        root: the dataset root in the benchmark's own layout.
        splits: splits to check (default: all of the dataset's splits). Folders shared by all
            splits (MCubeS) are scanned for unreferenced files only when all are checked.
        modalities: modalities to check (default: the dataset's default modalities).
        options: extra keyword arguments of the dataset (``split_scheme``, ``dsm_source``, ...),
            as ``data.dataset_options``; ConfigError naming an unknown key.
        progress: show a progress bar per split.

    Raises ConfigError for an unknown dataset, split, modality or option; every data problem
    is reported, not raised.
    """
    entry = get_dataset_entry(name)
    options = check_dataset_options(name, dict(options or {}),
                                    set_by="mmsam data check itself (--root, --splits, --modalities)")
    wanted = tuple(entry.splits if splits is None else splits)  # the loader validates names
    mods = tuple(entry.default_modalities if modalities is None else modalities)
    root = Path(root)
    report = CheckReport(name, str(root), entry.classes)
    expected_files: set[Path] = set()
    ds_root = root
    partial = False
    misplaced_done = False
    for split in wanted:
        summary = SplitSummary(expected=REFERENCE_SPLIT_SIZES.get(name, {}).get(split))
        report.splits[split] = summary
        try:
            ds = entry.factory(root=root, split=split, modalities=mods, check=False, **options)
        except DataError as exc:
            report.problems.append(Problem(split, "index", _path_of(str(exc)), str(exc)))
            continue
        except TypeError as exc:  # a factory taking **kwargs passed on an unknown option
            if "unexpected keyword" not in str(exc) or not options:
                raise
            raise ConfigError(f"dataset {name!r}: {exc}; options given: "
                              f"{', '.join(options)}") from None
        if not misplaced_done:
            misplaced_done = True
            _misplaced(ds, set(wanted), report)
        ds_root = Path(getattr(ds, "root", root))
        partial = partial or bool(getattr(ds, "partial_folders", False))
        classes = tuple(getattr(ds, "classes", None) or entry.classes)  # the folder set: its classes option
        report.classes = classes
        checker = _SplitChecker(ds, split, len(classes), report)
        samples = ds.samples
        if progress:
            from tqdm.auto import tqdm

            samples = tqdm(samples, desc=f"check {name} {split}", unit="sample")
        for sample in samples:
            checker.run(sample)
            expected_files.update(Path(p) for k, p in sample.files.items())
        summary.samples = len(ds.samples)
        summary.files = dict(sorted(checker.counts.items()))
        if checker.hist.any():
            report.class_pixels[split] = checker.hist.tolist()
    all_checked = set(entry.splits) <= set(wanted)
    if not partial:
        _unreferenced(ds_root, expected_files, None if all_checked else set(wanted), report)
    return report
