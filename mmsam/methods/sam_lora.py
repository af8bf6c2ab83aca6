"""SAM-LoRA: the baseline every paper compares against.

Frozen SAM / SAM 2 image encoder with one LoRA shared by all modalities (on the q and v slices
of every block's fused qkv, as in the SAM-LoRA rows of MemorySAM's Tables 1-2 and its official
``LoRA_Sam``), every present modality through the encoder in
one batched pass, features fused by the mean over the modalities present in each sample, and
the backbone's own mask decoder adapted to K classes.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from mmsam.adapters import AdapterConfig, LoRAConfig
from mmsam.heads import upsample_logits
from mmsam.methods.base import SegmentationMethod, sam_decoder_head


class SamLoRA(SegmentationMethod):
    """Frozen SAM + shared LoRA (or any adapter) + mean fusion + K-class SAM decoder.

    Args:
        num_classes: K (given by the data module).
        modalities: names of the modalities the model is trained on (given by the data module).
        backbone: a registered backbone (``mmsam.backbones.list_backbones()``), e.g. ``sam_vit_b``.
        img_size: encoder input size (a multiple of 16 for SAM, 32 for SAM 2).
        checkpoint: official checkpoint file (``sam_vit_b_01ec64.pth``, ``sam2.1_hiera_tiny.pt``…);
            ``None`` keeps random weights (tests, the demo).
        adapter: the encoder adapter: plain LoRA keys, or any registered adapter by ``class_path``
            (Conv-LoRA, MoE-LoRA, MMAdapter, MMLoRA; a modality-aware one gets one expert / stream
            per modality). ``None``: LoRA of rank 4 on q and v, shared by all modalities.
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam_vit_b",
        img_size: int = 1024,
        checkpoint: str | None = None,
        adapter: LoRAConfig | AdapterConfig | None = None,
    ) -> None:
        super().__init__(num_classes, modalities)
        # None rather than an instance default: a class_path switching to another adapter type
        # must not silently inherit this method's LoRA values
        adapter = adapter if adapter is not None else LoRAConfig(r=4, parts=["q", "v"])
        self.build_frozen(backbone, img_size=img_size, checkpoint=checkpoint, adapter=adapter, head=sam_decoder_head(num_classes))
        self.train()  # official builders return eval-mode modules; LoRA dropout must follow the task's mode

    def forward_features(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        levels, _, present = self.encode(self.backbone, batch)
        return [self.mean_fusion(f, present) for f in levels]

    def forward_head(self, features: list[torch.Tensor], size: torch.Size) -> dict[str, Any]:
        return {"logits": upsample_logits(self.head(features), tuple(size))}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        adapters = [p for n, p in self.backbone.named_parameters() if p.requires_grad]
        heads = [p for p in self.head.parameters() if p.requires_grad]
        return {"adapters": adapters, "fusion": [], "heads": heads}
