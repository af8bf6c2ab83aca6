"""Absent modalities: their pixels never reach the model (NaN there must not leak), and MLE-SAM's
second missing-modality protocol (a zero image through the expert)."""
from __future__ import annotations

import pytest
import torch

from mmsam.adapters import LoRAConfig
from mmsam.errors import ConfigError
from mmsam.methods import MemorySAM, MLESAM

MODS = ["rgb", "depth", "event"]


def _batch(b: int = 2, size: int = 64) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "modalities": {m: torch.randn(b, 3, size, size, generator=g) for m in MODS},
        "present": {m: torch.ones(b, dtype=torch.bool) for m in MODS},
        "label": torch.randint(0, 4, (b, size, size), generator=g),
    }


def _poisoned(batch: dict) -> dict:
    """``depth`` absent for sample 1, whose depth pixels are NaN (a broken sensor)."""
    out = {**batch, "modalities": dict(batch["modalities"]), "present": dict(batch["present"])}
    depth = out["modalities"]["depth"].clone()
    depth[1] = float("nan")
    out["modalities"]["depth"] = depth
    out["present"]["depth"] = torch.tensor([True, False])
    return out


def _mlesam(**kw) -> MLESAM:
    torch.manual_seed(0)
    return MLESAM(4, MODS, backbone="sam2_hiera_micro", img_size=64, adapter=LoRAConfig(r=2, parts=["q", "v"]), **kw)


@pytest.mark.parametrize("missing", ["drop", "zero"])
def test_mlesam_nan_in_absent_modality_does_not_leak(missing: str) -> None:
    m = _mlesam(missing=missing).eval()
    batch = _batch()
    clean = _poisoned(batch)
    clean["modalities"]["depth"] = torch.nan_to_num(clean["modalities"]["depth"], nan=123.0)
    with torch.no_grad():
        out = m(_poisoned(batch))["logits"]
        ref = m(clean)["logits"]
    assert torch.isfinite(out).all()
    assert torch.equal(out, ref)  # whatever the absent pixels hold, the result is the same


def test_mlesam_zero_protocol_equals_a_zero_image_as_present() -> None:
    m = _mlesam(missing="zero").eval()
    batch = _poisoned(_batch())
    zero = {**batch, "modalities": dict(batch["modalities"]), "present": {k: torch.ones(2, dtype=torch.bool) for k in MODS}}
    zero["modalities"]["depth"] = torch.stack([batch["modalities"]["depth"][0], torch.zeros(3, 64, 64)])
    without = {"modalities": {k: v for k, v in batch["modalities"].items() if k != "event"}}
    with torch.no_grad():
        assert torch.allclose(m(batch)["logits"], m(zero)["logits"], atol=1e-5)
        full = m(_batch())["logits"]
        # a modality missing from the whole batch is a zero image too: it still gets a router weight
        assert set(m(without)["router_weights"]) == set(MODS)
    drop = _mlesam(missing="drop").eval()
    with torch.no_grad():
        assert not torch.allclose(drop(batch)["logits"][1], m(batch)["logits"][1], atol=1e-4)
        assert torch.allclose(drop(_batch())["logits"], full, atol=1e-6)  # same weights: equal when nothing is missing
    with pytest.raises(ConfigError, match="missing"):
        _mlesam(missing="mean")


def test_memorysam_prototype_loss_finite_with_nan_in_absent_modality() -> None:
    torch.manual_seed(0)
    m = MemorySAM(4, MODS, backbone="sam2_hiera_micro", img_size=64, object_score_gate=False).train()
    out = m(_poisoned(_batch()))
    assert torch.isfinite(out["logits"]).all()
    assert all(torch.isfinite(v) for v in out["losses"].values())
