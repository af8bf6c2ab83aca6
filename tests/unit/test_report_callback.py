"""``EvaluationReport``: the report of ``trainer.test`` comes from the test metrics themselves, in one pass."""
from __future__ import annotations

import re

import pytest
from torch.utils.data import DataLoader

from mmsam.engine.evaluation import Evaluation
from mmsam.engine.report import EvaluationReport
from test_task_options import CLASSES, Tiles, make_task, trainer


def test_report_is_written_from_the_test_pass(tmp_path):
    task = make_task(evaluation=Evaluation(modality_subsets="all", classes=CLASSES[:5]))
    data = DataLoader(Tiles(3, 32, 32), batch_size=2)
    report = EvaluationReport(tmp_path / "rep", examples=2, title="unit")
    scores = trainer(callbacks=[report]).test(task, data, verbose=False)[0]
    # one forward per batch and modality subset (rgb+dsm, rgb, dsm): no second evaluation loop
    assert len(task.method.shapes) == 2 * 3
    result = report.result
    assert result["num_samples"] == 3 and list(result["subsets"]) == ["rgb+dsm", "rgb", "dsm"]
    for key, suffix in (("rgb+dsm", ""), ("rgb", "@rgb"), ("dsm", "@dsm")):
        assert 100 * result["subsets"][key]["mIoU"] == pytest.approx(scores[f"test/mIoU{suffix}"], abs=1e-4), key
    text = (tmp_path / "rep" / "report.md").read_text()
    row = re.search(r"^\| (\d+\.\d\d) \| (\d+\.\d\d) \|", text[text.index("## Summary"):], re.M)
    assert row and row.group(1) == f"{scores['test/mIoU']:.2f}" and row.group(2) == f"{scores['test/OA']:.2f}"
    assert "left out: clutter" in text and (tmp_path / "rep" / "examples.png").is_file()
