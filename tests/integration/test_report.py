"""``mmsam report``: one evaluation report for a checkpoint, its numbers those of ``mmsam test``."""
from __future__ import annotations

import re

import numpy as np
from PIL import Image

from mmsam.cli import main


def _section(text: str, title: str) -> list[list[str]]:
    """The rows of the markdown table under ``## title``, cells stripped, header and rule removed."""
    body = text[text.index(f"## {title}"):].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]


def test_report_matches_test_scores_and_draws_figures(tiny_root, make_config, tmp_path, capsys):
    cfg = make_config(tmp_path / "c.yaml", tiny_root, tmp_path / "run", trainer__max_steps=2, model__evaluation__modality_subsets=[])
    assert main(["fit", "--config", str(cfg), "--test_after_fit", "false"]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["test", "--config", str(cfg), "--ckpt_path", str(ckpt)]) == 0
    tested = re.search(r"^mIoU\s+(\d+\.\d\d)\s+OA (\d+\.\d\d)", capsys.readouterr().out, re.M)
    assert tested

    out = tmp_path / "report"
    assert main(["report", "--config", str(cfg), "--ckpt_path", str(ckpt), "--output", str(out), "--examples", "3"]) == 0
    text = (out / "report.md").read_text()
    summary = _section(text, "Summary")
    assert summary[0][:2] == [tested.group(1), tested.group(2)]  # same mIoU / OA as `mmsam test`

    per_class = _section(text, "Per class")
    assert len(per_class) == 25 and per_class[0][1] == "Building"
    subsets = _section(text, "Modality subsets")
    assert len(subsets) == 15  # every non-empty subset of rgb, depth, event, lidar
    assert subsets[0][:4] == ["x"] * 4 and subsets[0][4] == tested.group(1)
    assert sum(r[:4] == ["x", "-", "-", "-"] for r in subsets) == 1

    from mmsam.data.datasets.deliver import DeliverDataset

    conditions = sorted({s.condition for s in DeliverDataset(tiny_root, "test").samples})
    rows = _section(text, "Per condition")
    assert [r[0] for r in rows] == conditions and sum(int(r[1]) for r in rows) == 4
    assert all(re.fullmatch(r"\d+\.\d\d", r[2]) for r in rows)
    assert _section(text, "Per case")

    for name in ("confusion.png", "examples.png"):
        img = np.asarray(Image.open(out / name).convert("RGB"))
        assert img.size and len(np.unique(img.reshape(-1, 3), axis=0)) > 2, name
        assert f"({name})" in text
    assert Image.open(out / "examples.png").height > 3 * 64  # three rows drawn

    # a missing checkpoint is refused, naming the file
    capsys.readouterr()
    assert main(["report", "--config", str(cfg), "--ckpt_path", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err
