"""The loaders' base class: a toy data set declared on it gets the shared protocol."""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmsam.data.datasets
from mmsam.data.datasets import get_dataset_entry, list_datasets
from mmsam.data.datasets.base import ImageMaskSample, MultiModalDataset, SingleImageDataset
from mmsam.data.datasets.common import read_id_image
from mmsam.errors import ConfigError, DataError

H, W = 8, 12


@dataclass(frozen=True)
class ToySample:
    id: str
    files: dict[str, Path]


class ToyDataset(MultiModalDataset):
    """``<root>/<split>/{rgb,depth,label}/<id>.png``."""

    name = "Toy"
    splits = ("train", "test")
    provided_modalities = ("rgb", "depth")
    condition_names = ("day", "night")
    classes = ("a", "b", "c")
    palette = ((0, 0, 0), (1, 1, 1), (2, 2, 2))

    def __init__(self, root, split="train", modalities=("rgb", "depth"), conditions=None,
                 cases=None, transform=None, check=True, missing=()):
        super().__init__(root, split, modalities, conditions, cases, transform, check, missing)

    def _index(self) -> list[ToySample]:
        base = self.root / self.split
        ids = sorted(p.stem for p in (base / "label").glob("*.png"))
        if not ids:
            raise DataError(f"{base}: no labels")
        return [ToySample(i, {**{m: base / m / f"{i}.png" for m in self.modalities},
                              "label": base / "label" / f"{i}.png"}) for i in ids]

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        self._check_sample(s)
        label = torch.from_numpy(read_id_image(s.files["label"]))
        images = {m: self._match(s.files[m], self.specs[m].load(s.files[m]), label)
                  for m in self._to_read}
        return self._item(images, label, s.id, condition="day")


def _write(root: Path, split: str = "train", n: int = 2) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        for m in ("rgb", "depth"):
            (root / split / m).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(
                root / split / m / f"{i}.png")
        (root / split / "label").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 3, (H, W), dtype=np.uint8)).save(
            root / split / "label" / f"{i}.png")


def test_a_declared_subclass_gets_the_protocol(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = ToyDataset(tmp_path, modalities=["depth", "rgb"], missing=["rgb"], conditions="night")
    assert len(ds) == 2 and ds.conditions == ("night",) and ds.cases is None
    assert repr(ds) == (f"ToyDataset(root={str(tmp_path)!r}, split='train', "
                        f"modalities=['depth', 'rgb'], n=2)")
    item = ds[1]
    assert list(item["modalities"]) == ["depth", "rgb"]
    assert not item["present"]["rgb"] and item["present"]["depth"]
    assert torch.all(item["modalities"]["rgb"] == 0) and item["label"].dtype == torch.long
    assert item["meta"] == {"id": "1", "condition": "day", "case": "normal"}


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "val"}, r"unknown Toy split 'val'; valid: train, test"),
    ({"conditions": ["fog"]}, r"unknown Toy conditions \['fog'\]"),
    ({"cases": ["motionblur"]}, r"Toy has no sensor-failure cases; got cases=\['motionblur'\]"),
    ({"modalities": ["lidar"]}, r"Toy has no modality \['lidar'\]; it provides rgb, depth"),
    ({"missing": ["rgb", "depth"]}, "at least one modality"),
])
def test_argument_checks(tmp_path: Path, kwargs: dict, match: str) -> None:
    _write(tmp_path)
    with pytest.raises(ConfigError, match=match):
        ToyDataset(tmp_path, **kwargs)
    ToyDataset(tmp_path, cases=["normal"])  # "normal" is always accepted


def test_check_walks_every_file_against_the_reference(tmp_path: Path) -> None:
    _write(tmp_path)
    Image.fromarray(np.zeros((H, W + 1, 3), np.uint8)).save(tmp_path / "train" / "depth" / "1.png")
    with pytest.raises(DataError, match=rf"1.png: {H}x{W + 1} \(HxW\) but the label 1.png is"):
        ToyDataset(tmp_path)
    assert len(ToyDataset(tmp_path, missing=["depth"])) == 2  # a missing modality is not read
    (tmp_path / "train" / "rgb" / "1.png").unlink()
    with pytest.raises(DataError, match="rgb/1.png: missing file for modality 'rgb' of sample 1"):
        ToyDataset(tmp_path, missing=["depth"])
    ds = ToyDataset(tmp_path, check=False)
    with pytest.raises(DataError, match="missing file for modality 'rgb'"):
        ds[1]


class ToySingle(SingleImageDataset):
    name = "Toy"
    classes = ("a", "b", "c")

    def _index(self) -> list[ImageMaskSample]:
        base = self.root / self.split
        return [ImageMaskSample(f"{i}", "", base / "rgb" / f"{i}.png", base / "label" / f"{i}.png")
                for i in range(2)]

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        label = torch.from_numpy(read_id_image(s.label))
        return self._item({"rgb": self.spec.load(s.image)}, label, s.id, "", s.case)


def test_single_image_sets(tmp_path: Path) -> None:
    _write(tmp_path)
    ds = ToySingle(tmp_path, modalities=["rgb"])
    assert ds.missing == () and ds[0]["modalities"]["rgb"].shape == (3, H, W)
    with pytest.raises(ConfigError, match=r"Toy has one modality, rgb; got \['rgb', 'depth'\]"):
        ToySingle(tmp_path, modalities=["rgb", "depth"])
    with pytest.raises(ConfigError, match=r"the only modality \(rgb\) cannot be missing"):
        ToySingle(tmp_path, modalities=["rgb"], missing=["rgb"])
    with pytest.raises(ConfigError, match="Toy has no conditions"):
        ToySingle(tmp_path, modalities=["rgb"], conditions=["day"])
    (tmp_path / "train" / "label" / "1.png").unlink()
    with pytest.raises(DataError, match="1.png: missing mask of sample 1"):
        ToySingle(tmp_path, modalities=["rgb"])


def test_every_registered_loader_is_on_the_base_with_the_keyword_protocol() -> None:
    protocol = ["root", "split", "modalities", "conditions", "cases", "transform", "check",
                "missing"]
    from mmsam.data.datasets.registry import dataset_options

    assert list(inspect.signature(MultiModalDataset).parameters)[:len(protocol)] == protocol
    for name in list_datasets():
        cls = get_dataset_entry(name).factory
        assert isinstance(cls, type) and issubclass(cls, MultiModalDataset), name
        params = inspect.signature(cls).parameters
        assert list(params)[:3] == protocol[:3], name
        # the rest of the protocol is either spelled out or forwarded to the base with **common
        assert set(protocol) <= set(params) or any(p.kind is p.VAR_KEYWORD for p in params.values()), name
        options = dataset_options(cls)  # the loader's own options, found through the forwarding chain
        assert options is not None and not set(options) & set(protocol), name


def test_each_entry_is_its_class_declarations() -> None:
    """Single source: the registry entry is what the loader class declares, nothing more."""
    for name in list_datasets():
        entry = get_dataset_entry(name)
        cls = entry.factory
        assert cls.registry_name == name
        assert (entry.classes, entry.palette, entry.default_modalities, entry.splits) == (
            cls.classes, cls.palette, cls.default_modalities, cls.data_splits or cls.splits), name
        assert entry.has_data == cls.has_data and entry.classes_from_options == cls.classes_from_options
        assert entry.prepare == getattr(cls, "prepare", None), name
        assert cls.read_label is not MultiModalDataset.read_label, name  # data check reads labels with it
        if not cls.classes_from_options:
            assert len(cls.classes) == len(cls.palette) > 0, name


def test_loaders_never_import_the_synthetic_generators() -> None:
    """The generators import the loaders' layout constants, never the reverse (no cycle)."""
    folder = Path(mmsam.data.datasets.__file__).parent
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("mmsam.data.synthetic") for n in names), \
                f"{path.name}:{node.lineno} imports {names}"
        text = path.read_text()
        assert "__import__(" not in text and "import_module(" not in text, path.name  # nor by name


def test_data_check_reads_labels_through_the_class(tmp_path: Path) -> None:
    from mmsam.data.check import _label_reader

    class WithLabels(ToyDataset):
        read_label = staticmethod(read_id_image)

    _write(tmp_path)
    with pytest.raises(ConfigError, match="ToyDataset: defines no read_label"):
        _label_reader(ToyDataset(tmp_path))
    reader = _label_reader(WithLabels(tmp_path))
    assert reader(tmp_path / "train" / "label" / "0.png").shape == (H, W)
