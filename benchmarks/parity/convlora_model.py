"""Parity of the whole Conv-LoRA SAM model with AutoGluon's, run side by side.

Builds AutoGluon's ``SAMForSemanticSegmentation`` (``multimodal/src/autogluon/multimodal/models/sam.py``:
HF ``SamModel`` from AutoGluon's ``custom_hf_models/modeling_sam_for_conv_lora.py``, N mask tokens,
one hypernetwork MLP, the ``num_classes + 1`` class head, ``multi_class_mask_decoder_forward``) with
a small ``SamConfig`` of the same sizes as mmsam's ``sam_vit_tiny`` (width 32, 2 blocks, 2 heads,
window 4, global block 1, 128 px, patch 16, 32-channel neck and decoder), and injects Conv-LoRA
with AutoGluon's own ``inject_adaptation_to_linear_layer`` and the semantic-segmentation preset's
filters (``.*vision_encoder.*attn`` / ``q``, ``v``: the fused qkv; r 3, alpha 32, 8 experts). The
official files are imported one by one as in ``convlora.py`` (nothing is copied into mmsam).

mmsam's ``ConvLoRASAM(4 classes, sam_vit_tiny, 128 px, 10 mask tokens)`` is filled with
``mmsam.testing.fill_deterministic``; every tensor goes into the official model through
``mmsam.interop.convlora`` (the rules ``mmsam import --from convlora`` uses; the official state
dict must load strictly, and importing it back must give our state dict). Both run in eval mode on
``mmsam.testing.fixed_input``; compared: the low-resolution mask logits, the class logits, the
mask logits upsampled to the image, and the semantic scores each side composes (AutoGluon:
``apply_multi_class_semantic_seg_postprocess`` on the upsampled masks; mmsam: ``exp`` of
``logits``, combined at 1/4 and then upsampled); plus a training-mode forward (same RNG seed, so the
same gate noise) with the gates' balance loss. The binary model (AutoGluon ``num_classes=1``: HF's
own decoder forward with one mask token; ours ``K = 2``) is run the same way.

HF's ``SamTwoWayAttentionBlock`` builds its four LayerNorms with ``layer_norm_eps`` (1e-6 in every
SamConfig, the checkpoints AutoGluon loads included); segment_anything's use PyTorch's 1e-5. The
official model keeps its 1e-6; a second official run with those four set to 1e-5 isolates that.

Usage (transformers 4.38 as AutoGluon pinned; timm, omegaconf)::

    python benchmarks/parity/convlora_model.py --official /path/to/autogluon [--write-golden]

``--write-golden`` stores the official outputs and the official state-dict layout (key -> shape) in
``tests/golden/convlora_model.safetensors`` for ``tests/unit/test_golden_convlora_model.py`` and
the ``mmsam import --from convlora`` test.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from mmsam.adapters.conv_lora import ConvLoRAConfig, collect_balance_losses
from mmsam.heads import upsample_logits
from mmsam.interop.convlora import to_official, to_ours
from mmsam.losses.mask_classification import semantic_inference
from mmsam.methods.conv_lora_sam import ConvLoRASAM
from mmsam.testing import fill_deterministic, fixed_input, save_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"


def _sibling(name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"mmsam_parity_{name}", Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- the fixed problem (the golden test and the import test rebuild exactly this) ---------------
SEED = 0
NUM_CLASSES, NUM_TOKENS, IMG = 4, 10, 128
INIT_ARGS = dict(num_classes=NUM_CLASSES, modalities=["rgb"], backbone="sam_vit_tiny", img_size=IMG, num_mask_tokens=NUM_TOKENS)
LORA = dict(r=3, alpha=32.0, num_experts=8)
IMAGE_SHAPE = (2, 3, IMG, IMG)
SUB = 8  # the semantic scores are stored every SUB pixels


def build_ours() -> ConvLoRASAM:
    """mmsam's model with deterministic weights: parameters by ``fill_deterministic``; the random
    Fourier matrix (a buffer) by ``fixed_input``; the prompt encoder's unused ``no_mask_embed`` equal
    to the head's copy (one tensor in the official model)."""
    model = ConvLoRASAM(**INIT_ARGS, adapter=ConvLoRAConfig(**LORA))
    fill_deterministic(model, SEED)
    with torch.no_grad():
        pe = model.head.pe_layer.positional_encoding_gaussian_matrix
        pe.copy_(fixed_input(tuple(pe.shape), SEED, name="positional_encoding_gaussian_matrix"))
        model.backbone.prompt_encoder.no_mask_embed.weight.copy_(model.head.no_mask_embed)
    return model.eval()


def image() -> torch.Tensor:
    return fixed_input(IMAGE_SHAPE, SEED, name="image")


def run_ours(model: ConvLoRASAM, x: torch.Tensor, *, train: bool = False) -> dict[str, torch.Tensor]:
    """Low-resolution masks, class logits, upsampled masks, our logits and semantic scores."""
    model.train(train)
    torch.manual_seed(SEED)
    with torch.no_grad():
        out = model.forward_head(model.forward_features({"modalities": {"rgb": x}}), x.shape[-2:])
        balance = collect_balance_losses(model) if train else None
    res = {"masks": out["masks"], "class_logits": out["class_logits"], "masks_up": upsample_logits(out["masks"], (IMG, IMG)),
           "logits": out["logits"], "semantic": out["logits"].exp()}
    if balance is not None:
        res["balance"] = balance.reshape(())
    model.eval()
    return res


# ---- the official side ---------------------------------------------------------------------------


def load_official_model(root: Path) -> types.SimpleNamespace:
    P = _sibling("convlora")
    ag = P.load_official(root)
    src = root / P.MM
    P._stub("agmm.models.custom_hf_models")
    ag.utils = P._load("agmm.models.utils", src / "models/utils.py")
    ag.hf_sam = P._load("agmm.models.custom_hf_models.modeling_sam_for_conv_lora", src / "models/custom_hf_models/modeling_sam_for_conv_lora.py")
    ag.sam = P._load("agmm.models.sam", src / "models/sam.py")
    ag.commit_of = P.official_source
    return ag


def sam_config():
    """A ``SamConfig`` of ``sam_vit_tiny``'s sizes; everything else (eps 1e-6, GELU/ReLU, depths) default."""
    from transformers import SamConfig

    return SamConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1], window_size=4,
                           output_channels=32, image_size=IMG, patch_size=16, mlp_dim=128, num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=IMG, patch_size=16, mask_input_channels=16),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=32),
    )


def build_ours_binary() -> ConvLoRASAM:
    """The binary model (one mask token, no class head), filled as :func:`build_ours`."""
    model = ConvLoRASAM(**{**INIT_ARGS, "num_classes": 2, "num_mask_tokens": None}, adapter=ConvLoRAConfig(**LORA))
    fill_deterministic(model, SEED)
    with torch.no_grad():
        pe = model.head.pe_layer.positional_encoding_gaussian_matrix
        pe.copy_(fixed_input(tuple(pe.shape), SEED, name="positional_encoding_gaussian_matrix"))
        model.backbone.prompt_encoder.no_mask_embed.weight.copy_(model.head.no_mask_embed)
    return model.eval()


def build_official(ag: types.SimpleNamespace, *, num_classes: int = NUM_CLASSES, num_tokens: int = NUM_TOKENS) -> torch.nn.Module:
    """AutoGluon's model as its learner builds it (``pretrained=False`` makes ``SamModel(SamConfig(...))``:
    the module's ``SamConfig`` name answers our small config) with Conv-LoRA injected."""
    cfg = sam_config()
    ag.sam.SamConfig = lambda name_or_path=None: cfg
    model = ag.sam.SAMForSemanticSegmentation(
        prefix="sam", checkpoint_name="sam_vit_tiny", num_classes=num_classes, pretrained=False,
        frozen_layers=["mask_decoder.iou_prediction_head", "prompt_encoder"],  # configs/model/default.yaml
        num_mask_tokens=num_tokens, image_norm="imagenet",
    )
    ag.utils.inject_adaptation_to_linear_layer(  # the semantic_segmentation preset with peft conv_lora
        model, peft="conv_lora", lora_r=LORA["r"], lora_alpha=LORA["alpha"], module_filter=[".*vision_encoder.*attn"],
        filter=["q", "v"], extra_trainable_params=[".*mask_decoder"], conv_lora_expert_num=LORA["num_experts"],
    )
    return model


def copy_into_official(ours: ConvLoRASAM, theirs: torch.nn.Module) -> dict[str, list[int]]:
    """Our tensors into the official ``SamModel`` (strict); returns its layout (bare key -> shape)."""
    keys = list(theirs.model.state_dict())
    values = to_official(ours.state_dict(), keys)
    theirs.model.load_state_dict(values, strict=True)
    return {k: list(v.shape) for k, v in theirs.model.state_dict().items()}


def run_official(ag: types.SimpleNamespace, theirs: torch.nn.Module, x: torch.Tensor, *, train: bool = False) -> dict[str, torch.Tensor]:
    c = ag.constants
    theirs.train(train)
    torch.manual_seed(SEED)
    with torch.no_grad():
        rets, classes = theirs.model(x, multimask_output=False, output_moe_loss=theirs.output_moe_loss)
        torch.manual_seed(SEED)
        out = theirs({theirs.image_key: x, theirs.label_key: torch.zeros(x.shape[0], 1, IMG, IMG)})["sam"]
        post = ag.utils.apply_multi_class_semantic_seg_postprocess({"sam": dict(out)})["sam"]
    res = {"masks": rets.pred_masks[:, 0], "class_logits": classes[:, 0], "masks_up": out[c.LOGITS],
           "class_logits_forward": out[c.CLASS_LOGITS], "semantic": post[c.SEMANTIC_MASK]}
    if train:
        res["balance"] = out[c.MOE_LOSS].reshape(())
    theirs.eval()
    return res


def set_decoder_eps(theirs: torch.nn.Module, eps: float) -> None:
    for layer in theirs.model.mask_decoder.transformer.layers:
        for i in range(1, 5):
            getattr(layer, f"layer_norm{i}").eps = eps


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.double() - b.double()).abs().max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="AutoGluon checkout (work tree or bare git dir)")
    parser.add_argument("--write-golden", action="store_true", help="write tests/golden/convlora_model.safetensors")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # reproducible reductions
    P = _sibling("convlora")
    root, commit = P.official_source(args.official)
    ag = load_official_model(root)
    import transformers

    print(f"official AutoGluon {commit}, transformers {transformers.__version__}, torch {torch.__version__}")
    ours = build_ours()
    theirs = build_official(ag)
    layout = copy_into_official(ours, theirs)
    back = to_ours({"model.model." + k: v for k, v in theirs.model.state_dict().items()}, ours.state_dict())
    mine = ours.state_dict()
    assert set(back) == set(mine) and all(torch.equal(back[k], mine[k]) for k in mine), "import of the official state is not ours"
    n_lora = sum(".lora_" in k for k in layout)
    print(f"official state dict: {len(layout)} tensors ({n_lora} Conv-LoRA), loaded strictly; "
          f"mmsam import of it gives back all {len(mine)} of ours exactly")

    x = image()
    ro, rt = run_ours(ours, x), run_official(ag, theirs, x)
    assert torch.equal(rt["class_logits"], rt["class_logits_forward"])
    sem_official_order = semantic_inference(ro["masks_up"], ro["class_logits"])  # ours composed the official way
    agree = float((ro["logits"].argmax(1) == rt["semantic"].argmax(1)).float().mean())
    rows = {
        "mask logits (B, N, 32, 32)": max_diff(ro["masks"], rt["masks"]),
        "class logits (B, N, K+1)": max_diff(ro["class_logits"], rt["class_logits"]),
        "mask logits upsampled (B, N, 128, 128)": max_diff(ro["masks_up"], rt["masks_up"]),
        "semantic scores, each side's order": max_diff(ro["semantic"], rt["semantic"]),
        "semantic scores, official order": max_diff(sem_official_order, rt["semantic"]),
        "composition order alone (mmsam both ways)": max_diff(ro["semantic"], sem_official_order),
    }
    print(f"\n[eval] official max|.|: masks {float(rt['masks'].abs().max()):.3e}, class logits "
          f"{float(rt['class_logits'].abs().max()):.3e}, semantic {float(rt['semantic'].abs().max()):.3e}")
    for k, v in rows.items():
        print(f"  max|Δ| {k:<42} {v:.3e}")
    print(f"  argmax agreement of mmsam's logits with the official semantic masks: {agree * 100:.3f}% of pixels")

    set_decoder_eps(theirs, 1e-5)
    r5 = run_official(ag, theirs, x)
    set_decoder_eps(theirs, 1e-6)
    print(f"  (official with the decoder's 4 LayerNorms at eps 1e-5: max|Δ| masks {max_diff(ro['masks'], r5['masks']):.3e}, "
          f"class logits {max_diff(ro['class_logits'], r5['class_logits']):.3e})")

    to, tt = run_ours(ours, x, train=True), run_official(ag, theirs, x, train=True)
    train_rows = {"mask logits": max_diff(to["masks"], tt["masks"]), "class logits": max_diff(to["class_logits"], tt["class_logits"]),
                  "balance loss": max_diff(to["balance"], tt["balance"])}
    print(f"\n[train, seed {SEED}] official balance loss {float(tt['balance']):.6f}, mmsam {float(to['balance']):.6f}")
    for k, v in train_rows.items():
        print(f"  max|Δ| {k:<42} {v:.3e}")

    # the binary model: AutoGluon's num_classes=1 (HF's own decoder forward, one mask token), ours K=2
    ob, tb = build_ours_binary(), build_official(ag, num_classes=1, num_tokens=1)
    copy_into_official(ob, tb)
    back = to_ours({"model.model." + k: v for k, v in tb.model.state_dict().items()}, ob.state_dict())
    assert all(torch.equal(back[k], v) for k, v in ob.state_dict().items()) and set(back) == set(ob.state_dict())
    with torch.no_grad():
        tb.eval()
        low = tb.model(x, multimask_output=False, output_moe_loss=tb.output_moe_loss).pred_masks[:, 0]
        up = tb({tb.image_key: x, tb.label_key: torch.zeros(x.shape[0], 1, IMG, IMG)})["sam"][ag.constants.LOGITS]
        feats = ob.forward_features({"modalities": {"rgb": x}})
        mo, (m_low, _) = ob.forward_head(feats, x.shape[-2:]), ob.head(feats)
    binary_rows = {"binary mask logit (B, 1, 32, 32)": max_diff(m_low, low),
                   "binary foreground logit, 128 px (logits[:, 1])": max_diff(mo["logits"][:, 1:], up)}
    print(f"\n[binary, eval] official max|.| {float(up.abs().max()):.3e}")
    for k, v in binary_rows.items():
        print(f"  max|Δ| {k:<42} {v:.3e}")

    if args.write_golden:
        meta = {"official_repo": "autogluon/autogluon", "official_commit": commit, "transformers": transformers.__version__,
                "torch": torch.__version__, "command": "python benchmarks/parity/convlora_model.py --official PATH --write-golden",
                "seed": str(SEED), "init_args": json.dumps(INIT_ARGS), "lora": json.dumps(LORA), "semantic_subsample": str(SUB),
                "official_layout": json.dumps(layout), "official_prefix": "model.model.",
                "max_abs_diff": json.dumps({**rows, **{f"train {k}": v for k, v in train_rows.items()}, **binary_rows}),
                "argmax_agreement": f"{agree:.6f}"}
        tensors = {"official.masks": rt["masks"], "official.class_logits": rt["class_logits"],
                   "official.semantic_sub": rt["semantic"][..., ::SUB, ::SUB].contiguous(),
                   "official.train.class_logits": tt["class_logits"],
                   "official.train.balance": tt["balance"], "official.binary.masks": low,
                   "official.binary.logits_sub": up[..., ::SUB, ::SUB].contiguous()}
        path = GOLDEN / "convlora_model.safetensors"
        save_golden(path, {k: v.float().contiguous() for k, v in tensors.items()}, meta)
        print(f"\nwrote {path} ({path.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
