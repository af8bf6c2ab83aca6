"""Conv-LoRA's mask decoder: SAM's own decoder with N mask tokens, one shared hypernetwork, a class head.

As the official Conv-LoRA code: AutoGluon ``multimodal/src/autogluon/multimodal/models/sam.py``
(``SAMForSemanticSegmentation``, ``multi_class_mask_decoder_forward``).
No prompts are given (empty sparse prompt; the prompt encoder's learned ``no_mask_embed`` as the
dense prompt). The decoder gets ``N`` output mask tokens, all initialised as copies of SAM's first
(single-mask) token; only SAM's first hypernetwork MLP is kept and shared by all ``N`` tokens, so
each mask is ``MLP_0(token_q) · upscaled embedding``. For ``K`` classes a new ``Linear(dim, K+1)``
classifies each token output (the last class is "no object", MaskFormer-style); a binary head has
``N = 1`` and no classifier. The whole decoder trains except the IoU (and SAM 2 object-score)
heads, which reach neither the masks nor the classes.
"""
from __future__ import annotations

import torch
from torch import nn


class SharedHypernetwork(nn.Module):
    """One hypernetwork MLP answering for every token index, so the official ``predict_masks``
    loop ``output_hypernetworks_mlps[i](token_i)`` uses the same weights for all ``N`` tokens."""

    def __init__(self, mlp: nn.Module, num_tokens: int) -> None:
        super().__init__()
        self.mlp = mlp
        self.num_tokens = num_tokens

    def __getitem__(self, index: int) -> nn.Module:
        if not -self.num_tokens <= index < self.num_tokens:
            raise IndexError(f"token index {index} out of range for {self.num_tokens} tokens")
        return self.mlp

    def __len__(self) -> int:
        return self.num_tokens

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(tokens)


class MaskTokenHead(nn.Module):
    """N-query mask head around an official SAM / SAM 2 ``MaskDecoder``.

    Args:
        mask_decoder: the backbone's pretrained decoder (taken over and modified in place).
        prompt_encoder: the backbone's prompt encoder (positional encoding, ``no_mask_embed``; frozen).
        num_tokens: N, the number of output mask tokens (queries).
        num_classes: K for a class head of ``K + 1`` outputs per token, or ``None`` (binary: masks only).
        no_mem_embed: SAM 2 only: the embedding added to the stride-16 level of an image without memory.

    ``forward(features)`` takes the backbone's levels (finest first) and returns
    ``(masks (B, N, 4h, 4w), class_logits (B, N, K+1) or None)``.
    """

    def __init__(
        self,
        mask_decoder: nn.Module,
        prompt_encoder: nn.Module,
        num_tokens: int,
        num_classes: int | None = None,
        *,
        no_mem_embed: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        dec = mask_decoder
        dec.requires_grad_(True)
        dim = dec.transformer_dim
        first = dec.mask_tokens.weight.detach()[0].clone()
        dec.mask_tokens = nn.Embedding(num_tokens, dim)
        with torch.no_grad():
            dec.mask_tokens.weight.copy_(first.expand(num_tokens, -1))
        dec.num_mask_tokens = num_tokens
        dec.output_hypernetworks_mlps = SharedHypernetwork(dec.output_hypernetworks_mlps[0], num_tokens)
        for name in ("iou_prediction_head", "pred_obj_score_head"):
            if isinstance(getattr(dec, name, None), nn.Module):
                getattr(dec, name).requires_grad_(False)
        self.decoder = dec
        self.num_tokens = num_tokens
        self.num_classes = num_classes
        self.class_head = nn.Linear(dim, num_classes + 1) if num_classes is not None else None
        self.is_sam2 = hasattr(dec, "conv_s0") or hasattr(dec, "use_high_res_features")
        self.pe_layer = prompt_encoder.pe_layer
        self.no_mask_embed = nn.Parameter(prompt_encoder.no_mask_embed.weight.detach().clone(), requires_grad=False)
        if no_mem_embed is not None:
            self.no_mem_embed = nn.Parameter(no_mem_embed.detach().clone().reshape(1, -1, 1, 1), requires_grad=False)
        else:
            self.no_mem_embed = None

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = features[-1]
        b, c, h, w = emb.shape
        dec = self.decoder
        image_pe = self.pe_layer((h, w)).unsqueeze(0)
        dense = self.no_mask_embed.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        if not self.is_sam2:
            # SAM's predict_masks does not return the token outputs: its steps, with one (1, T, C)
            # token set broadcast over the B images by the two-way transformer's attention
            tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0).unsqueeze(0)
            hs, src = dec.transformer(emb + dense, image_pe, tokens)
            tokens_out = hs[:, 1 : 1 + self.num_tokens]
            up = dec.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        else:
            if self.no_mem_embed is not None:
                emb = emb + self.no_mem_embed
            high_res = None
            if getattr(dec, "use_high_res_features", False):
                high_res = [dec.conv_s0(features[0]), dec.conv_s1(features[1])]
            masks, _, tokens_out, _ = dec.predict_masks(
                image_embeddings=emb,
                image_pe=image_pe,
                sparse_prompt_embeddings=emb.new_zeros(b, 0, c),
                dense_prompt_embeddings=dense,
                repeat_image=False,
                high_res_features=high_res,
            )
        if not self.is_sam2:
            hyper = dec.output_hypernetworks_mlps(tokens_out)  # (B, N, C/8)
            masks = (hyper @ up.flatten(2)).view(b, self.num_tokens, *up.shape[-2:])
        classes = self.class_head(tokens_out) if self.class_head is not None else None
        return masks, classes
