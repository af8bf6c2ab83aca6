"""SAM-LoRA: the baseline every paper compares against.

Frozen SAM / SAM 2 image encoder with one LoRA shared by all modalities (on the q and v slices
of every block's fused qkv, as in the SAM-LoRA rows of MemorySAM's tables,
``../shared/reference/memorysam.md`` §2/§5), every present modality through the encoder in
one batched pass, features fused by the mean over the modalities present in each sample, and
the backbone's own mask decoder adapted to K classes.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from mmsam.adapters import LoRAConfig, inject_adapters
from mmsam.backbones import create_backbone
from mmsam.errors import ConfigError
from mmsam.heads import SamDecoderHead, upsample_logits
from mmsam.methods.base import SegmentationMethod
from mmsam.methods.registry import register_method


@register_method("sam_lora")
class SamLoRA(SegmentationMethod):
    """Frozen SAM + shared LoRA + mean fusion + K-class SAM decoder.

    Args:
        num_classes: K (given by the data module).
        modalities: names of the modalities the model is trained on (given by the data module).
        backbone: a registered backbone (``mmsam.backbones.list_backbones()``), e.g. ``sam_vit_b``.
        img_size: encoder input size (a multiple of 16 for SAM, 32 for SAM 2).
        checkpoint: official checkpoint file (``sam_vit_b_01ec64.pth``, ``sam2.1_hiera_tiny.pt``…);
            ``None`` keeps random weights (tests, the demo).
        lora: where and how the shared adapter is injected: a ``LoRAConfig`` or any LoRA-family
            config (e.g. Conv-LoRA) given by ``class_path``.
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam_vit_b",
        img_size: int = 1024,
        checkpoint: str | None = None,
        lora: LoRAConfig = LoRAConfig(r=4, parts=["q", "v"]),
    ) -> None:
        super().__init__(num_classes, modalities)
        lora = copy.deepcopy(lora)  # a private copy: the default instance is shared
        self.backbone = create_backbone(backbone, img_size=img_size, checkpoint=checkpoint)
        self.backbone.requires_grad_(False)
        self.adapted_modules = inject_adapters(self.backbone.image_encoder, lora)
        decoder, prompt_encoder = self.backbone.mask_decoder, self.backbone.prompt_encoder
        del self.backbone.mask_decoder  # the head owns it now
        self.head = SamDecoderHead(
            decoder, prompt_encoder, num_classes, no_mem_embed=getattr(self.backbone, "no_mem_embed", None)
        )
        self.img_size = img_size
        self.train()  # official builders return eval-mode modules; LoRA dropout must follow the task's mode

    def forward_features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        size = tuple(next(iter(batch["modalities"].values())).shape[-2:])
        if self.backbone.family == "sam" and size != (self.img_size, self.img_size):
            raise ConfigError(
                f"images are {size[0]}x{size[1]} but the SAM encoder was built for img_size={self.img_size}; "
                "set the data's train_size/eval_size to the model's img_size"
            )
        levels, _, present = self.encode(self.backbone, batch)
        return [self.mean_fusion(f, present) for f in levels]

    def forward_head(self, features: list[torch.Tensor], size: torch.Size) -> dict[str, Any]:
        return {"logits": upsample_logits(self.head(features), tuple(size))}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        adapters = [p for n, p in self.backbone.named_parameters() if p.requires_grad]
        heads = [p for p in self.head.parameters() if p.requires_grad]
        return {"adapters": adapters, "fusion": [], "heads": heads}
