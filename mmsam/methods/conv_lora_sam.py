"""Conv-LoRA SAM: frozen SAM + Conv-LoRA + the paper's prompt-free N-token mask decoder.

Zhong et al., "Convolution Meets LoRA: Parameter Efficient Finetuning for Segment Anything
Model", ICLR 2024 (official code: AutoGluon ``multimodal/models/sam.py``; choices where it is vague:
``docs/methods/conv_lora.md``). Conv-LoRA on the fused qkv of every encoder block (any LoRA-family
adapter by ``class_path``), every present modality through the encoder in one batched pass and
mean-fused (as SAM-LoRA), then SAM's decoder with N mask tokens copied from its first one:

* **binary** tasks (K = 2: background 0, foreground 1): one token, one mask logit ``m``; the loss
  is the paper's structure loss (or balanced BCE for shadows); ``logits = [0, m]`` so that
  ``softmax`` gives ``sigmoid(m)`` and argmax thresholds at 0.5, as the shared task and metrics need;
* **multi-class** (K > 2): N tokens, a ``K+1`` class head, the Mask2Former set loss; semantic
  scores ``Σ_q p_q(k)·sigmoid(m_q)`` (MaskFormer inference), returned as their log as ``logits``.

The paper's losses go to ``out["losses"]`` with the gates' load-balancing loss (``balance``).
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import nn

from mmsam.adapters import AdapterConfig, ConvLoRAConfig, LoRAConfig, add_balance_loss
from mmsam.errors import ConfigError
from mmsam.heads import upsample_logits
from mmsam.heads.mask_token_head import MaskTokenHead
from mmsam.losses.mask_classification import BINARY_LOSSES, MaskClassificationLoss, semantic_inference
from mmsam.methods.base import SegmentationMethod, take_decoder


class ConvLoRASAM(SegmentationMethod):
    """Conv-LoRA on a frozen SAM / SAM 2 encoder + N-token mask decoder (binary or mask classification).

    Args:
        num_classes, modalities: given by the data module (K = 2 means a binary task).
        backbone: ``sam_vit_h`` in the official preset; any registered backbone works.
        img_size: encoder input size (1024 in the paper).
        checkpoint: official SAM / SAM 2 file, or ``None`` (random weights).
        adapter: the encoder adapter: ``ConvLoRAConfig`` (rank 3, 8 experts, whole fused qkv; also
            when ``None``) or any registered adapter given by ``class_path`` (plain LoRA gives the
            paper's LoRA baseline; a modality-aware one gets one expert / stream per modality).
        head: ``"auto"`` (binary if K = 2, else mask classification), ``"binary"`` or ``"mask_classification"``.
        num_mask_tokens: N; ``None`` means 1 (binary) or 10 (mask classification, the official
            multi-class unit test).
        binary_loss: ``"structure"`` (official default) or ``"balanced_bce"`` (official for SBU shadow).
        weighted_bce: structure loss with the boundary-weighted BCE it intends, instead of the
            plain mean BCE the official code computes (see ``structure_loss``).
        class_weight, mask_weight, dice_weight: Mask2Former loss weights (official effective
            weights 1, 1, 1: AutoGluon sums HF ``Mask2FormerLoss``'s unweighted terms).
        no_object_weight: Mask2Former "no object" class weight (HF default 0.1).
        num_points: points sampled per mask by the Mask2Former loss and matcher (12544).
        ignore_index: label value excluded from the losses.
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam_vit_h",
        img_size: int = 1024,
        checkpoint: str | None = None,
        adapter: LoRAConfig | AdapterConfig | None = ConvLoRAConfig(),
        head: Literal["auto", "binary", "mask_classification"] = "auto",
        num_mask_tokens: int | None = None,
        binary_loss: Literal["structure", "balanced_bce"] = "structure",
        weighted_bce: bool = False,
        class_weight: float = 1.0,
        mask_weight: float = 1.0,
        dice_weight: float = 1.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(num_classes, modalities)
        if head not in ("auto", "binary", "mask_classification"):
            raise ConfigError(f"head must be 'auto', 'binary' or 'mask_classification', got {head!r}")
        if head == "auto":
            head = "binary" if num_classes == 2 else "mask_classification"
        if head == "binary" and num_classes != 2:
            raise ConfigError(f"head 'binary' needs num_classes=2 (background, foreground), got {num_classes}")
        if head == "binary" and num_mask_tokens not in (None, 1):
            raise ConfigError(f"a binary head has one mask token, got num_mask_tokens={num_mask_tokens}")
        if binary_loss not in BINARY_LOSSES:
            raise ConfigError(f"binary_loss must be one of {sorted(BINARY_LOSSES)}, got {binary_loss!r}")
        self.binary = head == "binary"
        n = 1 if self.binary else (num_mask_tokens or 10)

        def mask_token_head(bb: nn.Module) -> nn.Module:
            decoder, prompt_encoder, no_mem_embed = take_decoder(bb)
            return MaskTokenHead(decoder, prompt_encoder, n, None if self.binary else num_classes, no_mem_embed=no_mem_embed)

        # build_frozen copies the adapter: the default instance stays untouched
        self.build_frozen(backbone, img_size=img_size, checkpoint=checkpoint,
                          adapter=adapter if adapter is not None else ConvLoRAConfig(), head=mask_token_head)
        self.binary_loss = binary_loss
        self.weighted_bce = weighted_bce
        self.ignore_index = ignore_index
        self.mask_loss = None if self.binary else MaskClassificationLoss(
            num_classes, class_weight=class_weight, mask_weight=mask_weight, dice_weight=dice_weight,
            no_object_weight=no_object_weight, num_points=num_points, ignore_index=ignore_index,
        )
        self.train()

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        size = tuple(next(iter(batch["modalities"].values())).shape[-2:])
        out = self.forward_head(self.forward_features(batch), size)
        if self.training and "label" in batch:
            out.setdefault("losses", {}).update(self.paper_losses(out, batch["label"]))
        out.pop("masks", None)
        out.pop("class_logits", None)
        return add_balance_loss(self, out)

    def forward_features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        levels, _, present = self.encode(self.backbone, batch)
        return [self.mean_fusion(f, present) for f in levels]

    def forward_head(self, features: list[torch.Tensor], size: torch.Size) -> dict[str, Any]:
        masks, classes = self.head(features)
        if self.binary:
            m = upsample_logits(masks, tuple(size))
            return {"logits": torch.cat([torch.zeros_like(m), m], dim=1), "masks": m}
        scores = semantic_inference(masks, classes)
        logits = upsample_logits(scores.clamp(min=1e-6).log(), tuple(size))
        return {"logits": logits, "masks": masks, "class_logits": classes}

    def paper_losses(self, out: dict[str, Any], label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official training loss of ``out`` (structure / balanced BCE, or the Mask2Former terms)."""
        if self.binary:
            fn = BINARY_LOSSES[self.binary_loss]
            kwargs = {"weighted_bce": self.weighted_bce} if self.binary_loss == "structure" else {}
            return {self.binary_loss: fn(out["masks"], label, ignore_index=self.ignore_index, **kwargs)}
        return self.mask_loss(out["masks"], out["class_logits"], label)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        adapters = [p for p in self.backbone.parameters() if p.requires_grad]
        heads = [p for p in self.head.parameters() if p.requires_grad]
        return {"adapters": adapters, "fusion": [], "heads": heads}
