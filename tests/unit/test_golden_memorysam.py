"""MemorySAM against the official code's outputs, stored in ``tests/golden/`` (no official code needed).

``benchmarks/parity/memorysam.py --write-golden`` filled our MemorySAM and the official ``LoRA_Sam``
(https://github.com/Chenfei-Liao/MemorySAM, commit in the file's metadata) with the same
deterministic weights, ran both on one fixed input with M = 2 and 3 modalities and stored the
official logits, OHEM CE and SPMM loss. Here our model is rebuilt with the stored constructor args,
filled the same way, and must reproduce them.

Tolerance: the parity script measured max |Δ| <= 5e-7 on the logits (|logits| <= 1) and <= 1.2e-7 on
the losses (Hiera-T, 64 px, K = 4); ``ATOL = 1e-5`` leaves room for other BLAS / CPU kernels.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from mmsam.losses.ohem_ce import OhemCrossEntropy
from mmsam.methods import MemorySAM
from mmsam.testing import fill_deterministic, fixed_input, load_golden

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "memorysam_sam2_hiera_t.safetensors"
ATOL = 1e-5


def _no_dropout(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_p"):
            m.dropout_p = 0.0


@pytest.fixture(scope="module")
def golden():
    tensors, meta = load_golden(GOLDEN)
    kwargs = json.loads(meta["init_args"])
    seed = int(meta["seed"])
    torch.manual_seed(12345)  # irrelevant: every tensor is overwritten below
    model = MemorySAM(**kwargs)
    fill_deterministic(model, seed)
    with torch.no_grad():  # the prompt encoder's Fourier matrix, as the parity script's fill_pe_buffer
        for name, b in model.named_buffers():
            if name.endswith("positional_encoding_gaussian_matrix"):
                b.copy_(fixed_input(tuple(b.shape), seed, name=name))
    model.train()  # SPMM runs in training only; dropout off on both sides when the file was written
    _no_dropout(model)
    return model, tensors, meta, kwargs


def _run(model, tensors, kwargs, m):
    x, label = tensors["images"], tensors["label"].long()
    model.spmm.prototypes.zero_()  # the official PrototypeSegmentation starts from zero prototypes
    with torch.no_grad():
        out = model({"modalities": {n: x[i] for i, n in enumerate(kwargs["modalities"][:m])}, "label": label})
    ohem = OhemCrossEntropy(ignore_index=255, thresh=0.7)(out["logits"], label)
    return out, ohem


def test_golden_file_is_small_and_records_its_origin(golden):
    _, tensors, meta, _ = golden
    assert GOLDEN.stat().st_size < 400_000
    assert len(meta["official_commit"]) == 40 and "benchmarks/parity/memorysam.py" in meta["command"]
    assert set(json.loads(meta["ms"])) == {2, 3}


@pytest.mark.parametrize("m", [2, 3])
def test_logits_and_losses_match_the_official_code(golden, m):
    model, tensors, _, kwargs = golden
    out, ohem = _run(model, tensors, kwargs, m)
    # no frame is blanked by the object-score gate, so every frame's logits are compared
    assert all(float(s.min()) > 0 for s in out["object_scores"].values())
    expected = tensors[f"logits_m{m}"]
    assert out["logits"].shape == expected.shape
    diff = (out["logits"] - expected).abs().max().item()
    assert diff <= ATOL, f"M={m}: logits differ from the official ones by {diff:.2e}"
    assert abs(ohem.item() - tensors[f"ohem_m{m}"].item()) <= ATOL
    assert abs(out["losses"]["proto"].item() - tensors[f"proto_m{m}"].item()) <= ATOL
