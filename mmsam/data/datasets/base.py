"""The base class of the benchmark loaders: the base class walks, subclasses declare.

A loader declares what its data set is (``name``, ``splits``, ``provided_modalities``,
``default_modalities``, ``classes``, ``palette``; the optional ``condition_names`` /
``case_names`` filters; ``reference_key`` for the size check), how to read its labels
(``read_label``) and whether a folder holds it (``has_data``), and implements ``_index()`` (its
layout: the list of samples, each with an ``id`` and a ``files`` mapping of modality name
(+ "label") -> path) and ``__getitem__`` (its decoding, ending in
:meth:`MultiModalDataset._item`). The shared constructor checks the keyword protocol ``root,
split, modalities, conditions, cases, transform, check, missing`` (see ``docs/contracts.md``,
"Adding a data set"); a loader without extra options needs no constructor of its own. The class
decorator :func:`mmsam.data.datasets.registry.register_dataset` registers a loader under its
``registry_name`` from these declarations.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mmsam.data.datasets.common import (
    PathLike,
    Transform,
    assemble_item,
    check_file,
    check_modalities,
    check_names,
    file_hw,
    specs_for,
)
from mmsam.data.modalities import ModalitySpec, validate_modalities
from mmsam.data.readers import image_size
from mmsam.errors import ConfigError, DataError


class MultiModalDataset(Dataset):
    """Shared protocol of the loaders; items follow ``docs/contracts.md``.

    Subclasses declare the class attributes below and implement ``_index()``, ``__getitem__``
    and ``read_label``; one with extra options has its own ``__init__`` (the protocol, then its
    options, stored before calling ``super().__init__``).
    """

    #: The name the registry lists it under (``data.dataset``); "" for a class not registered.
    registry_name: str = ""
    #: Data set name in messages ("unknown DELIVER split", "MCubeS has no conditions").
    name: str = ""
    #: The verb after ``name`` in messages ("have" for a plural name).
    has: str = "has"
    splits: tuple[str, ...] = ("train", "val", "test")
    #: ConfigError message for an unknown split (fields name, split, valid).
    unknown_split: str = "unknown {name} split {split!r}; valid: {valid}"
    #: The splits the data set ships (``mmsam data check`` reads them); None: ``splits``.
    data_splits: Optional[tuple[str, ...]] = None
    provided_modalities: tuple[str, ...] = ()
    #: The modalities read when ``modalities`` is None (and the registry's default).
    default_modalities: tuple[str, ...] = ()
    #: Modality -> the registered spec it is read with, where the name differs.
    spec_names: dict[str, str] = {}
    #: Valid ``conditions`` (checked by name); None: the data set has none (must be empty).
    condition_names: Optional[tuple[str, ...]] = None
    #: Valid ``cases`` (checked by name); None: none exist (None or ["normal"]).
    case_names: Optional[tuple[str, ...]] = None
    #: Appended to "<name> has no sensor-failure cases" (e.g. where to filter instead).
    cases_note: str = ""
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    #: The classes / palette come from the ``classes`` / ``palette`` options (the folder set).
    classes_from_options: bool = False
    #: The ``files`` key every other file's header size must match; None: sizes are not
    #: compared (each file only has to exist and have a readable header).
    reference_key: Optional[str] = "label"
    #: How messages call the reference file ("the label" -> "but the label x.png is HxW").
    reference_role: str = "the label"
    #: ``files`` key -> its name in messages (other keys: "modality '<key>'").
    file_roles: dict[str, str] = {"label": "label"}
    #: Modalities whose size may differ from the reference (the loader resizes them).
    resizable: tuple[str, ...] = ()
    #: Goes before the size in size-mismatch messages (e.g. "image is ").
    size_prefix: str = ""
    #: The name ``repr`` shows (None: the class name).
    repr_name: Optional[str] = None

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        modalities: Optional[Sequence[str]] = None,
        conditions: Optional[Sequence[str]] = None,
        cases: Optional[Sequence[str]] = None,
        transform: Optional[Transform] = None,
        check: bool = True,
        missing: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if modalities is None:
            modalities = self.default_modalities
        if split not in self.splits:
            raise ConfigError(self.unknown_split.format(name=self.name, split=split,
                                                        valid=", ".join(self.splits)))
        self.split = split
        self.conditions = self._check_conditions(conditions)
        self.cases = self._check_cases(cases)
        self.modalities, self.missing = self._check_modalities(modalities, missing)
        self.specs: dict[str, ModalitySpec] = specs_for(self.modalities, self.spec_names)
        self.root = self.resolve_root(root)
        self.transform = transform
        self.samples = self._index()
        if check:
            self.check()

    # -- argument checks (override for other rules) ----------------------------------------
    def _check_conditions(self, conditions: Optional[Sequence[str]]) -> Optional[tuple[str, ...]]:
        if self.condition_names is not None:
            return check_names(conditions, self.condition_names, f"{self.name} conditions")
        if conditions:
            raise ConfigError(f"{self.name} {self.has} no conditions; "
                              f"got conditions={list(conditions)}")
        return None

    def _check_cases(self, cases: Optional[Sequence[str]]) -> Optional[tuple[str, ...]]:
        if self.case_names is not None:
            return check_names(cases, self.case_names, f"{self.name} cases")
        if cases and set([cases] if isinstance(cases, str) else cases) != {"normal"}:
            raise ConfigError(f"{self.name} has no sensor-failure cases{self.cases_note}; "
                              f"got cases={cases}")
        return None

    def _check_modalities(self, modalities: Sequence[str], missing: Sequence[str]
                          ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return check_modalities(self.name, modalities, self.provided_modalities, missing)

    @classmethod
    def resolve_root(cls, root: PathLike) -> Path:
        """The data set folder ``root`` names (override to accept a parent folder)."""
        return Path(root)

    @classmethod
    def has_data(cls, root: PathLike) -> bool:
        """True if ``root`` holds the data set (a synthetic set is generated otherwise); by
        default: ``root`` is a non-empty folder."""
        r = Path(root)
        return r.is_dir() and any(r.iterdir())

    def read_label(self, path: PathLike) -> np.ndarray:
        """The label file ``path`` as HxW int64 train ids (255 = ignore); DataError naming it.

        ``mmsam data check`` reads labels with it; a loader whose encoding does not depend on
        its options makes it a staticmethod."""
        raise NotImplementedError(f"{type(self).__name__} does not define read_label")

    # -- layout (subclasses) ----------------------------------------------------------------
    def _index(self) -> list[Any]:
        """The split's samples, each with ``id`` and ``files``; DataError if there are none."""
        raise NotImplementedError

    # -- validation -------------------------------------------------------------------------
    def _role(self, key: str) -> str:
        return self.file_roles.get(key, f"modality {key!r}")

    def _needed(self, s: Any) -> list[str]:
        """The ``files`` keys of ``s`` to check (besides the reference), in order."""
        return [k for k in s.files if k != self.reference_key and k not in self.missing]

    def _reference_hw(self, s: Any) -> tuple[int, int]:
        """(H, W) of the reference file of ``s`` (DataError if it is missing)."""
        path = s.files[self.reference_key]
        if not path.is_file():
            raise DataError(f"{path}: missing file for {self._role(self.reference_key)} of "
                            f"sample {s.id}")
        return file_hw(path)

    def _check_sample(self, s: Any) -> Optional[tuple[int, int]]:
        """Existence and header size of the files of ``s``; returns the reference size."""
        if self.reference_key is None:
            for key in self._needed(s):
                path = s.files[key]
                if not path.is_file():
                    raise DataError(f"{path}: missing {self._role(key)} of sample {s.id}")
                image_size(path)
            return None
        expected = self._reference_hw(s)
        ref = f"{self.reference_role} {s.files[self.reference_key].name}"
        for key in self._needed(s):
            check_file(s.files[key], self._role(key), s.id, expected, ref,
                       match_size=key not in self.resizable, size_prefix=self.size_prefix)
        return expected

    def accepted_sizes(self, key: str, hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
        """Sizes other than the reference size ``hw`` that ``mmsam data check`` accepts for the
        file ``key`` (none by default; keys in ``resizable`` accept any size)."""
        return ()

    def misplaced_files(self) -> list[Path]:
        """Files in the data set's folders that its layout does not reach (e.g. images one folder
        too deep); ``mmsam data check`` reports them. None by default."""
        return []

    def check(self) -> None:
        """Validate every sample's files (existence and header size); DataError on the first."""
        for s in self.samples:
            self._check_sample(s)

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def _to_read(self) -> list[str]:
        """The modalities an item reads (the selected ones not listed as missing)."""
        return [m for m in self.modalities if m not in self.missing]

    @staticmethod
    def _match(path: Path, img: torch.Tensor, label: torch.Tensor, after: str = ""
               ) -> torch.Tensor:
        """``img`` if its size is the label's; DataError naming ``path`` otherwise."""
        if tuple(img.shape[-2:]) != tuple(label.shape):
            raise DataError(f"{path}: decoded to {tuple(img.shape[-2:])}{after} but the label "
                            f"gives {tuple(label.shape)}")
        return img

    def _item(self, images: dict[str, torch.Tensor], label: torch.Tensor, id: str,
              condition: str = "all", case: str = "normal") -> dict[str, Any]:
        """The final item: transform, normalise, zero the missing modalities (contracts.md)."""
        meta = {"id": id, "condition": condition, "case": case}
        return assemble_item(images, label, self.modalities, self.missing, self.specs,
                             self.transform, meta)

    def _repr_fields(self) -> dict[str, Any]:
        return {"root": str(self.root), "split": self.split,
                "modalities": list(self.modalities)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._repr_fields().items())
        return f"{self.repr_name or type(self).__name__}({fields}, n={len(self)})"


@dataclass(frozen=True)
class ImageMaskSample:
    """An image and its mask (the single-image sets)."""

    id: str
    case: str
    image: Path
    label: Path

    @property
    def files(self) -> dict[str, Path]:
        """Modality name (+ "label") -> path, as ``mmsam data check`` reads samples."""
        return {"rgb": self.image, "label": self.label}


class SingleImageDataset(MultiModalDataset):
    """A set with one modality, rgb, that cannot be missing; sizes are not cross-checked."""

    provided_modalities = ("rgb",)
    reference_key = None
    file_roles = {"rgb": "image", "label": "mask"}

    def _check_modalities(self, modalities: Sequence[str], missing: Sequence[str]
                          ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        mods = validate_modalities(modalities)
        if mods != ("rgb",):
            raise ConfigError(f"{self.name} {self.has} one modality, rgb; got {list(mods)}")
        if missing:
            raise ConfigError(f"the only modality (rgb) cannot be missing; "
                              f"got missing={list(missing)}")
        return mods, ()

    @property
    def spec(self) -> ModalitySpec:
        return self.specs["rgb"]
