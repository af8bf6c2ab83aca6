"""Every verb refuses a pickle-bearing or torn ``--ckpt_path`` with one line, without unpickling it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

VERBS = ["fit", "validate", "test", "predict", "report"]


class _Touch:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_files(folder: Path) -> dict[str, Path]:
    pickled = folder / "pickled.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "hyper_parameters": {"x": _Touch(folder / "unpickled-marker")}}, pickled)
    torn = folder / "torn.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(20000)}, "epoch": 0}, torn)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    return {"pickled": pickled, "torn": torn}


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_refuses_pickle_and_torn_files_in_one_line(tiny_root, make_config, tmp_path, verb):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", trainer__max_steps=1, model__evaluation__modality_subsets=[])
    files = _bad_files(tmp_path)
    for kind, path in files.items():
        res = subprocess.run([sys.executable, "-m", "mmsam.cli", verb, "--config", str(cfg), "--ckpt_path", str(path)],
                             capture_output=True, text=True, timeout=300)
        err = res.stderr.strip().splitlines()
        assert res.returncode == 2, (kind, res.stderr[-2000:])
        assert "Traceback" not in res.stderr, (kind, res.stderr[-2000:])
        assert err[-1].startswith(f"mmsam: error: {path}: ") and str(path) not in "\n".join(err[:-1]), (kind, err[-3:])
        expected = "refused: the file holds pickled Python objects" if kind == "pickled" else "not a readable checkpoint"
        assert expected in err[-1], err[-1]
    assert not (tmp_path / "unpickled-marker").exists()  # nothing was unpickled
    assert not (tmp_path / "run" / "checkpoints").exists()  # no training started


def test_non_checkpoint_torch_file_is_refused(tiny_root, make_config, tmp_path, capsys):
    from mmsam.cli import main

    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", model__evaluation__modality_subsets=[])
    plain = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, plain)
    for verb in ("validate", "report"):
        assert main([verb, "--config", str(cfg), "--ckpt_path", str(plain)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last == f"mmsam: error: {plain}: not a Lightning checkpoint of mmsam (no 'state_dict')"
