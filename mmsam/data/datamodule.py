"""LightningDataModule over any registered multi-modal dataset (DELIVER by default).

Train: random flip + random resized crop to ``train_size`` (scale ``scale_range``), or with
``scale_range: null`` a plain random crop at native resolution then the flips;
val/test/predict: resize to ``eval_size``, or native size with ``eval_size: null`` (for
sliding-window evaluation of large tiles; predict uses the test split). With
``train_samples_per_epoch`` an epoch is that many random draws (with replacement) of training
items, e.g. MFNet's 1000 iterations of random crops of random tiles. With
``synthesize=True`` and an empty ``root``, the dataset's synthetic generator fills it first.
Before the first step, ``setup`` checks every file of the splits the stage reads
(``preflight``, see :mod:`mmsam.data.preflight`) and refuses bad data in one line.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from mmsam.data.datasets import DATASET_PROTOCOL, check_dataset_options, get_dataset_entry
from mmsam.data.modalities import validate_modalities
from mmsam.data.sampling import ResumableDataLoader, ResumableSampler, SeededDataset
from mmsam.data.synthetic import get_generator
from mmsam.data.transforms import IGNORE_INDEX, eval_transform, train_transform
from mmsam.errors import ConfigError, DataError


class MultiModalDataModule(L.LightningDataModule):
    """Builds train/val/test/predict loaders whose batches follow ``docs/contracts.md``.

    Args:
        dataset: registered dataset name (``mmsam.data.datasets.list_datasets()``).
        root: dataset root in the benchmark's own layout (default
            ``data/synthetic_<dataset>``).
        modalities: modality names, in the order the batch lists them (default: the
            dataset's own, e.g. rgb/depth/event/lidar for DELIVER, rgb/aolp/dolp/nir for MCubeS).
        train_size: training crop size (square).
        eval_size: evaluation resize (square); None keeps each image's native size (use
            eval_batch_size 1 when sizes differ, and the task's sliding-window evaluation).
        scale_range: random rescale range of the training crop; None: a plain random crop at
            native resolution (no rescale).
        batch_size: training batch size.
        eval_batch_size: val/test/predict batch size.
        num_workers: DataLoader workers.
        synthesize: if ``root`` holds no data, generate the synthetic set there first.
        synth_num_train: synthetic training samples (None: the generator's default).
        synth_num_val: synthetic validation samples (None: the generator's default).
        synth_num_test: synthetic test samples (None: the generator's default).
        synth_size: synthetic image side in pixels (None: the generator's default).
        synth_seed: synthetic generator seed.
        conditions: keep only these conditions (DELIVER: cloud, fog, night, rain, sun;
            MUSES: clear, fog, rain, snow, day, night or pairs such as ``fog_night``).
        cases: keep only these cases (DELIVER: a condition, a failure such as
            ``motionblur``, or ``normal``).
        missing_modalities: modalities zeroed with ``present`` False in val/test/predict.
        flip_prob: probability of the training horizontal flip.
        check: with ``preflight: off``, validate every file of a split (existence, header
            size) when it is built; the preflight checks that and more otherwise.
        pin_memory: DataLoader ``pin_memory``.
        train_samples_per_epoch: training items per epoch, drawn at random with replacement
            (None: one pass over the training set in random order).
        vflip_prob: probability of the training vertical flip.
        dataset_options: extra keyword arguments of the dataset (e.g. ``eroded_test_labels``,
            ``train_window`` for ISPRS), given to every split.
        preflight: before the first step, check every file of the splits the stage reads:
            ``full`` decodes each (cached by path, size and mtime), ``sample`` reads every
            header and decodes a sample of each split, ``off`` only the loaders' header check
            (``check``). Bad files, a split without a labelled pixel and stale synthetic
            samples are refused in one line naming the file.
    """

    def __init__(
        self,
        dataset: str = "deliver",
        root: Optional[str] = None,
        modalities: Optional[Sequence[str]] = None,
        train_size: int = 1024,
        eval_size: Optional[int] = 1024,
        scale_range: Optional[tuple[float, float]] = (0.5, 2.0),
        batch_size: int = 2,
        eval_batch_size: int = 1,
        num_workers: int = 2,
        synthesize: bool = False,
        synth_num_train: Optional[int] = None,
        synth_num_val: Optional[int] = None,
        synth_num_test: Optional[int] = None,
        synth_size: Optional[int] = None,
        synth_seed: int = 0,
        conditions: Optional[Sequence[str]] = None,
        cases: Optional[Sequence[str]] = None,
        missing_modalities: Sequence[str] = (),
        flip_prob: float = 0.5,
        check: bool = True,
        pin_memory: bool = False,
        train_samples_per_epoch: Optional[int] = None,
        vflip_prob: float = 0.0,
        dataset_options: Optional[dict[str, Any]] = None,
        preflight: str = "full",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.entry = get_dataset_entry(dataset)
        #: modality -> the registered spec its files are read and normalised with
        self.spec_names: dict[str, str] = dict(getattr(self.entry.factory, "spec_names", {}) or {})
        if self.entry.prepare is not None:
            if not isinstance(dataset_options or {}, dict):
                raise ConfigError(f"dataset_options must be a mapping, got {dataset_options!r}")
            self.spec_names.update(self.entry.prepare(modalities, dict(dataset_options or {})) or {})
        self.modalities = validate_modalities(
            list(self.entry.default_modalities if modalities is None else modalities))
        self.missing_modalities = tuple(missing_modalities)
        unknown = [m for m in self.missing_modalities if m not in self.modalities]
        if unknown:
            raise ConfigError(f"missing_modalities {unknown} are not among modalities "
                              f"{list(self.modalities)}")
        self._generator = get_generator(dataset)
        if synthesize and self._generator is None:
            raise ConfigError(f"dataset {dataset!r} has no synthetic generator; "
                              f"set synthesize: false and point root at the real data")
        for name, value in (("train_size", train_size), ("eval_size", eval_size),
                            ("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                            ("train_samples_per_epoch", train_samples_per_epoch)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
        for name, value in (("flip_prob", flip_prob), ("vflip_prob", vflip_prob)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        self.dataset_options = self._check_dataset_options(dataset, dataset_options or {})
        from mmsam.data.preflight import check_mode

        self.preflight_mode = check_mode(preflight)
        self._preflighted: set[str] = set()
        if (eval_size is None and scale_range is not None and tuple(scale_range) == (1.0, 1.0)
                and not self.dataset_options.get("train_window")):
            warnings.warn("scale_range [1, 1] still rescales each training image so its short "
                          "side equals train_size; for plain crops at native resolution (as "
                          "evaluated with eval_size: null) set scale_range: null or the "
                          "dataset's train_window", UserWarning, stacklevel=2)
        self.root = Path(root if root is not None else f"data/synthetic_{dataset}")
        self.datasets: dict[str, Dataset] = {}

    _PROTOCOL = DATASET_PROTOCOL

    def _check_dataset_options(self, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
        """ConfigError for options the data module sets itself or the dataset does not take."""
        return check_dataset_options(dataset, options)

    # -- metadata --------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.entry.classes_from_options:
            classes = self.dataset_options.get("classes")
            if not classes or isinstance(classes, str):
                raise ConfigError(f"dataset {self.hparams.dataset!r} needs data.dataset_options.classes: the class names in id order")
            return tuple(str(c) for c in classes)
        return self.entry.classes

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        if self.entry.classes_from_options:
            pal = self.dataset_options.get("palette")
            if pal:
                return tuple(tuple(int(v) for v in c) for c in pal)
            rng = np.random.default_rng(0)  # a fixed colour per class, black for class 0
            colours = rng.integers(32, 256, size=(self.num_classes, 3)).tolist()
            colours[0] = [0, 0, 0]
            return tuple(tuple(c) for c in colours)
        return self.entry.palette

    @property
    def ignore_index(self) -> int:
        return IGNORE_INDEX

    # -- data ------------------------------------------------------------------------------
    def _has_data(self) -> bool:
        if self.entry.has_data is not None:
            return self.entry.has_data(self.root)
        return self.root.is_dir() and any(self.root.iterdir())

    def prepare_data(self) -> None:
        """Generate the synthetic set if asked to and ``root`` holds no data yet."""
        hp = self.hparams
        if not hp.synthesize or self._has_data():
            return
        from mmsam.data.synthetic.common import visible_entries

        entries = visible_entries(self.root)
        if entries:  # never write over a user's files
            raise DataError(f"{self.root}: data.synthesize is true but this data.root holds no "
                            f"{hp.dataset} data and is not empty ({len(entries)} entries, e.g. "
                            f"{entries[0].name!r}); the synthetic set is written only into an "
                            f"empty or new folder: set data.root to one")
        given = {"num_train": hp.synth_num_train, "num_val": hp.synth_num_val,
                 "num_test": hp.synth_num_test, "size": hp.synth_size}
        kw = {k: v for k, v in given.items() if v is not None}  # None: the generator's default
        shown = ", ".join(f"{k} {v}" for k, v in kw.items()) or "default sizes"
        print(f"[mmsam] {self.root} holds no {hp.dataset} data: generating the synthetic set "
              f"({shown}, seed {hp.synth_seed})")
        summary = self._generator(self.root, seed=hp.synth_seed, progress=True, **kw)
        print(f"[mmsam] wrote {summary.get('files', '?')} files to {self.root}")

    def _build(self, split: str, train: bool) -> Dataset:
        hp = self.hparams
        transform = (train_transform(hp.train_size, hp.scale_range, hp.flip_prob, hp.vflip_prob)
                     if train else eval_transform(hp.eval_size))
        return self.entry.factory(
            root=self.root, split=split, modalities=self.modalities,
            conditions=hp.conditions, cases=hp.cases, transform=transform,
            check=hp.check and self.preflight_mode == "off",
            missing=() if train else self.missing_modalities, **self.dataset_options)

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the datasets the stage needs (fit: train+val, validate, test, predict), then
        check their files (``preflight``)."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("predict",), None: ("train", "val", "test", "predict")}[stage]
        self._build_keys(wanted)
        self.preflight(wanted)

    def _build_keys(self, keys: Sequence[str]) -> None:
        if self.hparams.synthesize and not self._has_data():
            self.prepare_data()
        if not self.root.exists():
            raise DataError(f"{self.root}: dataset root does not exist (set data.root, or "
                            f"data.synthesize: true to generate the synthetic set)")
        for key in keys:
            if key not in self.datasets:
                split = "test" if key == "predict" else key
                self.datasets[key] = self._build(split, train=key == "train")

    def preflight(self, keys: Sequence[str] = ("train", "val", "test")) -> None:
        """Check every file of the splits ``keys`` (train, val, test, predict) name, once per
        split, building their datasets if needed; DataError naming the first bad file.

        ``setup`` calls it with the stage's splits; ``mmsam fit`` also with ``test`` when it
        tests after training, so that a bad test file stops it before the first step.
        """
        from mmsam.data.preflight import preflight

        self._build_keys(keys)
        todo: dict[str, Dataset] = {}
        for key in keys:
            split = "test" if key == "predict" else key
            if split not in self._preflighted and split not in todo:
                todo[split] = self.datasets[key]
        if not todo:
            return
        context = repr((sorted(self.dataset_options.items(), key=lambda kv: kv[0]),
                        sorted(self.spec_names.items())))
        preflight(todo, dataset=self.hparams.dataset, root=self.root,
                  num_classes=self.num_classes, mode=self.preflight_mode, context=context,
                  progress=True)
        self._preflighted.update(todo)

    def _loader(self, key: str, batch_size: int, shuffle: bool) -> DataLoader:
        if key not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(key, key))
        ds = self.datasets[key]
        w = self.hparams.num_workers
        n = self.hparams.train_samples_per_epoch
        if shuffle:  # training: resumable mid-epoch, order and augmentations seeded (sampling.py)
            # an epoch = n random items with replacement (MFNet: random tile + crop), or a permutation
            sampler = ResumableSampler(ds, replacement=n is not None, num_samples=n)  # type: ignore[arg-type]
            if _distributed():
                # under DDP Lightning wraps the sampler per process; exact mid-epoch resume is not claimed there
                return DataLoader(SeededDataset(ds), batch_size=batch_size, sampler=sampler, num_workers=w,
                                  drop_last=len(sampler) >= batch_size, pin_memory=self.hparams.pin_memory,
                                  persistent_workers=w > 0)
            return ResumableDataLoader(
                SeededDataset(ds), batch_size=batch_size, sampler=sampler, num_workers=w,
                drop_last=len(sampler) >= batch_size, pin_memory=self.hparams.pin_memory,
                persistent_workers=w > 0)
        return DataLoader(
            ds, batch_size=batch_size, shuffle=False, sampler=_unrepeated_sampler(ds), num_workers=w,
            pin_memory=self.hparams.pin_memory, persistent_workers=w > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.hparams.eval_batch_size, shuffle=False)


def _unrepeated_sampler(dataset: Dataset) -> Optional[Any]:
    """Under DDP, each evaluation sample on exactly one process (Lightning's default
    DistributedSampler pads the last batch with repeats, which the metrics would count twice)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
