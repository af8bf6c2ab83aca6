"""check_dataset: counts, problems named by file, class histogram, exit codes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsam.data.check import CheckReport, check_dataset
from mmsam.data.datasets.mcubes import LEFT_OFFSET, read_list
from mmsam.errors import ConfigError


def _kinds(report: CheckReport) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in report.problems:
        out.setdefault(p.kind, set()).add(Path(p.path).name)
    return out


@pytest.mark.parametrize("name", ["deliver", "mcubes", "muses", "muses_sdk"])
def test_clean_sets_pass_with_counts_and_histogram(name: str, synth_root: Path, mcubes_root: Path,
                                                   muses_root: Path, synth_info: dict,
                                                   mcubes_info: dict, muses_info: dict) -> None:
    root, info = {"deliver": (synth_root, synth_info), "mcubes": (mcubes_root, mcubes_info),
                  "muses": (muses_root, muses_info), "muses_sdk": (muses_root, muses_info)}[name]
    report = check_dataset(name, root)
    assert report.problems == [] and report.ok and report.exit_code == 0
    counts = list(info["counts"].values())
    assert [s.samples for s in report.splits.values()] == counts
    for split, n in zip(("train", "val", "test"), counts):
        files = report.splits[split].files
        assert files["label"] == n and all(v == n for v in files.values()), files
    hist = np.sum(list(report.class_pixels.values()), axis=0)
    size = info["size"]
    width = {"deliver": size, "mcubes": int(round(size * 1032 / 1024)),
             "muses": int(round(size * 16 / 9)), "muses_sdk": int(round(size * 16 / 9))}[name]
    assert hist.sum() == sum(counts) * size * width  # every labelled pixel counted once
    text = report.format()
    assert "result: OK" in text and "problems: none" in text
    assert report.classes[0] in text and "reference" in text
    json.dumps(report.to_dict())


def test_mcubes_extra_files_are_counted(mcubes_root: Path) -> None:
    report = check_dataset("mcubes", mcubes_root, splits=["val"])
    assert set(report.splits["val"].files) == {"rgb", "aolp", "aolp_cos", "dolp", "nir", "label",
                                               "nir_mask", "ss"}
    assert report.splits["val"].expected == 96


def test_renamed_and_missing_files_are_named(mcubes_copy: Path) -> None:
    stems = read_list(mcubes_copy / "list_folder" / "train.txt")
    renamed = mcubes_copy / "GT" / f"{stems[1]}.png"
    renamed.rename(renamed.with_name("renamed.png"))
    missing = mcubes_copy / "SS" / f"{stems[2]}.png"
    missing.unlink()
    report = check_dataset("mcubes", mcubes_copy)
    assert report.exit_code == 1 and not report.ok
    kinds = _kinds(report)
    assert kinds["missing"] == {renamed.name, missing.name}
    assert kinds["unreferenced"] == {"renamed.png"}
    text = report.format()
    assert str(renamed) in text and str(missing) in text and "renamed.png" in text
    assert "3 problem(s)" in text
    partial = check_dataset("mcubes", mcubes_copy, splits=["val"])  # flat folders: not scanned
    assert partial.ok


def test_corrupt_nan_wrong_size_and_bad_ids(mcubes_copy: Path) -> None:
    stems = read_list(mcubes_copy / "list_folder" / "test.txt")
    png = mcubes_copy / "NIR_warped" / f"{stems[0]}.png"
    png.write_bytes(png.read_bytes()[:60])
    npy = mcubes_copy / "polL_aolp_cos" / f"{stems[1]}.npy"
    arr = np.load(npy)
    arr[0, LEFT_OFFSET] = np.inf  # in the kept columns (the left 192 are never looked at)
    np.save(npy, arr)
    small = mcubes_copy / "polL_color" / f"{stems[2]}.png"
    Image.fromarray(np.zeros((10, 300, 3), np.uint8)).save(small)
    gt = mcubes_copy / "GT" / f"{stems[3]}.png"
    lab = np.array(Image.open(gt))
    lab[0, 0] = 77
    Image.fromarray(lab).save(gt)
    report = check_dataset("mcubes", mcubes_copy, splits=["test"])
    kinds = _kinds(report)
    assert kinds == {"unreadable": {png.name, npy.name}, "size": {small.name},
                     "label": {gt.name}}
    msgs = {Path(p.path).name: p.message for p in report.problems}
    assert "1 inf" in msgs[npy.name] and "10x300" in msgs[small.name]
    assert "[77]" in msgs[gt.name] and "cannot decode" in msgs[png.name]
    assert all(p.split == "test" for p in report.problems)


def test_deliver_renamed_file(synth_copy: Path) -> None:
    victim = sorted(synth_copy.glob("lidar/*/val/*/*_lidar_front.png"))[0]
    renamed = victim.with_name(victim.name.replace("_lidar_", "_lidr_"))
    victim.rename(renamed)
    report = check_dataset("deliver", synth_copy, splits=["val"])
    kinds = _kinds(report)
    assert kinds == {"missing": {victim.name}, "unreferenced": {renamed.name}}
    rgb = sorted(synth_copy.glob("img/*/test/*/*_rgb_front.png"))[0]
    rgb.rename(rgb.with_name("frame.png"))  # the index itself fails: named too
    report = check_dataset("deliver", synth_copy)
    assert any(p.kind == "index" and p.path.endswith("frame.png") for p in report.problems)
    assert report.splits["test"].samples == 0 and report.splits["train"].samples > 0


def test_muses_missing_and_unreferenced(muses_copy: Path) -> None:
    cam = sorted(muses_copy.glob("frame_camera/train/fog/night/*.png"))[0]
    stem = cam.name[: -len("_frame_camera.png")]
    lidar = muses_copy / "lidar" / "train" / "fog" / "night" / f"{stem}_lidar.png"
    lidar.rename(lidar.with_name("oops.png"))
    report = check_dataset("muses", muses_copy, splits=["train"])
    assert _kinds(report) == {"missing": {lidar.name}, "unreferenced": {"oops.png"}}
    shutil.rmtree(muses_copy / "gt_semantic" / "test")
    report = check_dataset("muses", muses_copy, splits=["test"])  # test labels are withheld
    assert report.ok and "label" not in report.splits["test"].files


def test_empty_root_exits_2_and_bad_split(tmp_path: Path) -> None:
    report = check_dataset("muses", tmp_path)
    assert report.exit_code == 2 and report.num_samples == 0
    assert {p.kind for p in report.problems} == {"index"}
    assert "NO SAMPLES FOUND" in report.format()
    with pytest.raises(ConfigError, match="split"):
        check_dataset("deliver", tmp_path, splits=["all"])
    with pytest.raises(ConfigError, match="unknown dataset"):
        check_dataset("nope", tmp_path)


def test_histogram_counts_the_cropped_label(mcubes_root: Path) -> None:
    report = check_dataset("mcubes", mcubes_root, splits=["val"])
    gt = [np.array(Image.open(mcubes_root / "GT" / f"{s}.png"))[:, LEFT_OFFSET:]
          for s in read_list(mcubes_root / "list_folder" / "val.txt")]
    ids = np.concatenate([g.ravel() for g in gt])
    expect = np.bincount(ids[ids != 255], minlength=20).tolist() + [int((ids == 255).sum())]
    assert report.class_pixels["val"] == expect


def test_deliver_event_size_must_be_the_image_or_the_lowres_size(synth_copy: Path,
                                                                  synth_info: dict) -> None:
    size = synth_info["size"]
    low = size * 512 // 1042
    events = sorted(synth_copy.glob("event/*/train/*/*_event_front.png"))
    normal = next(e for e in events if "_eventlowres" not in e.parent.name)
    lowres = next(e for e in events if "_eventlowres" in e.parent.name)
    assert Image.open(lowres).size == (low, low)
    assert check_dataset("deliver", synth_copy, splits=["train"]).ok  # both sizes accepted
    Image.fromarray(np.zeros((size - 5, size, 3), np.uint8)).save(normal)
    Image.fromarray(np.zeros((low + 1, low + 1, 3), np.uint8)).save(lowres)
    report = check_dataset("deliver", synth_copy, splits=["train"])
    assert _kinds(report) == {"size": {normal.name, lowres.name}}
    msgs = {p.path: p.message for p in report.problems}
    assert f"{size - 5}x{size} (HxW)" in msgs[str(normal)]
    assert f"(or {low}x{low} for event)" in msgs[str(lowres)]


def test_deliver_files_at_the_wrong_depth_are_reported(synth_copy: Path) -> None:
    rgb = sorted(synth_copy.glob("img/*/train/*/*_rgb_front.png"))[0]
    deeper = rgb.parent / "extra" / rgb.name
    deeper.parent.mkdir()
    rgb.rename(deeper)  # the glob img/*/train/*/*.png no longer sees it
    flat = sorted(synth_copy.glob("lidar/*/val/*/*_lidar_front.png"))[0]
    moved = flat.parents[1] / flat.name
    flat.rename(moved)
    report = check_dataset("deliver", synth_copy, splits=["train"])
    layout = [p for p in report.problems if p.kind == "layout"]
    assert [(p.split, p.path) for p in layout] == [("train", str(deeper))]
    assert "result: OK" not in report.format() and str(deeper) in report.format()
    report = check_dataset("deliver", synth_copy)
    assert {p.path for p in report.problems if p.kind == "layout"} == {str(deeper), str(moved)}


def test_muses_camera_image_at_the_wrong_depth(muses_copy: Path) -> None:
    cam = sorted(muses_copy.glob("frame_camera/train/fog/night/*.png"))[0]
    cam.rename(cam.parents[1] / cam.name)
    report = check_dataset("muses", muses_copy, splits=["train"])
    assert [p.kind for p in report.problems] == ["layout"]
    assert report.problems[0].path == str(cam.parents[1] / cam.name)


def test_dataset_options_are_passed_and_unknown_keys_named(tmp_path: Path) -> None:
    from test_data_potsdam import MFNET_TEST, MFNET_TRAIN, write_potsdam

    from mmsam.cli import main

    root = tmp_path / "Potsdam"
    write_potsdam(root, MFNET_TRAIN + MFNET_TEST)
    shutil.rmtree(root / "1_DSM_normalisation")
    assert not check_dataset("potsdam", root).ok  # the nDSM is the default
    assert check_dataset("potsdam", root, options={"dsm_source": "dsm"}).ok
    with pytest.raises(ConfigError, match=r"dataset 'potsdam' has no option \['dsm'\]; it "
                                          r"accepts .*dsm_source"):
        check_dataset("potsdam", root, options={"dsm": "dsm"})
    with pytest.raises(ConfigError, match="set by mmsam data check itself"):
        check_dataset("potsdam", root, options={"split": "train"})
    with pytest.raises(ConfigError, match="dsm_source"):
        check_dataset("potsdam", root, options={"dsm_source": "lidar"})
    args = ["data", "check", "--dataset", "potsdam", "--root", str(root)]
    assert main(args + ["--option", "dsm_source=dsm", "--option", "cache_tiles=false"]) == 0
    assert main(args + ["--option", "bogus=1"]) == 2
    assert main(args + ["--option", "novalue"]) == 2


def test_unknown_option_of_a_kwargs_factory(tmp_path: Path) -> None:
    from test_data_trans10k import write_v2

    write_v2(tmp_path)
    assert check_dataset("trans10k_v2", tmp_path, options={}).ok
    with pytest.raises(ConfigError, match="trans10k_v2.*bogus"):
        check_dataset("trans10k_v2", tmp_path, options={"bogus": 1})
