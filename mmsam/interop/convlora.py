"""Conv-LoRA (AutoGluon ``SAMForSemanticSegmentation`` with ``optim.peft=conv_lora``) state dicts
<-> mmsam's ``ConvLoRASAM``.

AutoGluon's ``model.ckpt`` is ``{"state_dict": {"model." + k: v}}`` with ``k`` a key of
``SAMForSemanticSegmentation``, whose HF ``SamModel`` (AutoGluon's ``modeling_sam_for_conv_lora``)
sits under ``model.``: so ``model.model.vision_encoder...``. The HF names differ from
``segment_anything``'s (ours) by module renames only (``blocks`` -> ``layers``, ``norm1`` ->
``layer_norm1``, ``neck.0`` -> ``neck.conv1``, ``output_upscaling.0`` -> ``upscale_conv1``, a
3-layer ``MLP`` -> ``proj_in``/``layers.0``/``proj_out``, ...). AutoGluon's ``ConvLoRALinear`` is
the frozen qkv ``Linear`` itself (``weight``, ``bias``) with ``lora_A``/``lora_B`` matrices, a gate
``lora_moe_gating.{w_gate,w_noise}`` and experts ``lora_moe_experts.<i>.0`` (the conv); ours wraps
the Linear as ``base_layer`` and holds ``conv_lora.{lora_A,lora_B}.0`` and ``conv_lora.moe.0``.
The class head is ``mask_decoder.output_classifier_mlps`` (ours ``head.class_head``); AutoGluon
keeps one hypernetwork MLP, ``output_hypernetworks_mlps.0`` (ours ``SharedHypernetwork.mlp``).

Tensors with no counterpart, skipped on purpose: the gate's ``lora_moe_gating.mean``/``std``
buffers (constants 0 and 1 of the official ``MoEGate``, checked) and
``prompt_encoder.shared_embedding.positional_embedding`` (tied to
``shared_image_embedding.positional_embedding`` in HF's ``SamModel``; checked equal).
``benchmarks/parity/convlora_model.py`` copies ours into AutoGluon's running model with
:func:`official_to_ours` and compares the outputs.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from mmsam.errors import CheckpointError

#: the root modules of HF's ``SamModel``; a checkpoint's keys are these behind a wrapper prefix
ROOTS = ("vision_encoder.", "prompt_encoder.", "mask_decoder.", "shared_image_embedding.")
#: AutoGluon's prefixes, longest first: ``model.ckpt`` (learner), ``SAMForSemanticSegmentation``, bare ``SamModel``
PREFIXES = ("model.model.", "model.", "")

_PE_TIED = "prompt_encoder.shared_embedding.positional_embedding"
_PE = "shared_image_embedding.positional_embedding"
_GATE_CONSTANTS = {"mean": 0.0, "std": 1.0}

# (official regex, our replacement), tried in order; the first full match wins
_ENCODER = [
    (r"vision_encoder\.pos_embed", "pos_embed"),
    (r"vision_encoder\.patch_embed\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"vision_encoder\.layers\.(\d+)\.layer_norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.(rel_pos_[hw])", r"blocks.\1.attn.\2"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.qkv\.(weight|bias)", r"blocks.\1.attn.qkv.base_layer.\2"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.qkv\.lora_([AB])", r"blocks.\1.attn.qkv.conv_lora.lora_\2.0.weight"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.qkv\.lora_moe_gating\.(w_gate|w_noise)", r"blocks.\1.attn.qkv.conv_lora.moe.0.\2"),
    (r"vision_encoder\.layers\.(\d+)\.attn\.qkv\.lora_moe_experts\.(\d+)\.0\.(weight|bias)",
     r"blocks.\1.attn.qkv.conv_lora.moe.0.experts.\2.conv.\3"),
    (r"vision_encoder\.layers\.(\d+)\.mlp\.(lin[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"vision_encoder\.neck\.conv1\.weight", "neck.0.weight"),
    (r"vision_encoder\.neck\.layer_norm1\.(weight|bias)", r"neck.1.\1"),
    (r"vision_encoder\.neck\.conv2\.weight", "neck.2.weight"),
    (r"vision_encoder\.neck\.layer_norm2\.(weight|bias)", r"neck.3.\1"),
]
_PROMPT = [
    (r"prompt_encoder\.point_embed\.(\d+)\.weight", r"point_embeddings.\1.weight"),
    (r"prompt_encoder\.not_a_point_embed\.weight", "not_a_point_embed.weight"),
    (r"prompt_encoder\.mask_embed\.conv1\.(weight|bias)", r"mask_downscaling.0.\1"),
    (r"prompt_encoder\.mask_embed\.layer_norm1\.(weight|bias)", r"mask_downscaling.1.\1"),
    (r"prompt_encoder\.mask_embed\.conv2\.(weight|bias)", r"mask_downscaling.3.\1"),
    (r"prompt_encoder\.mask_embed\.layer_norm2\.(weight|bias)", r"mask_downscaling.4.\1"),
    (r"prompt_encoder\.mask_embed\.conv3\.(weight|bias)", r"mask_downscaling.6.\1"),
]
_MLP = r"(?:proj_in|layers\.0|proj_out)"
_MLP_LAYER = {"proj_in": "layers.0", "layers.0": "layers.1", "proj_out": "layers.2"}  # a 3-layer SAM MLP
_DECODER = [
    (r"mask_decoder\.(iou_token|mask_tokens)\.weight", r"decoder.\1.weight"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.layer_norm([1-4])\.(weight|bias)", r"decoder.transformer.layers.\1.norm\2.\3"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
     r"\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)", r"decoder.transformer.layers.\1.\2.\3.\4"),
    (r"mask_decoder\.transformer\.layers\.(\d+)\.mlp\.(lin[12])\.(weight|bias)", r"decoder.transformer.layers.\1.mlp.\2.\3"),
    (r"mask_decoder\.transformer\.final_attn_token_to_image\.(q_proj|k_proj|v_proj|out_proj)\.(weight|bias)",
     r"decoder.transformer.final_attn_token_to_image.\1.\2"),
    (r"mask_decoder\.transformer\.layer_norm_final_attn\.(weight|bias)", r"decoder.transformer.norm_final_attn.\1"),
    (r"mask_decoder\.upscale_conv1\.(weight|bias)", r"decoder.output_upscaling.0.\1"),
    (r"mask_decoder\.upscale_layer_norm\.(weight|bias)", r"decoder.output_upscaling.1.\1"),
    (r"mask_decoder\.upscale_conv2\.(weight|bias)", r"decoder.output_upscaling.3.\1"),
    (r"mask_decoder\.output_classifier_mlps\.(weight|bias)", r"class_head.\1"),
]


def _mlp(key: str) -> str | None:
    m = re.fullmatch(rf"mask_decoder\.(output_hypernetworks_mlps\.0|iou_prediction_head)\.({_MLP})\.(weight|bias)", key)
    if m is None:
        return None
    module = "output_hypernetworks_mlps.mlp" if m.group(1) != "iou_prediction_head" else "iou_prediction_head"
    return f"head.decoder.{module}.{_MLP_LAYER[m.group(2)]}.{m.group(3)}"


def official_to_ours(key: str) -> list[str] | None:
    """Our state-dict keys that the official (bare ``SamModel``) ``key`` fills, the one our
    forward reads first; ``[]`` for an official tensor skipped on purpose; ``None`` if unknown."""
    if key == _PE:
        return ["head.pe_layer.positional_encoding_gaussian_matrix", "backbone.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    if key == "prompt_encoder.no_mask_embed.weight":
        return ["head.no_mask_embed", "backbone.prompt_encoder.no_mask_embed.weight"]
    if key == _PE_TIED or re.fullmatch(r"vision_encoder\.layers\.\d+\.attn\.qkv\.lora_moe_gating\.(mean|std)", key):
        return []
    mlp = _mlp(key)
    if mlp is not None:
        return [mlp]
    for rules, prefix in ((_ENCODER, "backbone.image_encoder."), (_PROMPT, "backbone.prompt_encoder."), (_DECODER, "head.")):
        for pattern, repl in rules:
            if re.fullmatch(pattern, key):
                return [prefix + re.sub(pattern, repl, key)]
    return None


def strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare ``SamModel`` state dict inside an AutoGluon checkpoint's (``model.model.<k>``)."""
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) and k[len(prefix):].startswith(ROOTS) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    odd = [k for k in state if not any(k.startswith(p) and k[len(p):].startswith(ROOTS) for p in PREFIXES)]
    raise CheckpointError(
        f"not an AutoGluon SAM checkpoint: every key should be 'model.model.' + a SamModel key "
        f"({', '.join(r.rstrip('.') for r in ROOTS)}); e.g. {odd[:3]}"
    )


def _check_skipped(state: Mapping[str, torch.Tensor]) -> list[str]:
    problems = []
    if _PE_TIED in state and _PE in state and not torch.equal(state[_PE_TIED], state[_PE]):
        problems.append(f"{_PE_TIED} differs from {_PE} (they are one tied tensor in SamModel)")
    for key, value in state.items():
        leaf = key.rsplit(".", 1)[-1]
        if ".lora_moe_gating." in key and leaf in _GATE_CONSTANTS:
            if value.numel() != 1 or float(value) != _GATE_CONSTANTS[leaf]:
                problems.append(f"{key} is {value.flatten()[:3].tolist()}, the official gate keeps it at {_GATE_CONSTANTS[leaf]}")
    return problems


def to_ours(state: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor], modalities: object = None) -> dict[str, torch.Tensor]:
    """Our ``ConvLoRASAM`` state-dict entries from an AutoGluon Conv-LoRA SAM state dict: every
    official tensor mapped (or skipped on purpose, see the module doc) and every one of ours filled."""
    state = strip_prefix(state)
    out: dict[str, torch.Tensor] = {}
    unknown, shapes = [], []
    for key, value in state.items():
        targets = official_to_ours(key)
        if targets is None or any(t not in ours for t in targets):
            unknown.append(key)
            continue
        for t in targets:
            if ours[t].shape != value.shape:
                shapes.append(f"{key} {tuple(value.shape)} vs {t} {tuple(ours[t].shape)}")
            else:
                out[t] = value.clone()
    missing = [k for k in ours if k not in out]
    problems = _check_skipped(state)
    if unknown or shapes or missing or problems:
        raise CheckpointError(
            "the AutoGluon Conv-LoRA checkpoint does not fit this model (backbone size, class count, "
            f"num_mask_tokens, LoRA rank or expert count?): {len(unknown)} unknown tensors {unknown[:5]}, "
            f"{len(shapes)} shape mismatches {shapes[:5]}, {len(missing)} of ours not in the file {missing[:5]}"
            + (f", {'; '.join(problems[:3])}" if problems else "")
        )
    return out


def to_official(ours: Mapping[str, torch.Tensor], official_keys: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_ours` for the bare ``SamModel`` keys ``official_keys``: each from
    the first of our tensors it maps to; the skipped ones get the values the official model holds."""
    out: dict[str, torch.Tensor] = {}
    for key in official_keys:
        targets = official_to_ours(key)
        if targets is None:
            raise CheckpointError(f"no rule for the official tensor {key!r}")
        if targets:
            out[key] = ours[targets[0]].detach().clone()
        elif key == _PE_TIED:
            out[key] = ours[official_to_ours(_PE)[0]].detach().clone()
        else:  # the gate's constant mean / std
            out[key] = torch.tensor([_GATE_CONSTANTS[key.rsplit(".", 1)[-1]]])
    return out
