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

from mmsam.adapters import LoRAConfig
from mmsam.heads import upsample_logits
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
            config (e.g. Conv-LoRA) given by ``class_path``. ``None``: rank 4 on q and v.
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam_vit_b",
        img_size: int = 1024,
        checkpoint: str | None = None,
        lora: LoRAConfig | None = None,
    ) -> None:
        super().__init__(num_classes, modalities)
        # None rather than an instance default: a class_path switching to another adapter type
        # must not silently inherit this method's LoRA values
        lora = copy.deepcopy(lora) if lora is not None else LoRAConfig(r=4, parts=["q", "v"])
        self.build_frozen_sam(backbone, img_size=img_size, checkpoint=checkpoint, adapter=lora)
        self.train()  # official builders return eval-mode modules; LoRA dropout must follow the task's mode

    def forward_features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        self.check_input_size(batch)
        levels, _, present = self.encode(self.backbone, batch)
        return [self.mean_fusion(f, present) for f in levels]

    def forward_head(self, features: list[torch.Tensor], size: torch.Size) -> dict[str, Any]:
        return {"logits": upsample_logits(self.head(features), tuple(size))}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        adapters = [p for n, p in self.backbone.named_parameters() if p.requires_grad]
        heads = [p for p in self.head.parameters() if p.requires_grad]
        return {"adapters": adapters, "fusion": [], "heads": heads}
