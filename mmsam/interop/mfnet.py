"""MFNet (sstary/SSRS, ``MFNet/UNetFormer_MMSAM.py``) state dicts <-> mmsam's ``MFNet``.

One rule per official tensor says which of our tensors it is made of and how (the same tensor;
the q and v LoRA factors of the official ``MergedLinear`` are ours stacked; the λ mixing weights
are ours reshaped). ``benchmarks/parity/mfnet.py`` copies ours into the official model with
these rules and compares the outputs (max |Δ| 5e-8 on the logits); :func:`to_ours` applies them
backwards to import a checkpoint written by the official training script. The official position
embedding (64×64, for 1024 px) and MMLoRA's global-block relative-position tables (127 rows) are
resized to ours as the official code does at run time (``resize_pos_embed`` / ``resize_rel_pos``).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from mmsam.errors import CheckpointError

ENC = "backbone.image_encoder."

Rule = tuple[list[str], Callable[[list[torch.Tensor]], torch.Tensor]]
_same: Callable[[list[torch.Tensor]], torch.Tensor] = lambda ts: ts[0]
_cat: Callable[[list[torch.Tensor]], torch.Tensor] = lambda ts: torch.cat(ts, 0)
_as1: Callable[[list[torch.Tensor]], torch.Tensor] = lambda ts: ts[0].reshape(1)


def _encoder_rule(rest: str, adapter: str, STREAM: dict[str, str]) -> Rule | None:
    """Rule for the official ``image_encoder.<rest>``."""
    if rest.startswith(("patch_embed.", "neck.")) or rest == "pos_embed":
        return [ENC + rest], _same
    parts = rest.split(".")
    if parts[0] != "blocks":
        return None
    b, sub = f"{ENC}blocks.{parts[1]}.", ".".join(parts[2:])
    if sub.startswith(("norm1.", "norm2.")):
        return [b + sub], _same
    rel = {"attn.rel_h": "rel_pos_h", "attn.rel_w": "rel_pos_w"}
    if adapter == "mm_adapter":
        if sub in rel:
            return [b + "attn.base_layer." + rel[sub]], _same
        if sub.startswith(("attn.", "mlp.")):  # frozen SAM Linears
            stage, tail = sub.split(".", 1)
            return [f"{b}{stage}.base_layer.{tail}"], _same
        x, y = STREAM["x"], STREAM["y"]
        adapters = {"Img_Adapter": f"attn.adapters.{x}", "DSM_Adapter": f"attn.adapters.{y}",
                    "MLPx_Adapter": f"mlp.adapters.{x}", "MLPy_Adapter": f"mlp.adapters.{y}"}
        if parts[2] in adapters:
            layer = {"D_fc1": "down", "D_fc2": "up"}[parts[3]]
            return [f"{b}{adapters[parts[2]]}.{layer}.{parts[4]}"], _same
        if sub in ("wx_Adapter", "wy_Adapter"):
            return [f"{b}mlp.lambdas.{STREAM[sub[1]]}"], _as1
        return None
    # MMLoRA
    if sub in rel:
        return [b + "attn." + rel[sub]], _same  # a global block's 127-row table: see copy_into_official
    if sub == "attn.proj.weight" or sub == "attn.proj.bias":
        return [b + sub], _same
    if sub.startswith(("attn.qkv.", "mlp.lin1.", "mlp.lin2.")):
        module, leaf = sub.rsplit(".", 1)
        if leaf in ("weight", "bias"):
            return [f"{b}{module}.base_layer.{leaf}"], _same
        if leaf in ("lora_wx", "lora_wy"):
            return [f"{b}{module}.lambdas.{STREAM[leaf[-1]]}"], _as1
        if leaf.startswith("lora_"):  # lora_Ax / lora_Bx / lora_Ay / lora_By
            mat, stream = leaf[5], STREAM[leaf[6]]
            n = 2 if module == "attn.qkv" else 1  # q and v of the fused qkv: rows [q; v] (conv1d groups)
            return [f"{b}{module}.lora.{stream}.lora_{mat}.{k}.weight" for k in range(n)], _cat
    return None


_DECODER_BLOCK = {
    "norm1": "norm1", "norm2": "norm2", "attn.relative_position_bias_table": "attn.rel_bias",
    "attn.local1": "attn.local3", "attn.local2": "attn.local1", "attn.qkv.0": "attn.qkv",
    "attn.proj.0": "attn.proj.depthwise", "attn.proj.1": "attn.proj.bn", "attn.proj.2": "attn.proj.pointwise",
    "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2",
}
_DECODER_FUSE = {"weights": "weights", "pre_conv.0": "skip", "post_conv": "post"}
_DECODER_FRH = {"pa.0": "spatial.0", "ca.1.0": "channel.1", "ca.3.0": "channel.3", "shortcut": "shortcut",
                "proj.0": "proj.depthwise", "proj.1": "proj.bn", "proj.2": "proj.pointwise"}
_DECODER_TOP = {"pre_conv": "pre_conv", "segmentation_head.0": "seg_head.0", "segmentation_head.2.0": "seg_head.2"}


def _prefix_map(name: str, table: dict[str, str]) -> str | None:
    for old in sorted(table, key=len, reverse=True):
        if name == old or name.startswith(old + "."):
            return table[old] + name[len(old):]
    return None


def _decoder_rule(rest: str) -> Rule | None:
    head, _, tail = rest.partition(".")
    if head in ("b2", "b3", "b4"):
        mapped = _prefix_map(tail, _DECODER_BLOCK)
    elif head in ("p2", "p3"):
        mapped = _prefix_map(tail, _DECODER_FUSE)
    elif head == "p1":
        mapped = _prefix_map(tail, {**_DECODER_FUSE, **_DECODER_FRH})
    else:
        mapped = _prefix_map(rest, _DECODER_TOP)
        return ([f"decoder.{mapped}"], _same) if mapped else None
    return ([f"decoder.{head}.{mapped}"], _same) if mapped else None


def rule_for(key: str, adapter: str, modalities: Sequence[str]) -> Rule | None:
    """How the official tensor ``key`` is made from ours (``None``: not mapped); ``modalities``:
    our names of the official optical (``x``) and DSM (``y``) streams."""
    STREAM = _streams(modalities)
    if key.startswith("image_encoder."):
        return _encoder_rule(key[len("image_encoder."):], adapter, STREAM)
    if key.startswith("decoder."):
        return _decoder_rule(key[len("decoder."):])
    head, _, tail = key.partition(".")
    if head.startswith("fpn"):  # fpn1x / fpn2x (fpn3/4 hold nothing): 1/4 and 1/8 branches
        level, stream = {"1": "up4", "2": "up8"}[head[3]], STREAM[head[4]]
        if level == "up8":  # Sequential(ConvT) -> ours up8 is the ConvT itself
            tail = tail.split(".", 1)[1]
        elif tail.startswith("1.ln."):  # Norm2d(LayerNorm) -> ours LayerNorm2d
            tail = "1." + tail[len("1.ln."):]
        return [f"dfm.pyramids.{stream}.{level}.{tail}"], _same
    if head.startswith("fusion"):  # fusion<i>.se_rgb / se_depth .fc.0 / .fc.2
        i = int(head[len("fusion"):]) - 1
        se, _, fc = tail.partition(".")
        stream = {"se_rgb": STREAM["x"], "se_depth": STREAM["y"]}[se]
        layer = {"fc.0": "fc1", "fc.2": "fc2"}[fc.rsplit(".", 1)[0]]
        return [f"dfm.se.{stream}.{i}.{layer}.{fc.rsplit('.', 1)[1]}"], _same
    return None


# held by the official model, never used by its forward (it bypasses SAM's pixel normalisation too)
UNUSED_OFFICIAL = ("sam.prompt_encoder.", "sam.mask_decoder.", "sam.pixel_mean", "sam.pixel_std")
CONSTANT_OFFICIAL = ("relative_position_index",)  # the decoder's index buffers: fixed by the window size


def build_mapping(official: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor], adapter: str, modalities: Sequence[str]) -> dict[str, Rule]:
    """The rule of every official tensor MFNet's forward uses; CheckpointError naming the unmapped."""
    mapping, missing = {}, []
    for key in official:
        if key.startswith(UNUSED_OFFICIAL) or key.endswith(CONSTANT_OFFICIAL):
            continue
        rule = rule_for(key, adapter, modalities)
        if rule is None or any(k not in ours for k in rule[0]):
            missing.append((key, rule[0] if rule else None))
            continue
        mapping[key] = rule
    if missing:
        raise CheckpointError(f"official MFNet tensors not mapped to this model: {missing[:8]} ({len(missing)} in all)")
    return mapping


def _streams(modalities: Sequence[str]) -> dict[str, str]:
    if len(modalities) != 2:
        raise CheckpointError(f"the official MFNet has two streams (optical, DSM); this model has {len(modalities)}: {list(modalities)}")
    return {"x": modalities[0], "y": modalities[1]}


def official_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official state dict with ``sam.image_encoder.`` written ``image_encoder.`` (the rules' names)."""
    return {k.replace("sam.image_encoder.", "image_encoder.", 1): v for k, v in state.items()}


def detect_adapter(state: Mapping[str, torch.Tensor]) -> str:
    """``mm_adapter`` or ``mm_lora`` from an official state dict's keys."""
    if any("Img_Adapter" in k for k in state):
        return "mm_adapter"
    if any(".lora_" in k for k in state):
        return "mm_lora"
    raise CheckpointError("not an official MFNet state dict: neither MMAdapter (Img_Adapter) nor MMLoRA (lora_) tensors")


def to_ours(state: Mapping[str, torch.Tensor], ours: Mapping[str, torch.Tensor], modalities: Sequence[str]) -> dict[str, torch.Tensor]:
    """Our state-dict entries from an official MFNet state dict (every used official tensor mapped)."""
    from mmsam.backbones.checkpoints import resize_pos_embed, resize_rel_pos

    official = official_tensors(state)
    adapter = detect_adapter(official)
    mapping = build_mapping(official, ours, adapter, modalities)
    out: dict[str, torch.Tensor] = {}
    for key, (src, fn) in mapping.items():
        value = official[key]
        if fn is _cat:
            parts = value.split([ours[k].shape[0] for k in src], 0)
            out.update({k: p.reshape(ours[k].shape).clone() for k, p in zip(src, parts)})
            continue
        target = ours[src[0]]
        if key.endswith("pos_embed") and value.shape != target.shape:
            value = resize_pos_embed(value, tuple(target.shape[1:3]))
        elif (key.endswith("rel_h") or key.endswith("rel_w")) and value.shape != target.shape:
            value = resize_rel_pos(value, target.shape[0])
        if value.numel() != target.numel():
            raise CheckpointError(f"{key}: official {tuple(value.shape)} does not fit {src[0]} {tuple(target.shape)} (another backbone size?)")
        out[src[0]] = value.reshape(target.shape).clone()
    return out
