"""Dataset registry: one entry per benchmark layout.

Every factory accepts the keyword protocol ``root, split, modalities, conditions, cases,
transform, check, missing`` (a dataset may ignore filters it has no notion of) and returns a
``torch.utils.data.Dataset`` whose items follow ``docs/contracts.md``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from torch.utils.data import Dataset

from mmsam.data.datasets.binary_folder import (
    BINARY_CLASSES,
    BINARY_PALETTE,
    BinaryFolderDataset,
    binary_folder_has_data,
)
from mmsam.data.datasets.common import visible_glob
from mmsam.data.datasets.deliver import (
    DELIVER_CLASSES,
    DELIVER_PALETTE,
    DeliverDataset,
)
from mmsam.data.datasets import isprs as _isprs, mcubes as _mcubes, mmhunan as _mmhunan
from mmsam.data.datasets import muses as _muses
from mmsam.data.datasets.isprs import ISPRSDataset, PotsdamDataset, VaihingenDataset
from mmsam.data.datasets.mmhunan import MMHunanDataset
from mmsam.data.datasets.folder import FolderDataset, folder_has_data, register_folder_modalities
from mmsam.data.datasets.mcubes import MCubeSDataset
from mmsam.data.datasets.muses import MusesDataset, MusesSDKDataset
from mmsam.data.datasets import trans10k as _trans10k
from mmsam.data.datasets.trans10k import Trans10KDataset
from mmsam.errors import ConfigError


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its factory, classes and (optional) synthetic generator."""

    name: str
    factory: Callable[..., Dataset]
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    default_modalities: tuple[str, ...]
    splits: tuple[str, ...] = ("train", "val", "test")
    generator: Optional[Callable[..., dict]] = None          # generator(root, **kw) -> summary
    has_data: Optional[Callable[[Union[str, Path]], bool]] = None  # root holds samples?
    ignore_index: int = 255
    #: Called with (modalities, dataset_options) before anything else reads them (the folder
    #: data set registers its own modalities there); returns modality -> registered spec name.
    prepare: Optional[Callable[[Any, dict], dict[str, str]]] = None
    #: The classes / palette come from ``dataset_options`` (``classes``, ``palette``).
    classes_from_options: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(entry: DatasetEntry, *, overwrite: bool = False) -> DatasetEntry:
    """Add a dataset entry; ConfigError if the name is taken (unless overwrite)."""
    if not overwrite and entry.name in _DATASETS and _DATASETS[entry.name] != entry:
        raise ConfigError(f"dataset {entry.name!r} is already registered")
    _DATASETS[entry.name] = entry
    return entry


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_DATASETS)


def get_dataset_entry(name: str) -> DatasetEntry:
    """The entry for ``name``; ConfigError listing the known names otherwise."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}"
        ) from None


#: Keyword arguments every factory takes (set by its caller, not passed as dataset options).
DATASET_PROTOCOL = ("root", "split", "modalities", "conditions", "cases", "transform", "check",
                    "missing")


def check_dataset_options(name: str, options: dict[str, Any],
                          set_by: str = "the data module itself; use its own options "
                                        "(root, modalities, conditions, ...)") -> dict[str, Any]:
    """``options`` if dataset ``name`` takes them all as extra keyword arguments.

    ConfigError (one line) for a protocol key (``set_by`` says who sets it) or a key the
    factory does not accept, listing the ones it does. A factory taking ``**kwargs`` is
    not checked here (its class raises for an unknown key).
    """
    if not isinstance(options, dict):
        raise ConfigError(f"dataset_options must be a mapping, got {options!r}")
    own = [k for k in options if k in DATASET_PROTOCOL]
    if own:
        raise ConfigError(f"dataset_options {own} are set by {set_by}")
    params = inspect.signature(get_dataset_entry(name).factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [k for k in params if k not in DATASET_PROTOCOL]
        unknown = [k for k in options if k not in params]
        if unknown:
            raise ConfigError(f"dataset {name!r} has no option {unknown}; it accepts "
                              f"{', '.join(accepted) or 'none'}")
    return dict(options)


def create_dataset(name: str, **kwargs: Any) -> Dataset:
    """Build dataset ``name`` with the factory's keyword arguments."""
    return get_dataset_entry(name).factory(**kwargs)


def _deliver_has_data(root: Union[str, Path]) -> bool:
    return bool(visible_glob(root, "img/*/*/*/*.png"))


def _deliver_generator(root: Union[str, Path], **kw: Any) -> dict:
    from mmsam.data.synthetic.deliver import generate_deliver

    return generate_deliver(root, **kw)


register_dataset(DatasetEntry(
    name="deliver",
    factory=DeliverDataset,
    classes=DELIVER_CLASSES,
    palette=DELIVER_PALETTE,
    default_modalities=("rgb", "depth", "event", "lidar"),
    generator=_deliver_generator,
    has_data=_deliver_has_data,
))

# MCubeS and MUSES (issue #8); MUSES is registered twice, once per layout it reads.
register_dataset(DatasetEntry(
    name="mcubes", factory=MCubeSDataset, classes=_mcubes.MCUBES_CLASSES,
    palette=_mcubes.MCUBES_PALETTE, default_modalities=("rgb", "aolp", "dolp", "nir"),
    splits=("train", "val", "test"), generator=_mcubes.generate, has_data=_mcubes.has_data,
))
for _name, _factory in (("muses", MusesDataset), ("muses_sdk", MusesSDKDataset)):
    register_dataset(DatasetEntry(
        name=_name, factory=_factory, classes=_muses.MUSES_CLASSES,
        palette=_muses.MUSES_PALETTE, default_modalities=("rgb", "event", "lidar"),
        generator=_muses.generate, has_data=_muses.has_data,
    ))

# Remote sensing (issue #6), as MFNet reads them. ISPRS and MMHunan have no validation split:
# the loaders serve split="val" from the test tiles (MFNet validates on its test set).
register_dataset(DatasetEntry(
    name="vaihingen", factory=VaihingenDataset, classes=_isprs.ISPRS_CLASSES,
    palette=_isprs.ISPRS_PALETTE, default_modalities=VaihingenDataset.default_modalities,
    splits=("train", "test"), generator=_isprs.generate_vaihingen,
    has_data=_isprs.vaihingen_has_data,
))
register_dataset(DatasetEntry(
    name="potsdam", factory=PotsdamDataset, classes=_isprs.ISPRS_CLASSES,
    palette=_isprs.ISPRS_PALETTE, default_modalities=PotsdamDataset.default_modalities,
    splits=("train", "test"), has_data=_isprs.potsdam_has_data,
))
register_dataset(DatasetEntry(
    name="mmhunan", factory=MMHunanDataset, classes=_mmhunan.MMHUNAN_CLASSES,
    palette=_mmhunan.MMHUNAN_PALETTE, default_modalities=("rgb", "dsm"),
    splits=("train", "test"), has_data=_mmhunan.has_data,
))

register_dataset(DatasetEntry(
    name="binary_folder",
    factory=BinaryFolderDataset,
    classes=BINARY_CLASSES,
    palette=BINARY_PALETTE,
    default_modalities=("rgb",),
    has_data=binary_folder_has_data,
))

# Trans10K, the multi-class sets of Conv-LoRA (issue #7); one entry per version
for _v, _factory in ((1, _trans10k.trans10k_v1), (2, _trans10k.trans10k_v2)):
    register_dataset(DatasetEntry(
        name=f"trans10k_v{_v}", factory=_factory,
        classes=_trans10k.TRANS10K_V1_CLASSES if _v == 1 else _trans10k.TRANS10K_V2_CLASSES,
        palette=_trans10k.TRANS10K_V1_PALETTE if _v == 1 else _trans10k.TRANS10K_V2_PALETTE,
        default_modalities=("rgb",), has_data=_trans10k.trans10k_has_data,
    ))

def _folder_prepare(modalities: Any, options: dict) -> dict[str, str]:
    return register_folder_modalities(list(modalities or ("rgb",)), options.get("modality_stats"))


register_dataset(DatasetEntry(
    name="folder", factory=FolderDataset, classes=(), palette=(), default_modalities=("rgb",),
    has_data=folder_has_data, prepare=_folder_prepare, classes_from_options=True,
))

__all__ = [
    "BinaryFolderDataset", "FolderDataset",
    "DatasetEntry", "DeliverDataset", "ISPRSDataset", "MCubeSDataset", "MMHunanDataset",
    "MusesDataset", "MusesSDKDataset", "PotsdamDataset", "Trans10KDataset", "VaihingenDataset",
    "DATASET_PROTOCOL", "check_dataset_options", "create_dataset", "get_dataset_entry",
    "list_datasets", "register_dataset",
]
