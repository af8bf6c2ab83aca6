"""SAM's and SAM 2's own mask decoders, turned into K-class semantic heads without prompts.

Following MemorySAM's adaptation (official Chenfei-Liao/MemorySAM
``semseg/models/sam2/sam2/modeling/sam2_base.py``, K-class ``num_multimask_outputs``), which our
MLE-SAM reuses (``docs/methods/mlesam.md``): the
decoder keeps its pretrained two-way transformer and upscaling path; its mask tokens become one
token per class and each class gets its own hypernetwork MLP (freshly initialised — the
pretrained decoder has only 4). No prompt is given: the sparse prompt is empty and the dense
prompt is the prompt encoder's learned ``no_mask_embed``, exactly what SAM feeds when no mask is
given. The whole decoder trains, except the IoU and object-score heads, which do not reach
the masks and stay frozen.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class SamDecoderHead(nn.Module):
    """K-class semantic head around an official SAM / SAM 2 ``MaskDecoder``.

    Args:
        mask_decoder: the backbone's pretrained decoder (taken over and modified in place).
        prompt_encoder: the backbone's prompt encoder (its positional encoding and
            ``no_mask_embed`` are used, frozen).
        num_classes: K (at least 2).
        no_mem_embed: SAM 2 only: the learned embedding SAM 2 adds to the stride-16 features
            of an image with no memory (``directly_add_no_mem_embed``); ``None`` for SAM.

    ``forward(features)`` takes the backbone's levels, finest first (SAM: one stride-16 map;
    SAM 2: strides 4, 8, 16 fed through the decoder's ``conv_s0`` / ``conv_s1`` as in
    ``SAM2Base.forward_image``) and returns logits ``(B, K, 4·h, 4·w)``.
    """

    def __init__(
        self,
        mask_decoder: nn.Module,
        prompt_encoder: nn.Module,
        num_classes: int,
        *,
        no_mem_embed: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        dec = with_class_tokens(mask_decoder, num_classes)
        self.decoder = dec
        self.num_classes = num_classes
        self.is_sam2 = hasattr(dec, "conv_s0") or hasattr(dec, "use_high_res_features")
        self.pe_layer = prompt_encoder.pe_layer
        self.no_mask_embed = nn.Parameter(prompt_encoder.no_mask_embed.weight.detach().clone(), requires_grad=False)
        if no_mem_embed is not None:
            self.no_mem_embed = nn.Parameter(no_mem_embed.detach().clone().reshape(1, -1, 1, 1), requires_grad=False)
        else:
            self.no_mem_embed = None

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        emb = features[-1]
        b, c, h, w = emb.shape
        image_pe = self.pe_layer((h, w)).unsqueeze(0)
        dense = self.no_mask_embed.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        if not self.is_sam2:
            # A (1, 0, C) empty prompt keeps one token set for the whole batch; the two-way
            # transformer's attention broadcasts it over the B images (tested against a loop).
            sparse = emb.new_zeros(1, 0, c)
            masks, _ = self.decoder.predict_masks(emb, image_pe, sparse, dense)
            return masks
        if self.no_mem_embed is not None:
            emb = emb + self.no_mem_embed
        high_res = None
        if getattr(self.decoder, "use_high_res_features", False):
            high_res = [self.decoder.conv_s0(features[0]), self.decoder.conv_s1(features[1])]
        sparse = emb.new_zeros(b, 0, c)
        masks, *_ = self.decoder.predict_masks(
            image_embeddings=emb,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=high_res,
        )
        return masks


def with_class_tokens(decoder: nn.Module, num_tokens: int, *, reset_iou_head: bool = False) -> nn.Module:
    """Give an official SAM / SAM 2 ``MaskDecoder`` ``num_tokens`` fresh mask tokens, in place.

    Each token gets a new, freshly initialised hypernetwork MLP (the pretrained decoder has 4);
    ``num_multimask_outputs`` becomes ``num_tokens - 1``. The whole decoder trains except the
    IoU and object-score heads, which stay frozen. ``reset_iou_head``: rebuild the IoU head
    for ``num_tokens`` outputs with Kaiming-normal weights and zero biases (MemorySAM, whose SAM 2 picks the
    memory mask by this head; as the official MemorySAM ``train_sam2_lora.py``); otherwise it is kept.
    """
    dec = decoder
    dec.requires_grad_(True)  # the whole decoder trains (MemorySAM), except the heads below
    dim = dec.transformer_dim
    dec.num_multimask_outputs = num_tokens - 1
    dec.num_mask_tokens = num_tokens
    dec.mask_tokens = nn.Embedding(num_tokens, dim)
    template = dec.output_hypernetworks_mlps[0]
    mlps = nn.ModuleList(copy.deepcopy(template) for _ in range(num_tokens))
    for m in mlps.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    dec.output_hypernetworks_mlps = mlps
    if reset_iou_head:
        head = copy.deepcopy(dec.iou_prediction_head)
        last = head.layers[-1]
        head.layers[-1] = nn.Linear(last.in_features, num_tokens, bias=last.bias is not None)
        for m in head.modules():
            if isinstance(m, nn.Linear):
                # as the official train_sam2_lora.py (lines 133-137): Kaiming-normal (fan_in, ReLU) weights, zero biases
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        dec.iou_prediction_head = head
    for name in ("iou_prediction_head", "pred_obj_score_head"):
        if isinstance(getattr(dec, name, None), nn.Module):
            getattr(dec, name).requires_grad_(False)
    return dec


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of low-resolution logits to the label size."""
    if logits.shape[-2:] == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
