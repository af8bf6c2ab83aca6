"""MFNet against the official code's outputs, stored in ``tests/golden/mfnet_<adapter>.safetensors``.

The golden files hold what the official ``UNetFormer`` of sstary/SSRS ``MFNet/UNetFormer_MMSAM.py``
(commit in the files' metadata) computed with our deterministic weights copied in, on one fixed
input: ``benchmarks/parity/mfnet.py --write-golden``. Here ours is rebuilt by the same functions of
that script (no official code needed), run on the regenerated input, and compared.

Tolerances, from the measured full-tensor max |Δ| ours vs official (``docs/methods/mfnet.md``):
logits 5.4e-8 (values up to 0.06) -> 1e-6; encoder outputs 9.5e-6 and DFM pyramid 5.5e-6 (values
O(1): the neck ends in a LayerNorm) -> 5e-5; gradients: per-tensor norms 1e-2 relative plus 1e-4
of the largest norm, slices 1e-2 of the slice's largest value plus 1e-8: MMLoRA's inputs to the decoder
differ by ~1e-6, enough to flip a ReLU6 on a handful of pixels, and one pixel carries ~1e-3 of a
decoder gradient (with identical decoder inputs the decoder gradients agree exactly); gradients
that nearly cancel (the λ and the decoder's fusion weights, norms ~1e-7) then differ by up to 9 %
relative (3e-7 absolute on a norm, 2e-9 on a single λ). A change of the decoder borders, of the λ
mixing or of the DFM moves the logits by more than 1e-4.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mmsam.testing import load_golden

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "parity" / "mfnet.py"


def _parity_module():
    spec = importlib.util.spec_from_file_location("mmsam_parity_mfnet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["mm_adapter", "mm_lora"])
def case(request):
    pm = _parity_module()
    adapter = request.param
    golden, meta = load_golden(ROOT / "tests" / "golden" / f"mfnet_{adapter}.safetensors")
    torch.manual_seed(0)
    model = pm.build_ours(adapter)
    data = pm.fixed_data()
    out = pm.run_ours(model, *data)
    names = pm.trainable_names(model)
    ours = pm.golden_tensors(out, names, json.loads(meta["grad_slices"]), data)
    return adapter, golden, meta, ours, names


def _close(name: str, ours: torch.Tensor, gold: torch.Tensor, *, atol: float = 0.0, rtol: float = 0.0) -> None:
    assert ours.shape == gold.shape, f"{name}: shape {tuple(ours.shape)} vs golden {tuple(gold.shape)}"
    diff = (ours.double() - gold.double()).abs()
    bound = atol + rtol * gold.double().abs()
    assert bool((diff <= bound).all()), f"{name}: max |Δ| {float(diff.max()):.3g} (tolerance atol {atol:g}, rtol {rtol:g})"


def test_golden_metadata_and_inputs(case):
    adapter, golden, meta, ours, names = case
    assert len(meta["official_commit"]) == 40 and meta["command"].endswith(f"--adapter {adapter} --write-golden")
    assert json.loads(meta["grad_names"]) == names  # the trainable tensors, by name
    _close("input sums", ours["input_sums"], golden["input_sums"], rtol=1e-12)


def test_logits_match_official(case):
    _, golden, _, ours, _ = case
    _close("logits (every 8th pixel)", ours["logits_sub"], golden["logits_sub"], atol=1e-6)
    _close("logits sum, sum of |logits|", ours["logits_sums"], golden["logits_sums"], atol=1e-3, rtol=1e-5)
    _close("loss", ours["loss"], golden["loss"], atol=1e-6)


def test_encoder_and_dfm_match_official(case):
    _, golden, _, ours, _ = case
    _close("encoder outputs (subsampled)", ours["encoder_sub"], golden["encoder_sub"], atol=5e-5)
    _close("encoder output sums", ours["encoder_sums"], golden["encoder_sums"], atol=1e-2, rtol=1e-5)
    _close("DFM level sums of |x|", ours["dfm_sums"], golden["dfm_sums"], rtol=1e-5)
    _close("DFM 1/32 (subsampled)", ours["dfm_1_32_sub"], golden["dfm_1_32_sub"], atol=5e-5)


def test_gradients_match_official(case):
    _, golden, meta, ours, names = case
    atol = 1e-4 * float(golden["grad_norms"].max())  # near-cancelling gradients (λ, fusion weights) are ~1e-7
    _close("gradient norms", ours["grad_norms"], golden["grad_norms"], atol=atol, rtol=1e-2)
    for i, name in enumerate(json.loads(meta["grad_slices"])):
        gold = golden[f"grad_slice_{i}"]
        _close(f"gradient of {name}", ours[f"grad_slice_{i}"], gold, atol=1e-2 * float(gold.abs().max()) + 1e-8)
