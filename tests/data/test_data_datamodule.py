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
