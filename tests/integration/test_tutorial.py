"""docs/tutorial.md, run as written: every bash and python block in order, in a fresh folder."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)


def _blocks() -> list[tuple[str, str, str | None]]:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    return [(m["lang"], m["body"], m["file"]) for m in FENCE.finditer(text)]


def _install_command(markdown: str) -> str:
    return next(line for line in markdown.splitlines() if line.startswith("python3 -m venv .venv"))


def test_tutorial_installs_as_readme_says() -> None:
    """The tutorial's install block is README's, which CI runs before the tests."""
    install = [body for lang, body, _ in _blocks() if lang == "bash" and "pip install" in body]
    assert len(install) == 1 and install[0].strip() == _install_command((ROOT / "README.md").read_text())


@pytest.fixture(scope="module")
def tutorial_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Runs every block of the tutorial; returns the folder and each block's output."""
    work = tmp_path_factory.mktemp("tutorial")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    outputs = []
    for lang, body, file in _blocks():
        if file is not None:
            (work / file).write_text(body)
        elif lang == "bash" and "pip install" not in body:
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=work, env=env,
                                 capture_output=True, text=True)
            assert res.returncode == 0, f"tutorial block failed:\n{body}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            outputs.append(res.stdout)
        elif lang == "python":
            res = subprocess.run([sys.executable, "-c", body], cwd=work, env=env, capture_output=True, text=True)
            assert res.returncode == 0, f"tutorial block failed:\n{body}\n{res.stderr[-3000:]}"
            outputs.append(res.stdout)
    return work, outputs


def test_tutorial_trains_reports_exports_and_predicts(tutorial_run: tuple[Path, list[str]]) -> None:
    work, outputs = tutorial_run
    out = "\n".join(outputs)
    # step 3: data check read both modalities and the labels of every split
    assert "problems: none" in out and "result: OK" in out and re.search(r"^1 +person +\d+", out, re.M)
    # step 5: statistics written into the config, the original kept
    assert "modality_stats" in (work / "my_scenes.yaml").read_text() and (work / "my_scenes.yaml.bak").is_file()
    # step 6: the fused model beats each sensor alone, as the tutorial says
    rows = re.findall(r"^\s+([x-])\s+([x-])\s+([0-9.]+)\s", out, re.M)
    scores = {(rgb, th): float(miou) for rgb, th, miou in rows}
    assert set(scores) == {("x", "x"), ("x", "-"), ("-", "x")}, rows
    assert scores["x", "x"] > max(scores["x", "-"], scores["-", "x"]) + 3, scores
    # step 7-9: the report, the model folder and one palette PNG per capture
    assert {"report.md", "confusion.png", "examples.png"} <= {p.name for p in (work / "report").iterdir()}
    assert {"adapters.safetensors", "mmsam.yaml"} <= {p.name for p in (work / "my_model").iterdir()}
    for i in range(3):
        label = Image.open(work / "predictions" / f"street{i}.png")
        assert label.mode == "P" and label.size == (96, 96)
        assert set(np.unique(np.array(label))) <= {0, 1, 2}
    assert outputs[-1].strip() == "(96, 96)"
