"""The dataset registry: one entry per benchmark layout, read from the loader class.

A loader registers itself with the class decorator :func:`register_dataset`; the entry's fields
are the class's own declarations (``registry_name``, ``classes``, ``palette``,
``default_modalities``, ``data_splits``, ``has_data``, ``prepare``, ``classes_from_options``),
so nothing is declared twice. Every factory accepts the keyword protocol ``root, split,
modalities, conditions, cases, transform, check, missing`` (a dataset may ignore filters it has
no notion of) and returns a ``torch.utils.data.Dataset`` whose items follow ``docs/contracts.md``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from torch.utils.data import Dataset

from mmsam.errors import ConfigError


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its factory (the loader class), classes and layout helpers."""

    name: str
    factory: Callable[..., Dataset]
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    default_modalities: tuple[str, ...]
    splits: tuple[str, ...] = ("train", "val", "test")
    has_data: Optional[Callable[[Union[str, Path]], bool]] = None  # root holds samples?
    #: Called with (modalities, dataset_options) before anything else reads them (the folder
    #: data set registers its own modalities there); returns modality -> registered spec name.
    prepare: Optional[Callable[[Any, dict], dict[str, str]]] = None
    #: The classes / palette come from ``dataset_options`` (``classes``, ``palette``).
    classes_from_options: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)


_DATASETS: dict[str, DatasetEntry] = {}
T = TypeVar("T")


def entry_of(cls: type) -> DatasetEntry:
    """The entry a loader class declares (see the module docstring)."""
    name = getattr(cls, "registry_name", "")
    if not name:
        raise ConfigError(f"{cls.__name__}: set registry_name to register it as a dataset")
    return DatasetEntry(
        name=name, factory=cls, classes=tuple(cls.classes), palette=tuple(cls.palette),
        default_modalities=tuple(cls.default_modalities),
        splits=tuple(cls.data_splits or cls.splits), has_data=cls.has_data,
        prepare=getattr(cls, "prepare", None),
        classes_from_options=bool(getattr(cls, "classes_from_options", False)),
    )


def register_dataset(target: T, *, overwrite: bool = False) -> T:
    """Register a loader class (as a class decorator; its entry is :func:`entry_of`) or a
    ready :class:`DatasetEntry`; returns ``target``. ConfigError if the name is taken by
    another entry (unless ``overwrite``)."""
    entry = target if isinstance(target, DatasetEntry) else entry_of(target)  # type: ignore[arg-type]
    if not overwrite and entry.name in _DATASETS and _DATASETS[entry.name] != entry:
        raise ConfigError(f"dataset {entry.name!r} is already registered")
    _DATASETS[entry.name] = entry
    return target


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
    accepted = dataset_options(get_dataset_entry(name).factory)
    if accepted is not None:
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise ConfigError(f"dataset {name!r} has no option {unknown}; it accepts "
                              f"{', '.join(accepted) or 'none'}")
    return dict(options)


def dataset_options(factory: Callable[..., Any]) -> Optional[list[str]]:
    """The options a dataset takes besides the protocol arguments: the keyword parameters of its
    ``__init__`` and, where that forwards ``**common`` to its parent, of the parents' too. None
    when the chain ends in ``**kwargs`` taken by no class (nothing to check against)."""
    inits = [c.__init__ for c in getattr(factory, "__mro__", ()) if "__init__" in vars(c)] or [factory]
    names: list[str] = []
    for init in inits:
        params = inspect.signature(init).parameters
        names += [k for k, p in params.items() if k not in names and k != "self" and k not in DATASET_PROTOCOL
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return names
    return None


def create_dataset(name: str, **kwargs: Any) -> Dataset:
    """Build dataset ``name`` with the factory's keyword arguments."""
    return get_dataset_entry(name).factory(**kwargs)
