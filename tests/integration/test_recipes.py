"""Every paper recipe parses and builds its model (they are not trained in CI)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mmsam.cli import main

RECIPES = sorted(p for p in (Path(__file__).parents[2] / "configs").rglob("*.yaml") if p.parent.name != "demo")


def _counts(text: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+[\d,]+\s+\((\d+)\)$", text, re.M)}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_builds(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code == 0
    capsys.readouterr()
    assert main(["info", "--config", str(recipe), "--model.method.init_args.checkpoint", "null"]) == 0
    counts = _counts(capsys.readouterr().out)
    assert counts["trainable"] > 0 and counts["frozen"] > counts["adapters"]


def test_mlesam_recipe_counts(capsys):
    recipe = Path(__file__).parents[2] / "configs/deliver/mlesam_sam2_hiera_b+.yaml"
    assert main(["info", "--config", str(recipe), "--model.method.init_args.checkpoint", "null"]) == 0
    counts = _counts(capsys.readouterr().out)
    # Hiera-B+ blocks (dim_in + dim_out of each qkv), stages 2/3/16/3 with widths 112/224/448/896
    dims = [(112, 112)] * 2 + [(112, 224)] + [(224, 224)] * 2 + [(224, 448)] + [(448, 448)] * 15 + [(448, 896)] + [(896, 896)] * 2
    assert len(dims) == 24
    assert counts["adapters"] == 4 * 2 * 32 * sum(i + o for i, o in dims) == 5_304_320
    assert counts["fusion"] == 3 * (256 + 1)


DEMOS = sorted((Path(__file__).parents[2] / "configs" / "demo").glob("*.yaml"))


@pytest.mark.parametrize("demo", DEMOS, ids=lambda p: p.name)
def test_demo_config_builds(demo, capsys):
    """Every demo config parses and builds (the demos themselves are timed in docs/benchmarks.md)."""
    assert main(["info", "--config", str(demo)]) == 0
    counts = _counts(capsys.readouterr().out)
    assert counts["trainable"] > 0
