"""The whole Conv-LoRA SAM model against AutoGluon's numbers, without the official code.

``tests/golden/convlora_model.safetensors`` holds the outputs of AutoGluon's
``SAMForSemanticSegmentation`` (HF ``SamModel`` of ``sam_vit_tiny``'s sizes, Conv-LoRA injected by
AutoGluon, 4 classes, 10 mask tokens) run with mmsam's deterministic weights copied in through
``mmsam.interop.convlora``, and the official state-dict layout (key -> shape), written by
``benchmarks/parity/convlora_model.py --write-golden``. mmsam rebuilds the same model
(the script's ``build_ours``) and must give the same mask logits, class logits, semantic scores
and gate balance loss; the layout must map both ways with no tensor left over.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mmsam.errors import CheckpointError
from mmsam.interop import IMPORTERS
from mmsam.interop.convlora import official_to_ours, strip_prefix, to_official, to_ours
from mmsam.testing import load_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "convlora_model.safetensors"
# HF's two-way-transformer LayerNorms use eps 1e-6, segment_anything's 1e-5: measured max |Δ| 7e-7
# on the mask logits (|.| <= 0.03), 6.4e-5 on the class logits, 4.8e-5 on the semantic scores;
# 1.4e-8 / 1.8e-7 once the official eps is set to 1e-5 (see the parity script)
TOL_MASKS, TOL_CLASSES, TOL_SEMANTIC = 5e-6, 2e-4, 2e-4


def _parity_module():
    """The parity script's builders (it imports only mmsam at module level)."""
    spec = importlib.util.spec_from_file_location("convlora_model_parity", ROOT / "benchmarks" / "parity" / "convlora_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _parity_module()


@pytest.fixture(scope="module")
def golden():
    tensors, meta = load_golden(GOLDEN)
    return {k[len("official."):]: v for k, v in tensors.items()}, meta


@pytest.fixture(scope="module")
def ours():
    return P.build_ours()


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.double() - b.double()).abs().max())


def test_golden_metadata_names_the_official_code(golden):
    _, meta = golden
    assert len(meta["official_commit"]) == 40 and meta["transformers"].startswith("4.38")
    assert "benchmarks/parity/convlora_model.py" in meta["command"] and meta["official_prefix"] == "model.model."
    assert json.loads(meta["init_args"]) == P.INIT_ARGS and json.loads(meta["lora"]) == P.LORA and int(meta["seed"]) == P.SEED


def test_eval_outputs_match_the_official_model(golden, ours):
    official, _ = golden
    out = P.run_ours(ours, P.image())
    assert _diff(out["masks"], official["masks"]) <= TOL_MASKS
    assert _diff(out["class_logits"], official["class_logits"]) <= TOL_CLASSES
    sub = P.SUB
    semantic = out["semantic"][..., ::sub, ::sub]  # ours: exp(logits), combined at 1/4 and upsampled
    assert _diff(semantic, official["semantic_sub"]) <= TOL_SEMANTIC
    assert torch.equal(out["logits"][..., ::sub, ::sub].argmax(1), official["semantic_sub"].argmax(1))


def test_training_forward_matches_the_official_gate_noise_and_balance_loss(golden, ours):
    official, _ = golden
    out = P.run_ours(ours, P.image(), train=True)
    assert _diff(out["class_logits"], official["train.class_logits"]) <= TOL_CLASSES
    assert _diff(out["balance"], official["train.balance"]) <= 1e-6


def test_every_official_tensor_maps_both_ways(golden, ours):
    _, meta = golden
    layout = json.loads(meta["official_layout"])
    assert IMPORTERS["convlora"] == ("mmsam.interop.convlora", "ConvLoRASAM")
    assert all(official_to_ours(k) is not None for k in layout)
    mine = ours.state_dict()
    official = to_official(mine, list(layout))
    assert {k: list(v.shape) for k, v in official.items()} == layout
    back = to_ours({"model.model." + k: v for k, v in official.items()}, mine)
    assert set(back) == set(mine) and all(torch.equal(back[k], mine[k]) for k in mine)


def test_checkpoint_prefixes_and_refusals(golden, ours):
    _, meta = golden
    mine = ours.state_dict()
    official = to_official(mine, list(json.loads(meta["official_layout"])))
    for prefix in ("model.model.", "model.", ""):  # model.ckpt, SAMForSemanticSegmentation, SamModel
        assert set(strip_prefix({prefix + k: v for k, v in official.items()})) == set(official)
    with pytest.raises(CheckpointError, match="not an AutoGluon SAM checkpoint"):
        to_ours({"sam.image_encoder.blocks.0.attn.qkv.qkv.weight": torch.zeros(1)}, mine)
    bad = dict(official, **{"mask_decoder.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="1 unknown tensors"):
        to_ours(bad, mine)
    bad = dict(official, **{"mask_decoder.mask_tokens.weight": torch.zeros(3, 32)})  # 3 mask tokens, ours 10
    with pytest.raises(CheckpointError, match="shape mismatches"):
        to_ours(bad, mine)
    bad = {k: v for k, v in official.items() if k != "mask_decoder.output_classifier_mlps.weight"}
    with pytest.raises(CheckpointError, match="1 of ours not in the file"):
        to_ours(bad, mine)
    gate = next(k for k in official if k.endswith("lora_moe_gating.std"))
    with pytest.raises(CheckpointError, match="official gate keeps it at 1.0"):
        to_ours(dict(official, **{gate: torch.tensor([2.0])}), mine)
    tied = "prompt_encoder.shared_embedding.positional_embedding"
    with pytest.raises(CheckpointError, match="tied"):
        to_ours(dict(official, **{tied: official[tied] + 1}), mine)


def test_binary_model_matches_the_official_binary_model(golden):
    """AutoGluon's ``num_classes=1`` model (one mask token, no class head) vs ours with K = 2."""
    official, _ = golden
    model = P.build_ours_binary()
    x = P.image()
    with torch.no_grad():
        feats = model.forward_features({"modalities": {"rgb": x}})
        masks, classes = model.head(feats)
        logits = model.forward_head(feats, x.shape[-2:])["logits"]
    assert classes is None
    assert _diff(masks, official["binary.masks"]) <= TOL_MASKS  # measured 8.5e-7
    assert _diff(logits[:, 1:, :: P.SUB, :: P.SUB], official["binary.logits_sub"]) <= TOL_MASKS  # measured 7.0e-7
