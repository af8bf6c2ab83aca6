"""MultiModalDataModule: synthesis on demand, batch contract, config validation, YAML."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser

from mmsam.data.datamodule import MultiModalDataModule
from mmsam.errors import ConfigError, DataError

SMALL = dict(synth_num_train=10, synth_num_val=5, synth_num_test=3, synth_size=32,
             train_size=24, eval_size=40, num_workers=0)


def test_synthesizes_then_serves_contract_batches(tmp_path: Path, capsys) -> None:
    root = tmp_path / "syn"
    dm = MultiModalDataModule(root=str(root), synthesize=True, batch_size=3, eval_batch_size=2,
                              missing_modalities=["event"], **SMALL)
    assert dm.num_classes == 25 and dm.class_names[6] == "Road" and dm.ignore_index == 255
    assert len(dm.palette) == 25
    dm.prepare_data()
    assert "generating the synthetic set" in capsys.readouterr().out
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert list(batch["modalities"]) == ["rgb", "depth", "event", "lidar"]
    for m, x in batch["modalities"].items():
        assert x.shape == (3, 3, 24, 24) and x.dtype == torch.float32
        assert batch["present"][m].tolist() == [True] * 3  # missing applies to evaluation only
    assert batch["label"].shape == (3, 24, 24) and batch["label"].dtype == torch.int64
    assert len(batch["meta"]["id"]) == 3 and len(batch["meta"]["case"]) == 3
    assert len(dm.train_dataloader()) == 10 // 3  # drop_last for training

    val = next(iter(dm.val_dataloader()))
    assert val["label"].shape == (2, 40, 40)
    assert val["present"]["event"].tolist() == [False, False]
    assert torch.all(val["modalities"]["event"] == 0) and val["present"]["rgb"].all()
    dm.setup("predict")
    assert len(dm.datasets["predict"]) == 3  # the test split

    again = MultiModalDataModule(root=str(root), synthesize=True, **SMALL)
    again.prepare_data()  # data present: nothing generated
    assert "generating" not in capsys.readouterr().out


def test_filters_and_modalities_reach_the_dataset(tmp_path: Path) -> None:
    dm = MultiModalDataModule(root=str(tmp_path / "s"), synthesize=True,
                              modalities=["lidar", "rgb"], conditions=["night"], **SMALL)
    dm.setup("test")
    ds = dm.datasets["test"]
    assert ds.modalities == ("lidar", "rgb") and {s.condition for s in ds.samples} == {"night"}
    batch = next(iter(dm.test_dataloader()))
    assert list(batch["modalities"]) == ["lidar", "rgb"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(modalities=["rgb", "thermal"]), "unknown modality 'thermal'"),
    (dict(modalities=["rgb"], missing_modalities=["depth"]), "missing_modalities"),
    (dict(dataset="cityscapes"), "unknown dataset 'cityscapes'.*deliver"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_config_fails_at_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MultiModalDataModule(**kwargs)


def test_missing_root_without_synthesis(tmp_path: Path) -> None:
    dm = MultiModalDataModule(root=str(tmp_path / "absent"), num_workers=0)
    with pytest.raises(DataError, match="absent"):
        dm.setup("fit")


def test_yaml_config_via_jsonargparse(tmp_path: Path) -> None:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MultiModalDataModule, "data")
    cfg = parser.parse_string(f"""
data:
  root: {tmp_path}
  modalities: [rgb, lidar]
  scale_range: [0.75, 1.25]
  missing_modalities: [lidar]
  cases: [night, motionblur]
  train_size: 64
""")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(cfg).data
    assert isinstance(dm, MultiModalDataModule)
    assert dm.modalities == ("rgb", "lidar") and dm.missing_modalities == ("lidar",)
    assert tuple(dm.hparams.scale_range) == (0.75, 1.25) and dm.hparams.train_size == 64
    with pytest.raises(Exception, match="train_size"):  # jsonargparse rejects a wrong type
        parser.parse_string("data:\n  train_size: big\n")


# -- remote sensing options (issue #6) --------------------------------------------------------
def test_vaihingen_with_null_root_synthesizes_and_serves_tiles(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    dm = MultiModalDataModule(dataset="vaihingen", synthesize=True, synth_size=40,
                              train_size=32, eval_size=None, scale_range=None, batch_size=2,
                              num_workers=0, train_samples_per_epoch=7, vflip_prob=0.5,
                              dataset_options={"train_window": 32})
    dm.setup("fit")
    root = tmp_path / "data" / "synthetic_vaihingen"
    assert (root / "top" / "top_mosaic_09cm_area1.tif").is_file()
    assert "size 40" in capsys.readouterr().out
    loader = dm.train_dataloader()
    assert len(loader.sampler) == 7 and len(loader) == 3  # 7 random draws, drop_last
    batch = next(iter(loader))
    assert list(batch["modalities"]) == ["irrg", "dsm"]
    assert batch["modalities"]["dsm"].shape == (2, 3, 32, 32)
    assert batch["label"].shape == (2, 32, 32)
    sizes = json.loads((root / "mmsam_synthetic.json").read_text())["tile_sizes"]
    val = list(dm.val_dataloader())
    assert [b["meta"]["id"][0] for b in val] == ["area5", "area21", "area15", "area30"]
    for b in val:  # whole tiles at native size, eroded GT
        assert list(b["label"].shape[1:]) == sizes[b["meta"]["id"][0][4:]]
        assert (b["label"] == 255).any()


def test_train_samples_per_epoch_draws_with_replacement(tmp_path: Path) -> None:
    dm = MultiModalDataModule(root=str(tmp_path / "s"), synthesize=True, batch_size=4,
                              train_samples_per_epoch=25, **SMALL)
    loader = dm.train_dataloader()
    assert len(loader.sampler) == 25 and len(loader) == 6  # 10 training items, 25 draws
    assert loader.sampler.replacement
    plain = MultiModalDataModule(root=str(tmp_path / "s"), batch_size=4, **SMALL)
    assert len(plain.train_dataloader()) == 10 // 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(dataset="vaihingen", dataset_options={"tile_size": 3}), r"no option \['tile_size'\]"),
    (dict(dataset="vaihingen", dataset_options={"split": "test"}), "set by the data module"),
    (dict(vflip_prob=1.5), "vflip_prob"),
    (dict(train_samples_per_epoch=0), "train_samples_per_epoch"),
])
def test_new_options_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MultiModalDataModule(**kwargs)


def test_dataset_options_reach_the_dataset(tmp_path: Path) -> None:
    dm = MultiModalDataModule(dataset="vaihingen", root=str(tmp_path / "v"), synthesize=True,
                              synth_size=32, eval_size=None, num_workers=0,
                              dataset_options={"eroded_test_labels": False})
    dm.setup("test")
    assert not (next(iter(dm.test_dataloader()))["label"] == 255).any()  # full GT


def test_unit_scale_with_native_eval_warns() -> None:
    with pytest.warns(UserWarning, match="scale_range: null"):
        MultiModalDataModule(dataset="vaihingen", scale_range=(1.0, 1.0), eval_size=None)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MultiModalDataModule(dataset="vaihingen", scale_range=(1.0, 1.0), eval_size=None,
                             dataset_options={"train_window": 256})
        MultiModalDataModule(dataset="vaihingen", scale_range=None, eval_size=None)
