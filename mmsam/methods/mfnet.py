"""MFNet: frozen SAM with multimodal fine-tuning (MMAdapter / MMLoRA), the DFM and a UNetFormer decoder.

Ma, Zhang, Pun, Huang, "A Unified Framework With Multimodal Fine-Tuning for Remote Sensing Semantic
Segmentation", IEEE TGRS 2025 (arXiv 2410.11160; official code: sstary/SSRS, ``MFNet/UNetFormer_MMSAM.py``;
choices where it is vague, and the measured parity: ``docs/methods/mfnet.md``). Optical and DSM (any number of modalities) run as
streams through the same frozen SAM ViT image encoder in one batched pass, each with its own
adapters exchanging information at the MLP stage (MFNet paper Sec. III-A/III-B); the neck outputs (stride 16) feed the Deep
Fusion Module (a pyramid per modality, SE fusion at strides 4/8/16/32) and the UNetFormer decoder.
SAM's prompt encoder and mask decoder are not used and are dropped.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import nn

from mmsam.adapters import AdapterConfig, LoRAConfig, MMAdapterConfig
from mmsam.fusion import DeepFusionModule
from mmsam.heads import UNetFormerDecoder
from mmsam.methods.base import SegmentationMethod


class MFNet(SegmentationMethod):
    """Frozen SAM ViT + MMAdapter / MMLoRA streams + DFM + UNetFormer decoder.

    Args:
        num_classes, modalities: given by the data module; one adapter stream per modality
            (optical first: it gets the LayerNorm pyramid under ``dfm_norm="asymmetric"``).
        backbone: a SAM ViT backbone (``sam_vit_b`` / ``_l`` / ``_h``; ``sam_vit_tiny`` for tests).
        img_size: encoder input size (256, the paper's tile).
        checkpoint: official SAM file, or ``None`` (random weights).
        adapter: ``MMAdapterConfig`` (default) or ``MMLoRAConfig``, by ``class_path``; its
            ``streams`` are set to ``modalities``. Any other registered adapter works too: a shared
            one (plain LoRA, Conv-LoRA; one set for all streams) or MoE-LoRA (one expert per
            stream, no exchange): Table IV's baselines.
        dfm: ``False`` is the "without DFM" ablation: the decoder (no skips) reads the sum of the
            present streams' stride-16 maps.
        dfm_norm: norm of the pyramid's 1/4 branch: ``"asymmetric"`` (official code: LayerNorm for
            the first modality, BatchNorm for the others), ``"layer"`` or ``"batch"``.
        decode_channels, window_size, num_heads, dropout: the UNetFormer decoder's (64, 8, 8, 0.1).
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam_vit_b",
        img_size: int = 256,
        checkpoint: str | None = None,
        adapter: LoRAConfig | AdapterConfig | None = None,
        dfm: bool = True,
        dfm_norm: Literal["asymmetric", "layer", "batch"] = "asymmetric",
        decode_channels: int = 64,
        window_size: int = 8,
        num_heads: int = 8,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(num_classes, modalities)

        def fusion_and_decoder(bb: nn.Module) -> nn.Module:
            # unused by MFNet: Table VI's "+6.22 M" counts them, this model does not hold them (docs/methods/mfnet.md)
            del bb.prompt_encoder, bb.mask_decoder
            channels = bb.embed_dim
            self.dfm = DeepFusionModule(self.modalities, channels, norm=dfm_norm) if dfm else None
            return UNetFormerDecoder(
                num_classes, (channels,) * 4, decode_channels=decode_channels, window_size=window_size,
                num_heads=num_heads, dropout=dropout, skips=dfm,
            )

        self.build_frozen(
            backbone, img_size=img_size, checkpoint=checkpoint, adapter=adapter if adapter is not None else MMAdapterConfig(),
            family="sam", head=fusion_and_decoder, head_attr="decoder",
        )
        self.train()  # official builders return eval-mode modules

    def forward_features(self, batch: dict[str, Any]) -> dict[str, Any]:
        (levels,), names, present = self.encode(self.backbone, batch)
        if self.dfm is not None:
            return {"levels": self.dfm(levels, names, present)}
        # without DFM: F_x + F_y, the sum over the streams present in each sample
        return {"levels": [torch.einsum("mbchw,mb->bchw", levels, present.to(levels.dtype))]}

    def forward_head(self, features: dict[str, Any], size: torch.Size) -> dict[str, Any]:
        return {"logits": self.decoder(features["levels"], tuple(size))}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        adapters = [p for p in self.backbone.parameters() if p.requires_grad]
        fusion = list(self.dfm.parameters()) if self.dfm is not None else []
        return {"adapters": adapters, "fusion": fusion, "heads": list(self.decoder.parameters())}
