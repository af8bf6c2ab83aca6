"""Conv-LoRA against the official AutoGluon numbers, without the official code.

``tests/golden/convlora_{layer,loss}.safetensors`` hold fixed inputs and the outputs of AutoGluon's
``ConvLoRALinear``, of HF ``Mask2FormerLoss`` summed as AutoGluon's ``_compute_loss`` does and of the
official ``Binary_IoU`` / ``Multiclass_IoU``, written by ``benchmarks/parity/convlora.py --write-golden``
(its metadata names the official commit and the transformers version). Here mmsam rebuilds the same
layer (``mmsam.testing.fill_deterministic``), loss and metrics and must agree; a change of the
layer or of the loss weights fails.
"""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
import torch
import yaml

from mmsam.adapters.conv_lora import ConvLoRAConfig, ConvLoRALinear
from mmsam.losses.mask_classification import MaskClassificationLoss
from mmsam.methods.conv_lora_sam import ConvLoRASAM
from mmsam.testing import fill_deterministic, load_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def _parity_module():
    """The parity script's builders (it imports only mmsam at module level)."""
    spec = importlib.util.spec_from_file_location("convlora_parity", ROOT / "benchmarks" / "parity" / "convlora.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _parity_module()


def _golden(name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, str]]:
    tensors, meta = load_golden(GOLDEN / name)
    inputs = {k[3:]: v for k, v in tensors.items() if k.startswith("in.")}
    official = {k[9:]: v for k, v in tensors.items() if k.startswith("official.")}
    return inputs, official, meta


def _tol(ref: torch.Tensor) -> float:
    """1e-5 relative to the tensor's scale (gradients reach ~100; measured |Δ| <= 3e-7 of the scale)."""
    return 1e-5 * max(1.0, float(ref.abs().max()))


def _close(ours: torch.Tensor, ref: torch.Tensor) -> bool:
    return ours.shape == ref.shape and float((ours.double() - ref.double()).abs().max()) <= _tol(ref)


def test_golden_metadata_names_the_official_code():
    for name in ("convlora_layer.safetensors", "convlora_loss.safetensors"):
        _, _, meta = _golden(name)
        assert len(meta["official_commit"]) == 40 and meta["transformers"].startswith("4.38")
        assert "benchmarks/parity/convlora.py" in meta["command"]


def test_layer_matches_official_conv_lora_linear():
    inputs, official, _ = _golden("convlora_layer.safetensors")
    ours = P.run_mmsam_layer(P.build_mmsam_layer(), inputs)
    assert set(ours) == set(official)
    bad = {k: float((ours[k] - official[k]).abs().max()) for k in official if not _close(ours[k], official[k])}
    assert not bad, bad


def test_a_changed_layer_fails():
    inputs, official, _ = _golden("convlora_layer.safetensors")
    layer = ConvLoRALinear(torch.nn.Linear(P.IN_FEATURES, P.OUT_FEATURES), ConvLoRAConfig(**{**P.LAYER, "scales": [8.0 - i for i in range(8)]}))
    ours = P.run_mmsam_layer(fill_deterministic(layer, P.SEED), inputs)
    assert not _close(ours["eval_out"], official["eval_out"])


def _loss_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"mask_logits": inputs["mask_logits"], "class_logits": inputs["class_logits"], "labels": inputs["labels"].long()}


def _weights_in_use() -> dict[str, dict[str, float]]:
    """The Mask2Former weights of ConvLoRASAM's defaults and of the Trans10K recipes."""
    sig = inspect.signature(ConvLoRASAM).parameters
    out = {"ConvLoRASAM defaults": {k: sig[k].default for k in ("class_weight", "mask_weight", "dice_weight")}}
    for recipe in sorted((ROOT / "configs" / "convlora").glob("trans10k_*.yaml")):
        args = yaml.safe_load(recipe.read_text())["model"]["method"]["init_args"]
        out[recipe.name] = {k: float(args[k]) for k in ("class_weight", "mask_weight", "dice_weight")}
    return out


def test_loss_matches_official_mask2former_loss_as_autogluon_sums_it():
    inputs, official, _ = _golden("convlora_loss.safetensors")
    ours = P.run_mmsam_loss(MaskClassificationLoss(P.NUM_CLASSES), _loss_inputs(inputs))
    for i in range(P.LABEL_SHAPE[0]):
        assert torch.equal(ours[f"match{i}"], official[f"match{i}"]), i
    for key in ("mask_ce", "mask_bce", "mask_dice", "total"):
        assert _close(ours[key], official[key]), (key, float(ours[key]), float(official[key]))


@pytest.mark.parametrize("source", list(_weights_in_use()))
def test_loss_weights_in_use_give_the_official_total(source):
    inputs, official, _ = _golden("convlora_loss.safetensors")
    loss = MaskClassificationLoss(P.NUM_CLASSES, **_weights_in_use()[source])
    assert _close(P.run_mmsam_loss(loss, _loss_inputs(inputs))["total"], official["total"]), source


def test_other_loss_weights_or_class_cost_fail():
    inputs, official, _ = _golden("convlora_loss.safetensors")
    weighted = P.run_mmsam_loss(MaskClassificationLoss(P.NUM_CLASSES, class_weight=10.0, mask_weight=5.0, dice_weight=5.0), _loss_inputs(inputs))
    assert not _close(weighted["total"], official["total"])


def test_metrics_match_official_binary_iou_and_multiclass_iou():
    inputs, official, _ = _golden("convlora_loss.safetensors")
    metric_in = {k[len("metric."):]: v.long() if "label" in k else v for k, v in inputs.items() if k.startswith("metric.")}
    ours = P.run_mmsam_metrics(metric_in)
    for key in ("Binary_IoU", "mIoU_ignore_in_union"):
        assert abs(float(ours[key]) - float(official[f"metric.{key}"])) <= 1e-6, key
    assert abs(float(ours["pooled_binary_mIoU"]) - float(official["metric.Binary_IoU"])) > 0.1  # the two protocols differ
